"""Classification losses the ``loss`` group offers beside torch's own (``CrossEntropyLoss`` with or without
label smoothing, ``MultiMarginLoss``): each maps ``(logits, class indices)`` to a mean over the batch."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_true) ** gamma``, so examples already
    classified with confidence weigh less. ``gamma = 0`` is cross-entropy."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return (-(1 - log_p.exp()) ** self.gamma * log_p).mean()


class OneHotMSELoss(nn.Module):
    """Squared error between the softmax and the one-hot target (the "Brier score" of a classifier), summed
    over classes and averaged over the batch: the regression-style loss courses compare cross-entropy with."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
        return ((logits.softmax(dim=-1) - one_hot) ** 2).sum(dim=-1).mean()
