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


class DiceLoss(nn.Module):
    """Soft Dice loss (Milletari et al. 2016, V-Net), one minus the mean over classes of
    ``(2 sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)``, with ``p`` the softmax and ``g`` the one-hot target,
    summed over the whole batch (every pixel of it, for segmentation): a loss that weighs a small class as much
    as the background, where per-pixel cross-entropy is dominated by the background."""

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=1)
        truth = torch.nn.functional.one_hot(target, logits.shape[1]).to(probs.dtype)
        overlap = (probs * truth).sum(0)
        dice = (2 * overlap + self.smooth) / (probs.sum(0) + truth.sum(0) + self.smooth)
        return 1 - dice.mean()
