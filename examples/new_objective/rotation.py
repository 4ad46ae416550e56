"""Rotation prediction (Gidaris et al. 2018, "Unsupervised representation learning by predicting image
rotations"): the encoder learns what is upright by telling which of 0, 90, 180 or 270 degrees an image was
turned. A whole new pretraining objective for deepsweep is this one class and rotation.yaml beside it.

    cp examples/new_objective/rotation.yaml conf/pretrain/
    PYTHONPATH=examples/new_objective deepsweep run pretrain=rotation

(or move this file into src/deepsweep/tasks/ and name it ``deepsweep.tasks.rotation.RotationTask`` in the YAML).
No stage, factory or training code changes: the pretrain stage builds whatever ``pretrain.task._target_``
names with the model and the shared set-up, and ``deepsweep.training.fit`` trains it like any other task.
tests/test_architecture.py runs exactly that."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.tasks.common import LossTask, TaskSetup


class RotationTask(LossTask):
    kind = "tensor"  # images; check_compatible refuses graph and sequence data before any work

    def __init__(self, model: Family, setup: TaskSetup, *, rotations: int = 4) -> None:
        super().__init__(setup)
        shape = tuple(model.input_shape)
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"pretrain.task: rotation prediction needs square images (C, H, W), got inputs {shape}")
        if not 2 <= rotations <= 4:
            raise ValueError(f"pretrain.task.rotations: must be 2, 3 or 4 quarter turns, got {rotations}")
        self.encoder = model.encoder  # what the finetune stage loads
        self.head = nn.Linear(model.feature_dim, rotations)
        self.rotations = rotations

    def rotation_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        turns = torch.randint(0, self.rotations, (len(x),), device=x.device)
        turned = x.clone()
        for k in range(1, self.rotations):
            turned[turns == k] = torch.rot90(x[turns == k], k, dims=(-2, -1))
        logits = self.head(self.encoder(turned))
        return F.cross_entropy(logits, turns), (logits.argmax(-1) == turns).float().mean()

    def training_loss(self, batch) -> torch.Tensor:
        x = batch[0]
        loss, _ = self.rotation_loss(x)
        loss = self.regularization.penalized(loss, self.encoder)
        self.track("train/loss", loss, len(x))
        return loss

    def validation_batch(self, batch) -> None:
        x = batch[0]
        loss, accuracy = self.rotation_loss(x)
        self.track("val/loss", loss, len(x))
        self.track("val/rotation_acc", accuracy, len(x))
