"""Supervised classification: the loss group's loss (cross-entropy by default) on a family's logits, plus the
regularizer's penalty."""

from __future__ import annotations

import torch

from deepsweep.models.base import Family
from deepsweep.tasks.batches import outputs_and_targets
from deepsweep.tasks.common import LossTask, TaskSetup


class ClassifyTask(LossTask):
    def __init__(
        self,
        model: Family,
        setup: TaskSetup,
        *,
        freeze_encoder_epochs: int = 0,
    ) -> None:
        super().__init__(setup)
        self.model = model
        self.freeze_encoder_epochs = freeze_encoder_epochs
        # Validation keeps each batch's predicted classes and scores the epoch once at its end: two
        # torchmetrics updates per batch cost more than a small model's validation forward pass.
        self._val_predictions: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        # Linear probing first, then full fine-tuning: the head learns on frozen pretrained features
        # before their gradients are allowed to disturb them.
        self.model.encoder.requires_grad_(self.current_epoch >= self.freeze_encoder_epochs)

    def logits_and_targets(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs_and_targets(self.model, batch)

    def training_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits, y = self.logits_and_targets(batch)
        loss = self.regularization.penalized(self.criterion(logits, y), self.model)
        self.track("train/loss", loss, len(y))
        return loss

    def validation_batch(self, batch: tuple[torch.Tensor, ...]) -> None:
        logits, y = self.logits_and_targets(batch)
        self.track("val/loss", self.criterion(logits, y), len(y))
        self._val_predictions.append((logits.argmax(dim=-1), y))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self._val_predictions:
            return
        predicted, target = (torch.cat(t) for t in zip(*self._val_predictions))
        self._val_predictions = []
        if self.trainer.world_size > 1:  # every rank scores all ranks' shards (equal sizes: see InMemoryLoader)
            predicted, target = self.all_gather(predicted).flatten(0, 1), self.all_gather(target).flatten(0, 1)
        self.log_epoch(self.epoch_scores(predicted, target))

    def epoch_scores(self, predicted: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The validation epoch's scores of its predicted classes (``val/acc``, ``val/f1``)."""
        from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

        k = self.model.num_classes
        # validate_args=False: the checks cost host syncs on a GPU, and the classes come from argmax.
        return {"val/acc": multiclass_accuracy(predicted, target, k, average="micro", validate_args=False),
                "val/f1": multiclass_f1_score(predicted, target, k, average="macro", validate_args=False)}

    def optimized_parameters(self):
        return self.model.parameters()


class NodeClassifyTask(ClassifyTask):
    """Node classification: the model sees the whole graph, the loss and metrics only the split's nodes
    (``outputs_and_targets`` reads the graph batch's mask)."""

    kind = "graph"
