"""Supervised classification: cross-entropy on a family's logits, plus the regularizer's penalty.

With ``steps_per_call`` > 1 each training (and validation) call receives a list of batches and makes one
optimizer step per batch through Lightning's manual-optimization API (``manual_backward``, the wrapped
optimizer's ``step``, ``clip_gradients``): the same updates in the same order as one batch per call,
with Lightning's per-call hooks paid once per list."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F

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
        steps_per_call: int = 1,
        gradient_clip_val: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.steps_per_call = steps_per_call
        self.gradient_clip_val = gradient_clip_val
        self.automatic_optimization = steps_per_call == 1
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.regularization = regularization or Regularization()
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
        x, y = batch
        return self.model(x), y

    def features_and_targets(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's features (what a linear probe reads) and the labels of a batch."""
        x, y = batch
        return self.model.encoder(x), y

    def _train_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits, y = self.logits_and_targets(batch)
        loss = F.cross_entropy(logits, y) + self.regularization.penalty(self.model)
        self.track("train/loss", loss, len(y))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:  # one batch; Lightning steps the optimizer
            return self._train_loss(batch)
        optimizer = self.optimizers()
        for one in batch:
            loss = self._train_loss(one)
            optimizer.zero_grad(set_to_none=True)
            if self._plain_backward:
                loss.backward()
            else:
                self.manual_backward(loss)
            if self.gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
            optimizer.step()
        return None

    def validation_step(self, batch, batch_idx: int) -> None:
        for one in batch if isinstance(batch, list) else [batch]:
            logits, y = self.logits_and_targets(one)
            self.track("val/loss", F.cross_entropy(logits, y), len(y))
            self._val_predictions.append((logits.argmax(dim=-1), y))

    def on_fit_start(self) -> None:
        from lightning.pytorch.plugins.precision import Precision
        from lightning.pytorch.strategies import SingleDeviceStrategy

        # 32-bit on one device: Lightning's manual_backward is loss.backward() plus two hook dispatches
        # (on_before/after_backward) no deepsweep callback uses, 0.15 ms a step. Other precisions need
        # its loss scaling, other strategies its gradient sync: there it is kept.
        self._plain_backward = (type(self.trainer.precision_plugin) is Precision
                                and type(self.trainer.strategy) is SingleDeviceStrategy)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.automatic_optimization:
            return
        # Lightning steps schedulers only for automatic optimization; validation has run by now, so a
        # plateau schedule reads this epoch's val/loss as it would there.
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(self.trainer.callback_metrics["val/loss"])
        elif scheduler is not None:
            scheduler.step()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self._val_predictions:
            return
        from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

        predicted, target = (torch.cat(t) for t in zip(*self._val_predictions))
        self._val_predictions = []
        if self.trainer.world_size > 1:  # every rank scores all ranks' shards (equal sizes: see InMemoryLoader)
            predicted, target = self.all_gather(predicted).flatten(), self.all_gather(target).flatten()
        k = self.model.num_classes
        self.log_dict({"val/acc": multiclass_accuracy(predicted, target, k, average="micro"),
                       "val/f1": multiclass_f1_score(predicted, target, k, average="macro")})

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
