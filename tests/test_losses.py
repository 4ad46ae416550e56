"""The loss group: each option's value on examples worked out by hand, and the classifier minimizing it."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from deepsweep.factory import build, build_task_setup


def loss(compose, option: str, *overrides: str):
    return build(compose(f"loss={option}", *overrides).loss)


def test_multi_margin_is_the_hinge_loss_worked_by_hand(compose):
    hinge = loss(compose, "multi_margin")
    # Other classes' max(0, 1 - s_true + s_other), averaged over all 3 classes: (1.5 + 0) / 3.
    assert hinge(torch.tensor([[0.5, 1.0, -1.0]]), torch.tensor([0])).item() == pytest.approx(0.5)
    assert hinge(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(0.0)  # margin met
    squared = loss(compose, "multi_margin", "loss.p=2")
    assert squared(torch.tensor([[0.5, 1.0, -1.0]]), torch.tensor([0])).item() == pytest.approx(1.5 ** 2 / 3)


def test_focal_weighs_down_confident_examples(compose):
    focal = loss(compose, "focal")  # gamma 2
    # p_true = 0.5: -(1 - 0.5)^2 log 0.5
    assert focal(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(0.25 * math.log(2))
    logits, target = torch.randn(16, 5, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 5
    assert loss(compose, "focal", "loss.gamma=0")(logits, target).item() == pytest.approx(F.cross_entropy(logits, target).item())
    assert focal(logits, target) < F.cross_entropy(logits, target)


def test_mse_is_the_brier_score_and_smoothing_spreads_the_target(compose):
    # softmax (0.5, 0.5) against (1, 0): 0.25 + 0.25
    assert loss(compose, "mse")(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(0.5)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    smoothed = torch.tensor([[1 - 0.1 + 0.1 / 3, 0.1 / 3, 0.1 / 3]])
    expected = -(smoothed * F.log_softmax(logits, dim=-1)).sum()
    assert loss(compose, "label_smoothing")(logits, torch.tensor([0])).item() == pytest.approx(expected.item())
    assert loss(compose, "cross_entropy")(logits, torch.tensor([0])).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([0])).item())


def test_the_classifier_minimizes_the_chosen_loss(compose):
    from deepsweep.models.mlp import MLP
    from deepsweep.tasks.classify import ClassifyTask

    setup = build_task_setup(compose("loss=multi_margin"))
    assert isinstance(setup.loss, torch.nn.MultiMarginLoss)
    model = MLP(input_shape=(4,), num_classes=3, hidden_dims=[8])
    task = ClassifyTask(model, setup)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    expected = torch.nn.MultiMarginLoss()(model(x), y)
    assert task.training_loss((x, y)).item() == pytest.approx(expected.item())
