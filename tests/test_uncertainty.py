"""Uncertainty: calibration, predictive entropy and rejection on hand-made probabilities; Monte Carlo dropout
at evaluation; deep ensembles of a sweep's seeds (the sweep itself: tests/test_sweep.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepsweep.calibration import expected_calibration_error, predictive_entropy, probability_metrics, rejection_curve
from deepsweep.config import ConfigError, validate

PROBS = torch.tensor([[0.9, 0.1], [0.65, 0.35], [0.3, 0.7], [0.25, 0.75]])  # no confidence on a bin edge
TARGET = torch.tensor([0, 1, 1, 0])  # predicted 0, 0, 1, 1: right, wrong, right, wrong


def test_expected_calibration_error_by_hand():
    # One bin (0.5, 1]: accuracy 1/2, mean confidence (0.9 + 0.65 + 0.7 + 0.75) / 4 = 0.75.
    assert expected_calibration_error(PROBS, TARGET, bins=2) == pytest.approx(0.25)
    # Five bins: (0.6, 0.8] holds 0.65 (wrong), 0.7 (right), 0.75 (wrong): |1/3 - 0.7|, weight 3/4;
    # (0.8, 1] holds 0.9 (right): |1 - 0.9|, weight 1/4.
    assert expected_calibration_error(PROBS, TARGET, bins=5) == pytest.approx(3 / 4 * (0.7 - 1 / 3) + 0.1 / 4)
    sure = torch.eye(3)
    assert expected_calibration_error(sure, torch.arange(3)) == 0.0


def test_probability_metrics_and_entropy_by_hand():
    metrics = probability_metrics(PROBS, TARGET, bins=2)
    assert metrics["accuracy"] == 0.5
    assert metrics["loss"] == pytest.approx(-(math.log(0.9) + math.log(0.35) + math.log(0.7) + math.log(0.25)) / 4)
    assert predictive_entropy(torch.tensor([[0.5, 0.5], [1.0, 0.0]])).tolist() == pytest.approx([math.log(2), 0.0])


def test_rejection_curve_drops_the_most_uncertain_first():
    # Entropy order, most certain first: 0.9 (right), 0.75 (wrong), 0.7 (right), 0.65 (wrong).
    curve = rejection_curve(PROBS, TARGET, steps=4)
    assert curve == [(0.0, 0.5), (0.25, pytest.approx(2 / 3)), (0.5, 0.5), (0.75, 1.0)]


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.drop(self.norm(x)))


def test_mc_dropout_samples_dropout_not_batch_norm_and_leaves_the_global_stream_alone():
    from deepsweep.stages.evaluate import mc_dropout_probabilities

    torch.manual_seed(0)
    net = _Net()
    net.norm.running_mean.fill_(0.5)
    x, y = torch.randn(64, 4), torch.randint(3, (64,))
    loader = [(x[:32], y[:32]), (x[32:], y[32:])]
    state = torch.random.get_rng_state()
    mc = mc_dropout_probabilities(net, loader, passes=8, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(net.norm.running_mean, torch.full((4,), 0.5))  # batch norm stayed in evaluation mode
    assert not net.training  # handed back in evaluation mode
    # The mean of 8 passes with dropout on, each from the seeded stream, as done by hand.
    torch.manual_seed(1)
    net.train()
    net.norm.eval()
    with torch.inference_mode():
        by_hand = sum(torch.cat([net(xb).softmax(1) for xb, _ in loader]) for _ in range(8)) / 8
    assert torch.allclose(mc, by_hand)
    with torch.inference_mode():
        deterministic = net.eval()(x).softmax(1)
    assert not torch.allclose(mc, deterministic)
    assert torch.allclose(mc_dropout_probabilities(net, loader, passes=8, seed=1), mc)


def test_mc_dropout_needs_dropout_before_any_work(compose):
    with pytest.raises(ConfigError, match=r"evaluate\.mc_dropout_passes: .*needs dropout"):
        validate(compose("evaluate.mc_dropout_passes=10"))
    validate(compose("evaluate.mc_dropout_passes=10", "regularizer=dropout"))
    with pytest.raises(ConfigError, match=r"evaluate\.calibration_bins"):
        validate(compose("evaluate.calibration_bins=0"))


def test_deep_ensemble_averages_the_members_probabilities(monkeypatch):
    from deepsweep.tracking import report

    members = {"a": torch.tensor([[0.9, 0.1], [0.6, 0.4]]), "b": torch.tensor([[0.3, 0.7], [0.2, 0.8]]),
               "c": torch.tensor([[0.6, 0.4], [0.9, 0.1]])}
    target = torch.tensor([0, 1])
    monkeypatch.setattr(report, "_predictions", lambda run: {"probs": members[run], "target": target})

    def row(run, seed, lr):
        return {"status": "FINISHED", "params": {"seed": str(seed), "optimizer.lr": lr}, "metrics": {},
                "stage_runs": {"evaluate": run}, "run_name": run, "error": ""}

    rows = [row("a", 0, "0.1"), row("b", 1, "0.1"), row("c", 0, "0.5")]  # "c" has no second seed
    table, found = report.deep_ensembles(rows)
    assert len(found) == 1 and found[0]["config"] == {"optimizer.lr": "0.1"} and found[0]["members"] == 2
    mean = torch.tensor([[0.6, 0.4], [0.4, 0.6]])  # right on both inputs, where each member is right on one
    assert found[0]["ensemble"] == pytest.approx(probability_metrics(mean, target))
    assert found[0]["ensemble"]["accuracy"] == 1.0 and found[0]["member_mean"]["accuracy"] == 0.5
    assert "| 0.1 | 2 | 0.5000 | 1.0000 |" in table
