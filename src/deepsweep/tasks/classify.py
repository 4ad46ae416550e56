"""Supervised classification: cross-entropy on a family's logits, plus the regularizer's penalty."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from deepsweep.models.base import Family
from deepsweep.nn.regularizers import Regularization
from deepsweep.tasks.common import EpochLoggingMixin, OptimizerFactory, SchedulerFactory, configure_optimizers


class ClassifyTask(EpochLoggingMixin, L.LightningModule):
    def __init__(
        self,
        model: Family,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        regularization: Regularization | None = None,
        freeze_encoder_epochs: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.regularization = regularization or Regularization()
        self.freeze_encoder_epochs = freeze_encoder_epochs
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(model.num_classes, average="micro"),
                "f1": MulticlassF1Score(model.num_classes, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        # Linear probing first, then full fine-tuning: the head learns on frozen pretrained features
        # before their gradients are allowed to disturb them.
        self.model.encoder.requires_grad_(self.current_epoch >= self.freeze_encoder_epochs)

    def logits_and_targets(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return self.model(x), y

    def features_and_targets(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's features (what a linear probe reads) and the labels of a batch."""
        x, y = batch
        return self.model.encoder(x), y

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        logits, y = self.logits_and_targets(batch)
        loss = F.cross_entropy(logits, y) + self.regularization.penalty(self.model)
        self.track("train/loss", loss, len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        logits, y = self.logits_and_targets(batch)
        self.track("val/loss", F.cross_entropy(logits, y), len(y))
        self.val_metrics.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log_dict(self.val_metrics.compute(), sync_dist=self.trainer.world_size > 1)
        self.val_metrics.reset()

    def configure_optimizers(self):
        return configure_optimizers(self.model.parameters(), self.optimizer_factory, self.scheduler_factory)


class NodeClassifyTask(ClassifyTask):
    """Node classification: the model sees the whole graph, the loss and metrics only the split's nodes."""

    def logits_and_targets(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, edge_index, y, mask = batch
        return self.model(x, edge_index)[mask], y[mask]

    def features_and_targets(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, edge_index, y, mask = batch
        return self.model.encoder(x, edge_index)[mask], y[mask]


def task_for(kind: str) -> type[ClassifyTask]:
    """The supervised task for a kind of prepared data."""
    return NodeClassifyTask if kind == "graph" else ClassifyTask
