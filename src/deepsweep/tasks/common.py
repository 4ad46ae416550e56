"""What every task shares: the set-up it is given (``TaskSetup``), the capabilities it declares (``Task``),
the one-loss base (``LossTask``) and the best-weights callback.

A task is one LightningModule per objective. It declares what it is as class attributes, which the
fitting code (``deepsweep.training``) and the stages read instead of probing for methods:

* ``kind``: the data it reads ("tensor", "sequence", "graph"), checked against the data and model;
* ``steps_by_hand``: it steps its own optimizers once per batch (GANs, CD-k), so it takes neither
  ``steps_per_call`` nor gradient clipping;
* ``keep_best_weights``: its validation loss ranks epochs (else the last epoch's weights are kept);
* ``scores_anomalies``: it gives ``anomaly_score(x)`` per input (named ``score_name``);
* ``draws_figures``: it gives ``save_figures(folder, x)``;
* ``infers_categories``: it gives ``categories_of(x)``, a category per input learned without labels
  (InfoGAN's categorical code), which evaluate matches to the classes;
* ``predicts_links``: it held edges of the graph out of training and gives ``link_scores(batch)``, its scores
  of the held-out test edges and of as many non-edges (the graph autoencoders with a link split: set per
  instance, since the split is an option of the objective);
* ``translates_domains``: it learns to translate between the data's images and a transformed domain of them
  (CycleGAN) and gives ``translation_scores(x)``: test images taken to the other domain and back, which pretrain
  saves and evaluate labels with the fine-tuned classifier;
* ``generates_inputs``: it gives ``generate(n, generator=...)``, new inputs drawn from what it learned (the
  GANs): pretrain saves 1,000 of them, evaluate labels them, and on data with modes (``data=ring``) their
  coverage is measured every epoch.

A new objective is one subclass and one ``conf/pretrain/<name>.yaml`` naming it (tests/test_objective.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import lightning as L
import torch
from torch import nn

from deepsweep import internals
from deepsweep.errors import check_finite
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


@dataclass(frozen=True)
class TaskSetup:
    """What every task is given besides its model, built once from the config's optimizer, scheduler,
    regularizer, activation and trainer groups (``deepsweep.factory.build_task_setup``)."""

    optimizer: OptimizerFactory | None
    scheduler: SchedulerFactory | None = None
    regularization: Regularization = field(default_factory=Regularization)
    activation: Callable[[], nn.Module] = nn.ReLU
    steps_per_call: int = 1
    gradient_clip_val: float | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(default_factory=nn.CrossEntropyLoss)
    seed: int = 0  # the run's seed, for what a task draws once and must draw alike on a resume (held-out edges)
    name: str = "this task"  # how messages name the objective, e.g. "pretrain=gan"


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
        values = torch.stack(self.values)  # steps x (the value's shape: a fused array's per-member values)
        weights = torch.tensor(self.counts, dtype=values.dtype, device=values.device)
        mean = (values * weights.view(-1, *[1] * (values.dim() - 1))).sum(dim=0) / weights.sum()
        self.values, self.counts = [], []
        return mean


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
        if not self.direct_epoch_logging or trainer.world_size > 1 or trainer.state.fn != "fit":
            self.log_dict(metrics, sync_dist=trainer.world_size > 1)
            return
        internals.set_callback_metrics(trainer, metrics)
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


class Task(EpochLoggingMixin, L.LightningModule):
    """The base of every task: keeps the set-up and declares the capabilities (see the module docstring)."""

    kind: ClassVar[str] = "tensor"
    steps_by_hand: ClassVar[bool] = False
    keep_best_weights: ClassVar[bool] = True
    scores_anomalies: ClassVar[bool] = False
    draws_figures: ClassVar[bool] = False
    predicts_links: bool = False
    infers_categories: bool = False
    generates_inputs: ClassVar[bool] = False
    translates_domains: ClassVar[bool] = False
    score_name: ClassVar[str] = ""

    def __init__(self, setup: TaskSetup) -> None:
        super().__init__()
        if self.steps_by_hand and getattr(setup.optimizer, "func", None) is torch.optim.LBFGS:
            # L-BFGS's line search re-evaluates one loss through a closure: no hand-made step can follow it.
            raise ValueError(f"optimizer=lbfgs: {setup.name} steps its optimizers by hand, which "
                             "L-BFGS's line search cannot follow; use adam, rmsprop or sgd")
        if self.steps_by_hand and setup.gradient_clip_val:
            raise ValueError(f"trainer.gradient_clip_val: {setup.name} steps its optimizers by hand "
                             "and clips nothing; set it to null for this pretraining")
        self.optimizer_factory = setup.optimizer
        self.scheduler_factory = setup.scheduler
        self.regularization = setup.regularization
        self.criterion = setup.loss  # the loss group: what supervised tasks minimize
        self.gradient_clip_val = setup.gradient_clip_val
        self.steps_per_call = 1 if self.steps_by_hand else setup.steps_per_call

    def batches(self, loader):
        """``loader`` as this task's steps read it: lists of ``steps_per_call`` batches when that is above 1."""
        from deepsweep.data.loaders import Chunked

        return Chunked(loader, self.steps_per_call) if self.steps_per_call > 1 else loader

    def record_history(self, *names: str) -> None:
        """Append this epoch's value of each named metric to ``self.history`` (name -> [(epoch, value)]): the
        loss curves a two-player task (GANs, CycleGAN) draws in ``save_figures``, which no single logged loss
        shows."""
        history = self.__dict__.setdefault("history", {})
        for name in names:
            value = self.trainer.callback_metrics.get(name)
            if value is not None:
                history.setdefault(name, []).append((self.current_epoch, float(value)))

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:  # where scores_anomalies
        raise NotImplementedError(f"{type(self).__name__} gives no anomaly score")

    def save_figures(self, folder, x: torch.Tensor) -> list:  # where draws_figures
        return []

    def link_scores(self, batch) -> dict[str, torch.Tensor]:  # where predicts_links
        raise NotImplementedError(f"{type(self).__name__} holds out no edges")

    def translation_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # where translates_domains
        raise NotImplementedError(f"{type(self).__name__} translates no domain")


