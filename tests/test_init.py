"""Each init option does what its name says, on every weighted layer of a model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepsweep.factory import build
from deepsweep.factory import build_model
from deepsweep.nn.init import WeightInit

FAN_IN, FAN_OUT = 400, 300


def _weights(scheme: str, **kw) -> torch.Tensor:
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    WeightInit(scheme, **kw)(layer)
    assert torch.all(layer.bias == 0)
    return layer.weight.detach()


@pytest.mark.parametrize(
    "scheme,expected_var",
    [
        ("lecun_normal", 1 / FAN_IN),
        ("lecun_uniform", 1 / FAN_IN),
        ("xavier_normal", 2 / (FAN_IN + FAN_OUT)),
        ("xavier_uniform", 2 / (FAN_IN + FAN_OUT)),
        ("he_normal", 2 / FAN_IN),
        ("he_uniform", 2 / FAN_IN),
    ],
)
def test_variance_matches_the_scheme(scheme, expected_var):
    w = _weights(scheme)
    assert w.var().item() == pytest.approx(expected_var, rel=0.05)
    if scheme.endswith("uniform"):
        bound = math.sqrt(3 * expected_var)
        assert w.abs().max().item() <= bound + 1e-6
        assert w.abs().max().item() > 0.95 * bound


def test_normal_and_uniform_use_their_parameters():
    assert _weights("normal", std=0.02).std().item() == pytest.approx(0.02, rel=0.05)
    w = _weights("uniform", bound=0.1)
    assert w.abs().max().item() <= 0.1 and w.abs().max().item() > 0.099


def test_orthogonal_rows_are_orthonormal():
    w = _weights("orthogonal")  # 300 x 400: rows orthonormal
    assert torch.allclose(w @ w.T, torch.eye(FAN_OUT), atol=1e-4)


def test_he_normal_on_conv_uses_kernel_fan_in():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 64, 5)
    WeightInit("he_normal")(conv)
    assert conv.weight.var().item() == pytest.approx(2 / (32 * 25), rel=0.05)


def test_zeros_makes_units_symmetric(compose):
    cfg = compose("init=zeros", "model.hidden_dims=[16,8]")
    model = build_model(cfg, (1, 8, 8), 10)
    assert all(torch.all(p == 0) for p in model.parameters())
    out = model.encoder[:2](torch.rand(5, 1, 8, 8))
    # Every hidden unit computes the same function: the symmetry gradient descent can never break.
    assert torch.all(out == out[:, :1])


def test_recurrent_weights_get_orthogonal_per_gate():
    torch.manual_seed(0)
    lstm = nn.LSTM(8, 16)
    WeightInit("orthogonal")(lstm)
    for gate in lstm.weight_hh_l0.detach().chunk(4):
        assert torch.allclose(gate @ gate.T, torch.eye(16), atol=1e-4)


def test_config_builds_every_scheme(compose):
    from deepsweep.config import options

    for option in options("init"):
        init = build(compose(f"init={option}").init)
        assert isinstance(init, WeightInit) and init.scheme == option


def test_default_scheme_keeps_pytorch_init():
    torch.manual_seed(0)
    a = nn.Linear(10, 10)
    torch.manual_seed(0)
    b = WeightInit("default")(nn.Linear(10, 10))
    assert torch.equal(a.weight, b.weight)
    with pytest.raises(ValueError, match="init.scheme: unknown scheme 'glorot'; allowed: default, zeros"):
        WeightInit("glorot")
