"""Each regularizer option changes the model or the loss the way it says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepsweep.factory import build
from deepsweep.factory import build_model
from deepsweep.nn.regularizers import DropConnectLinear, GaussianDropout, Regularization
from deepsweep.tasks.common import TaskSetup


def test_dropconnect_zeroes_weights_not_units_and_only_in_training(monkeypatch):
    torch.manual_seed(0)
    layer = DropConnectLinear(50, 40, p=0.5)
    x = torch.ones(1, 50)
    layer.train()
    calls = []
    original = torch.nn.functional.linear
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "linear",
                      lambda inp, w, b=None: (calls.append(w.detach().clone()), original(inp, w, b))[1])
        out = layer(x)
    used = calls[0]
    dropped = used == 0
    assert 0.4 < dropped.float().mean() < 0.6  # about p of the individual weights
    kept = ~dropped
    assert torch.allclose(used[kept], layer.weight.detach()[kept] * 2)  # scaled by 1/(1-p)
    assert torch.all(out != 0)  # no unit is silenced as a whole
    layer.eval()
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


def test_gaussian_dropout_keeps_mean_and_has_dropout_variance():
    torch.manual_seed(0)
    drop = GaussianDropout(0.5)
    x = torch.ones(200_000)
    y = drop.train()(x)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert y.var().item() == pytest.approx(0.5 / 0.5, rel=0.02)
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize(
    "option,layer_type",
    [("dropout", nn.Dropout), ("dropconnect", DropConnectLinear), ("gaussian_dropout", GaussianDropout),
     ("batchnorm", nn.BatchNorm1d)],
)
def test_options_put_their_layers_in_every_family(compose, option, layer_type):
    for model in ("mlp", "lenet", "resnet"):
        cfg = compose(f"regularizer={option}", f"model={model}")
        net = build_model(cfg, (1, 8, 8), 10)
        types = {type(m) for m in net.modules()}
        if option == "batchnorm" and model == "resnet":
            layer_type = nn.BatchNorm2d
        assert layer_type in types, f"{option} missing from {model}"
        plain = build_model(compose(f"model={model}"), (1, 8, 8), 10)
        assert layer_type not in {type(m) for m in plain.modules()}


def test_l1_and_l2_penalties_enter_the_loss(compose):
    from deepsweep.tasks.classify import ClassifyTask

    model = build_model(compose(), (1, 8, 8), 10)
    weights = [p for p in model.parameters() if p.ndim >= 2]
    l1 = sum(p.abs().sum() for p in weights)
    l2 = sum(p.pow(2).sum() for p in weights)
    assert Regularization(l1=0.1).penalty(model).item() == pytest.approx(0.1 * l1.item(), rel=1e-5)
    assert Regularization(l2=0.1).penalty(model).item() == pytest.approx(0.1 * l2.item(), rel=1e-5)
    batch = (torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    base = ClassifyTask(model, TaskSetup(None)).training_step(batch, 0)
    with_l1 = ClassifyTask(model, TaskSetup(None, regularization=build(compose("regularizer=l1").regularizer)))
    assert with_l1.training_step(batch, 0).item() == pytest.approx(base.item() + 1e-5 * l1.item(), rel=1e-5)


def test_bad_regularizer_values_are_named():
    with pytest.raises(ValueError, match="regularizer.dropout_kind: unknown kind 'spatial'; allowed: standard, dropconnect, gaussian"):
        Regularization(dropout_kind="spatial")
    with pytest.raises(ValueError, match=r"regularizer.dropout: must be in \[0, 1\)"):
        Regularization(dropout=1.5)
