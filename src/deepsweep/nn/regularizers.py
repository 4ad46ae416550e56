"""Regularizers: the settings object, the noise layers, and the weight penalties added to the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

DROPOUT_KINDS = ("standard", "dropconnect", "gaussian")


@dataclass
class Regularization:
    """What the ``regularizer`` group configures; families and tasks read it."""

    dropout: float = 0.0
    dropout_kind: str = "standard"
    l1: float = 0.0
    l2: float = 0.0
    batch_norm: bool = False
    early_stopping_patience: int | None = None

    def __post_init__(self) -> None:
        if self.dropout_kind not in DROPOUT_KINDS:
            raise ValueError(
                f"regularizer.dropout_kind: unknown kind {self.dropout_kind!r}; allowed: {', '.join(DROPOUT_KINDS)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"regularizer.dropout: must be in [0, 1), got {self.dropout}")
        if self.l1 < 0 or self.l2 < 0:
            raise ValueError(f"regularizer.l1/l2: must be >= 0, got l1={self.l1}, l2={self.l2}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(
                f"regularizer.early_stopping_patience: must be >= 1 or null, got {self.early_stopping_patience}"
            )

    def penalized(self, loss: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """``loss`` plus the penalty of ``model``'s weights; ``loss`` itself without l1 and l2 (adding a
        zero would still cost a kernel launch per step on a GPU)."""
        return loss if self.l1 == 0 and self.l2 == 0 else loss + self.penalty(model)

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        """l1 * sum|w| + l2 * sum w^2 over weight matrices and kernels (biases and norm scales excluded)."""
        if self.l1 == 0 and self.l2 == 0:
            return 0.0
        total = 0.0
        for name, param in model.named_parameters():
            if param.ndim < 2 or not param.requires_grad:
                continue
            if self.l1:
                total = total + self.l1 * param.abs().sum()
            if self.l2:
                total = total + self.l2 * param.pow(2).sum()
        return total


class GaussianDropout(nn.Module):
    """Multiply activations by noise ~ N(1, p/(1-p)) in training; identity in eval.

    The variance p/(1-p) equals that of inverted Bernoulli dropout with drop probability p
    (Srivastava et al. 2014, section 10), so ``dropout`` means the same strength for both kinds.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.std = (p / (1.0 - p)) ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (1.0 + self.std * torch.randn_like(x))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropConnectLinear(nn.Linear):
    """A linear layer whose individual weights are dropped with probability p in training
    (Wan et al. 2013), with the kept ones scaled by 1/(1-p) so the expected output is unchanged.
    Units are never dropped; in eval the full weight matrix is used."""

    def __init__(self, in_features: int, out_features: int, p: float, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return F.linear(x, self.weight, self.bias)
        weight = F.dropout(self.weight, self.p, training=True)
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
