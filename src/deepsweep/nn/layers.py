"""Layer factories: one place decides how a family's hidden layers honour the activation and
regularizer groups, so every family gets dropout, DropConnect, Gaussian dropout and batch norm alike."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from deepsweep.constraints import MAXOUT_FAMILIES
from deepsweep.nn.regularizers import DropConnectLinear, GaussianDropout, Regularization


class Maxout(nn.Module):
    """Maxout (Goodfellow et al. 2013): each unit is the largest of ``pieces`` linear pieces. The layer before
    it gives pieces x units outputs (``Layers.dense`` and ``Layers.conv`` widen it), unit j's pieces being
    outputs j*pieces ... (j+1)*pieces - 1 along dim 1 (features, or channels of a feature map)."""

    def __init__(self, pieces: int = 2) -> None:
        super().__init__()
        if pieces < 2:
            raise ValueError(f"activation.pieces: maxout needs at least 2 pieces, got {pieces}")
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (x.shape[1] // self.pieces, self.pieces)).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


@dataclass
class Layers:
    activation: Callable[[], nn.Module] = nn.ReLU
    regularization: Regularization = field(default_factory=Regularization)

    @functools.cached_property
    def pieces(self) -> int:
        """How many outputs the activation reads per unit: 1, or maxout's pieces (the layer widens by it)."""
        return int(getattr(self.activation(), "pieces", 1))

    def elementwise_activation(self) -> nn.Module:
        """The activation, for a family that applies it where no layer of this factory widens for it."""
        if self.pieces > 1:
            raise ValueError("activation=maxout: this family applies its activation to layers it builds itself; "
                             f"maxout works with {', '.join(MAXOUT_FAMILIES)}")
        return self.activation()

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        reg = self.regularization
        if reg.dropout_kind == "dropconnect" and reg.dropout > 0:
            return DropConnectLinear(in_features, out_features, p=reg.dropout)
        return nn.Linear(in_features, out_features)

    def dropout(self) -> nn.Module:
        reg = self.regularization
        if reg.dropout == 0 or reg.dropout_kind == "dropconnect":
            return nn.Identity()
        if reg.dropout_kind == "gaussian":
            return GaussianDropout(reg.dropout)
        return nn.Dropout(reg.dropout)

    def dense(self, in_features: int, out_features: int) -> nn.Sequential:
        """linear -> [batch norm] -> activation -> [dropout]; the linear layer gives pieces x out_features
        outputs under maxout."""
        width = out_features * self.pieces
        parts: list[nn.Module] = [self.linear(in_features, width)]
        if self.regularization.batch_norm:
            parts.append(nn.BatchNorm1d(width))
        parts += [self.activation(), self.dropout()]
        return nn.Sequential(*(p for p in parts if not isinstance(p, nn.Identity)))

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
        """conv -> [batch norm] -> activation. Dropout acts on the dense layers, where it is most used."""
        width = out_channels * self.pieces  # maxout: the max over pieces is taken channel by channel
        parts: list[nn.Module] = [nn.Conv2d(in_channels, width, kernel_size, stride=stride, padding=kernel_size // 2)]
        if self.regularization.batch_norm:
            parts.append(nn.BatchNorm2d(width))
        parts.append(self.activation())
        return nn.Sequential(*parts)

    def norm2d(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels) if self.regularization.batch_norm else nn.Identity()
