"""Weight initialization schemes, applied to every linear, convolutional and recurrent weight of a model.

Biases are set to ``bias`` (0 by default) and normalization layers keep their identity start (scale 1,
shift 0) whatever the scheme, so a scheme changes exactly what its name says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SCHEMES = (
    "default",
    "zeros",
    "normal",
    "uniform",
    "lecun_normal",
    "lecun_uniform",
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "orthogonal",
)



@dataclass
class WeightInit:
    """Initialize a model's weights in place: ``WeightInit("he_normal")(model)``."""

    scheme: str = "default"
    std: float | None = None  # normal
    bound: float | None = None  # uniform
    gain: float = 1.0  # orthogonal
    bias: float = 0.0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"init.scheme: unknown scheme {self.scheme!r}; allowed: {', '.join(SCHEMES)}")
        if self.scheme == "normal" and self.std is None:
            raise ValueError("init.std: the normal scheme needs std (e.g. init.std=0.01)")
        if self.scheme == "uniform" and self.bound is None:
            raise ValueError("init.bound: the uniform scheme needs bound (e.g. init.bound=0.05)")

    def __call__(self, model: nn.Module) -> nn.Module:
        """Every weight matrix or kernel (a parameter named ``weight*`` with 2+ dims) of every module:
        torch's Linear/Conv/RNN layers and torch-geometric's convs alike. Norm layers (1-D weights) keep
        their identity start."""
        if self.scheme == "default":
            return model
        with torch.no_grad():
            for module in model.modules():
                own = dict(module.named_parameters(recurse=False))
                weights = {n: p for n, p in own.items() if n.startswith("weight") and p.ndim >= 2}
                for name, param in weights.items():
                    if isinstance(module, nn.RNNBase):
                        # Each gate's block gets its own init: fan-in/out are those of one gate.
                        for block in param.chunk(param.shape[0] // module.hidden_size, dim=0):
                            self.init_weight(block)
                    else:
                        self.init_weight(param)
                if weights:
                    for name, param in own.items():
                        if name.startswith("bias"):
                            param.fill_(self.bias)
        return model

    def init_weight(self, weight: torch.Tensor) -> None:
        s = self.scheme
        if s == "zeros":
            nn.init.zeros_(weight)
        elif s == "normal":
            nn.init.normal_(weight, 0.0, self.std)
        elif s == "uniform":
            nn.init.uniform_(weight, -self.bound, self.bound)
        elif s == "lecun_normal":
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="linear")
        elif s == "lecun_uniform":
            nn.init.kaiming_uniform_(weight, mode="fan_in", nonlinearity="linear")
        elif s == "xavier_normal":
            nn.init.xavier_normal_(weight)
        elif s == "xavier_uniform":
            nn.init.xavier_uniform_(weight)
        elif s == "he_normal":
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
        elif s == "he_uniform":
            nn.init.kaiming_uniform_(weight, mode="fan_in", nonlinearity="relu")
        elif s == "orthogonal":
            nn.init.orthogonal_(weight, gain=self.gain)


def fan_in(weight: torch.Tensor) -> int:
    """Inputs feeding one output unit: in_features, or in_channels * kernel area."""
    return weight.shape[1] * math.prod(weight.shape[2:])