class LossTask(Task):
    """A task that minimizes one loss with one optimizer: every task but the adversarial and CD-k ones.
    Subclasses give ``training_loss(batch)`` (penalties included, tracked) and ``validation_batch(batch)``.

    With ``steps_per_call`` > 1 each call receives a list of batches (``batches(loader)``) and makes
    one optimizer step per batch through Lightning's manual-optimization API (the wrapped optimizer's
    ``step``, so ``global_step`` counts; ``clip_gradients``; schedulers stepped at the epoch's end): the
    same updates in the same order as one batch per call, with Lightning's ~25 per-call hooks (about
    0.5 ms on a CPU, more than a small model's step) paid once per list."""

    def __init__(self, setup: TaskSetup) -> None:
        super().__init__(setup)
        self.automatic_optimization = self.steps_per_call == 1
        self._plain_steps = False  # set by on_fit_start

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
                internals.plain_optimizer_step(optimizer)
            else:
                optimizer.step()
        return None

    def validation_step(self, batch, batch_idx: int) -> None:
        for one in batch if isinstance(batch, list) else [batch]:  # a list: Chunked batches
            self.validation_batch(one)

    def on_fit_start(self) -> None:
        from lightning.pytorch.plugins.precision import Precision
        from lightning.pytorch.strategies import SingleDeviceStrategy

        # 32-bit on one device: Lightning's manual_backward is loss.backward() plus two hook dispatches
        # (on_before/after_backward), and its optimizer step the torch step wrapped in a closure, the
        # strategy, the precision plugin and an on_before_optimizer_step dispatch: together about 0.3 ms
        # a step, more than a small model's whole step on a GPU. No deepsweep callback uses those hooks;
        # where a module or callback overrides one, or another precision needs loss scaling or another
        # strategy its gradient sync, Lightning's calls are kept.
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        hooked = any(overrides(self, L.LightningModule, h) for h in hooks) or any(
            overrides(callback, L.Callback, h) for h in hooks for callback in self.trainer.callbacks)
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


def overrides(obj: object, base: type, method: str) -> bool:
    """Whether ``obj``'s class defines ``method`` other than ``base`` does (plain Python: what Lightning's
    internal ``is_overridden`` helper answers for these hooks)."""
    return getattr(type(obj), method, None) is not getattr(base, method, None)
