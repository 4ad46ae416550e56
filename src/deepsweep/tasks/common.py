"""Pieces every task shares: optimizer/scheduler wiring, the one-loss task base and the best-weights callback."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterable

import lightning as L
import torch

from deepsweep.errors import NonFiniteError
from deepsweep.nn.regularizers import Regularization

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def configure_optimizers(
    params: Iterable[torch.nn.Parameter],
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    monitor: str | None = "val/loss",
) -> Any:
    """``monitor``: the metric ReduceLROnPlateau steps on; None where the task steps its schedule itself."""
    opt = optimizer(params)
    if scheduler is None:
        return opt
    sched = scheduler(opt)
    # ReduceLROnPlateau steps on a metric; every other schedule steps once per epoch.
    schedule = {"scheduler": sched, "interval": "epoch"}
    if monitor is not None:
        schedule["monitor"] = monitor
    return {"optimizer": opt, "lr_scheduler": schedule}


def check_stepwise_optimizer(optimizer: OptimizerFactory | None, task: str) -> None:
    """Tasks that step their optimizers by hand (several per batch, or CD-k gradients) cannot drive L-BFGS,
    whose step needs a closure that re-evaluates one loss."""
    if getattr(optimizer, "func", None) is torch.optim.LBFGS:
        raise ValueError(f"optimizer=lbfgs: {task} steps its optimizers by hand, which L-BFGS's line search "
                         "cannot follow; use adam, rmsprop or sgd")


class EpochMean:
    """Sample-weighted mean of a per-step value over an epoch, kept as a tensor (no sync per step).

    Lightning's ``self.log(..., on_epoch=True)`` does the same but costs about half a millisecond per call on CPU
    (it moves its accumulator state on every call): more than a small model's whole training step.
    Tasks update this every step and log it once per epoch (``EpochLoggingMixin.log_epoch``)."""

    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []  # summed once at the epoch's end: no tensor op per step
        self.counts: list[int] = []

    def update(self, value: torch.Tensor, n: int) -> None:
        self.values.append(value.detach())
        self.counts.append(n)

    def pop(self) -> torch.Tensor | None:
        if not self.counts:
            return None
        values = torch.stack(self.values)
        weights = torch.tensor(self.counts, dtype=values.dtype, device=values.device)
        mean = (values * weights).sum() / weights.sum()
        self.values, self.counts = [], []
        return mean


def check_finite(values: dict[str, float], epoch: int, step: int) -> None:
    """Stop fitting at the first NaN or infinite epoch value: every number after it would be noise, and a
    sweep must show the job as failed rather than rank it. Checked once per epoch, on values already on
    the host for logging, so it costs no extra device sync."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{name} = {value}" for name, value in bad.items())
        raise NonFiniteError(f"non-finite value at epoch {epoch}, step {step}: {shown} (lower the learning "
                             "rate, clip gradients with trainer.gradient_clip_val, or check the data)")


class EpochLoggingMixin:
    """``self.track("train/loss", loss, n)`` every step; the means are logged at each epoch's end."""

    # Off only in the test that compares both paths of log_epoch.
    direct_epoch_logging = True

    def track(self, name: str, value: torch.Tensor, n: int) -> None:
        means = self.__dict__.setdefault("_epoch_means", {})
        means.setdefault(name, EpochMean()).update(value, n)

    def log_epoch(self, metrics: dict[str, torch.Tensor]) -> None:
        """Log one epoch's values. While one process fits, they go straight where ``self.log`` would put
        them: the trainer's callback metrics (early stopping, best weights and plateau schedules read them
        there) and its logger, the epoch as step. ``self.log`` costs about 0.5 ms a value on CPU (it moves
        its result state to the value's device on every call): the four values of a classifier's epoch
        cost a third of a full-batch GCN epoch on Cora on a GPU. Data-parallel fits (values averaged
        over ranks) and ``trainer.validate`` (whose return value is built from logged results) keep
        ``self.log``."""
        from lightning.pytorch.trainer.states import TrainerFn

        trainer = self.trainer
        metrics = {name: value.detach() for name, value in metrics.items()}
        stacked = torch.stack([v.float() for v in metrics.values()])
        if trainer.world_size > 1:
            # Every rank stops together (one rank raising alone would leave the others waiting in the next
            # collective): the count of non-finite values, summed over ranks.
            bad = trainer.strategy.reduce((~torch.isfinite(stacked)).sum().float(), reduce_op="sum")
            if float(bad) > 0:
                stacked = torch.full_like(stacked, float("nan"))
        scalars = stacked.tolist()  # one device sync for all
        check_finite(dict(zip(metrics, scalars)), trainer.current_epoch, trainer.global_step)
        if not self.direct_epoch_logging or trainer.world_size > 1 or trainer.state.fn != TrainerFn.FITTING:
            self.log_dict(metrics, sync_dist=trainer.world_size > 1)
            return
        trainer.callback_metrics.update(metrics)
        if trainer.logger is not None:
            trainer.logger.log_metrics({**dict(zip(metrics, scalars)), "epoch": trainer.current_epoch},
                                       step=trainer.global_step)

    def _log_epoch_means(self, prefix: str) -> None:
        means = {name: mean.pop() for name, mean in self.__dict__.get("_epoch_means", {}).items()
                 if name.startswith(prefix)}
        means = {name: value for name, value in means.items() if value is not None}
        if means:  # averaged over DDP ranks, each of which saw its own shard
            self.log_epoch(means)

    def on_train_epoch_end(self) -> None:
        self._log_epoch_means("train/")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_means("val/")


