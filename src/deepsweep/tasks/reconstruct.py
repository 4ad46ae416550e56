"""Reconstruction: (denoising) autoencoder pretraining of any family's encoder. Labels are never read."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.nn.regularizers import Regularization
from deepsweep.tasks.common import EpochLoggingMixin, OptimizerFactory, SchedulerFactory, configure_optimizers

NOISES = ("none", "masking", "gaussian")


def corrupt(x: torch.Tensor, noise: str, level: float) -> torch.Tensor:
    """Masking noise zeroes each input with probability ``level``; Gaussian noise adds N(0, level^2)."""
    if noise == "none" or level == 0:
        return x
    if noise == "masking":
        return x * (torch.rand_like(x) >= level)
    if noise == "gaussian":
        return x + level * torch.randn_like(x)
    raise ValueError(f"pretrain.task.noise: unknown noise {noise!r}; allowed: {', '.join(NOISES)}")


class ReconstructTask(EpochLoggingMixin, L.LightningModule):
    """encoder (from the family) -> decoder (an MLP: feature_dim -> decoder_dims -> input size) ->
    mean squared error against the clean input."""

    kind = "tensor"

    def __init__(
        self,
        model: Family,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        regularization: Regularization | None = None,
        activation: Callable[[], nn.Module] = nn.ReLU,
        decoder_dims: Sequence[int] = (128,),
        noise: str = "none",
        noise_level: float = 0.0,
    ) -> None:
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"pretrain.task.noise: unknown noise {noise!r}; allowed: {', '.join(NOISES)}")
        self.encoder = model.encoder
        self.input_shape = model.input_shape
        widths = [model.feature_dim, *decoder_dims]
        parts: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            parts += [nn.Linear(a, b), activation()]
        parts.append(nn.Linear(widths[-1], math.prod(self.input_shape)))
        self.decoder = nn.Sequential(*parts)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.regularization = regularization or Regularization()
        self.noise, self.noise_level = noise, noise_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).view(-1, *self.input_shape)

    def _loss(self, x: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self(noisy), x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, _ = batch
        loss = self._loss(x, corrupt(x, self.noise, self.noise_level)) + self.regularization.penalty(self.encoder)
        self.track("train/loss", loss, len(x))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, _ = batch
        self.track("val/loss", self._loss(x, x), len(x))

    def configure_optimizers(self):
        return configure_optimizers(self.parameters(), self.optimizer_factory, self.scheduler_factory)
