"""Pieces every task shares: optimizer/scheduler wiring and the best-weights callback."""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

import lightning as L
import torch

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def configure_optimizers(
    params: Iterable[torch.nn.Parameter],
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    monitor: str = "val/loss",
) -> Any:
    opt = optimizer(params)
    if scheduler is None:
        return opt
    sched = scheduler(opt)
    # ReduceLROnPlateau steps on a metric; every other schedule steps once per epoch.
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "monitor": monitor}}


class BestWeights(L.Callback):
    """Keep the weights of the epoch with the lowest ``monitor`` in memory and restore them when fitting
    ends, so early stopping and overfitting never leave the last (worse) weights behind. In memory,
    because writing a checkpoint file every epoch costs more than these small models take to train."""

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            return
        score = float(score)
        if self.best_score is None or score < self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self._state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._state is not None:
            pl_module.load_state_dict(self._state)
