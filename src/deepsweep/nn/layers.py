"""Layer factories: one place decides how a family's hidden layers honour the activation and
regularizer groups, so every family gets dropout, DropConnect, Gaussian dropout and batch norm alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from deepsweep.nn.regularizers import DropConnectLinear, GaussianDropout, Regularization


@dataclass
class Layers:
    activation: Callable[[], nn.Module] = nn.ReLU
    regularization: Regularization = field(default_factory=Regularization)

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
        """linear -> [batch norm] -> activation -> [dropout]"""
        parts: list[nn.Module] = [self.linear(in_features, out_features)]
        if self.regularization.batch_norm:
            parts.append(nn.BatchNorm1d(out_features))
        parts += [self.activation(), self.dropout()]
        return nn.Sequential(*(p for p in parts if not isinstance(p, nn.Identity)))

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
        """conv -> [batch norm] -> activation. Dropout acts on the dense layers, where it is most used."""
        parts: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        ]
        if self.regularization.batch_norm:
            parts.append(nn.BatchNorm2d(out_channels))
        parts.append(self.activation())
        return nn.Sequential(*parts)

    def norm2d(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels) if self.regularization.batch_norm else nn.Identity()