class LossTask(EpochLoggingMixin, L.LightningModule):
    """A task that minimizes one loss with one optimizer: every task but the adversarial and CD-k ones.
    Subclasses give ``training_loss(batch)`` (penalties included, tracked) and ``validation_batch(batch)``.

    With ``steps_per_call`` > 1 each call receives a list of batches (``batches(loader)``) and makes
    one optimizer step per batch through Lightning's manual-optimization API (the wrapped optimizer's
    ``step``, so ``global_step`` counts; ``clip_gradients``; schedulers stepped at the epoch's end): the
    same updates in the same order as one batch per call, with Lightning's ~25 per-call hooks (about
    0.5 ms on a CPU, more than a small model's step) paid once per list."""

    def __init__(self, optimizer: OptimizerFactory, scheduler: SchedulerFactory | None = None,
                 regularization: Regularization | None = None, steps_per_call: int = 1,
                 gradient_clip_val: float | None = None) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.regularization = regularization or Regularization()
        self.gradient_clip_val = gradient_clip_val
        self.steps_per_call = steps_per_call
        self.automatic_optimization = steps_per_call == 1
        self._plain_steps = False  # set by on_fit_start

    def batches(self, loader):
        """``loader`` as this task's steps read it: lists of ``steps_per_call`` batches when that is above 1."""
        from deepsweep.data.loaders import Chunked

        return Chunked(loader, self.steps_per_call) if self.steps_per_call > 1 else loader

    def training_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def validation_batch(self, batch) -> None:
        raise NotImplementedError

    def optimized_parameters(self) -> Iterable[torch.nn.Parameter]:
        return self.parameters()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:  # one batch; Lightning steps the optimizer
            return self.training_loss(batch)
        optimizer = self.optimizers()
        for one in batch:
            loss = self.training_loss(one)
            optimizer.zero_grad(set_to_none=True)
            if self._plain_steps:
                loss.backward()
            else:
                self.manual_backward(loss)
            if self.gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
            if self._plain_steps:
                # The manual loop's own before/after-step hooks (they count global_step), around the torch
                # optimizer's step itself.
                optimizer._on_before_step()
                optimizer.optimizer.step()
                optimizer._on_after_step()
            else:
                optimizer.step()
        return None

    def validation_step(self, batch, batch_idx: int) -> None:
        for one in batch if isinstance(batch, list) else [batch]:  # a list: Chunked batches
            self.validation_batch(one)

    def on_fit_start(self) -> None:
        from lightning.pytorch.plugins.precision import Precision
        from lightning.pytorch.strategies import SingleDeviceStrategy
        from lightning.pytorch.utilities.model_helpers import is_overridden

        # 32-bit on one device: Lightning's manual_backward is loss.backward() plus two hook dispatches
        # (on_before/after_backward), and its optimizer step the torch step wrapped in a closure, the
        # strategy, the precision plugin and an on_before_optimizer_step dispatch: together about 0.3 ms
        # a step, more than a small model's whole step on a GPU. No deepsweep callback uses those hooks;
        # where a module or callback overrides one, or another precision needs loss scaling or another
        # strategy its gradient sync, Lightning's calls are kept.
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        hooked = any(is_overridden(h, self, L.LightningModule) for h in hooks) or any(
            is_overridden(h, callback, L.Callback) for h in hooks for callback in self.trainer.callbacks)
        self._plain_steps = (type(self.trainer.precision_plugin) is Precision
                             and type(self.trainer.strategy) is SingleDeviceStrategy and not hooked)

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

    def configure_optimizers(self):
        # Manual optimization: on_train_epoch_end steps the schedule and reads val/loss itself.
        return configure_optimizers(self.optimized_parameters(), self.optimizer_factory, self.scheduler_factory,
                                    monitor="val/loss" if self.automatic_optimization else None)


class BestWeights(L.Callback):
    """Keep the weights of the epoch with the lowest ``monitor`` in memory and restore them when fitting
    ends, so early stopping and overfitting never leave the last (worse) weights behind. In memory,
    because writing a checkpoint file every epoch costs more than these small models take to train."""

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's metrics are logged (the module's on_validation_epoch_end runs after callbacks').
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            return
        score = float(score)
        if not math.isfinite(score):  # never keep the weights of a diverged epoch (log_epoch stops the fit)
            return
        if self.best_score is None or score < self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            # A tensor-by-tensor copy: deepcopy's generic machinery costs more than the copy on small models.
            self._state = {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                           for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._state is not None:
            pl_module.load_state_dict(self._state)
        trainer.callback_metrics["fit/epochs"] = torch.tensor(float(trainer.current_epoch))
        if self.best_score is not None:
            # With strategy=ddp_spawn fitting runs in other processes; callback metrics are what Lightning
            # carries back to the one that called fit (the weights, best ones loaded above, come back too).
            trainer.callback_metrics["best/score"] = torch.tensor(self.best_score)
            trainer.callback_metrics["best/epoch"] = torch.tensor(float(self.best_epoch))

    @staticmethod
    def epochs(trainer: L.Trainer) -> int:
        """Epochs trained, also after a spawned fit (whose loop state stays in the spawned processes)."""
        carried = trainer.callback_metrics.get("fit/epochs")
        return max(trainer.current_epoch, int(carried) if carried is not None else 0)

    def result(self, trainer: L.Trainer) -> tuple[float | None, int | None]:
        """(best score, its epoch), from this callback or, after a spawned fit, from the trainer."""
        if self.best_score is not None:
            return self.best_score, self.best_epoch
        score, epoch = trainer.callback_metrics.get("best/score"), trainer.callback_metrics.get("best/epoch")
        return (float(score), int(epoch)) if score is not None else (None, None)

    # Saved in resume checkpoints (stages.checkpoints), so a resumed fit still knows its best epoch so far.
    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "state": self._state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score, self.best_epoch = state_dict["best_score"], state_dict["best_epoch"]
        self._state = state_dict["state"]
