"""Fused sweeps: the jobs of a sweep that differ only in values (seed, init, learning rate, weight decay,
L1/L2, early stopping), trained together as one stacked model in one process (``hydra/launcher=fused``).

Small models leave a GPU idle: one job per process spends its time on kernel launches, Python and start-up.
HFTA (Wang et al., MLSys 2021) fused same-shape jobs horizontally. Here each member keeps its own weights
(leaf tensors, built by the ordinary factory from its own seed, so its init is its unfused job's) and its
own optimizer; every step stacks the members' weights (``torch.stack``, differentiable) and runs one
``torch.func.vmap`` of ``functional_call`` over the stack and each member's own batch (each member's data
order comes from its own seeded loader). The summed loss's gradient reaches each member's leaves as its
own loss's gradient, so each member's update is its unfused job's (tests/test_fused.py: the same per-epoch
validation loss within float tolerance).

Each member stays an ordinary job to the user: the launcher runs the jobs one after another as Hydra's
basic launcher does; the first member whose finetune stage reaches its fit trains the whole array
(``member_fit``), and every member's stage then *replays* its own result: its per-epoch metrics into its
own MLflow run, its curves, its best weights, its early stop, its failure (a member whose loss goes
non-finite fails alone and leaves the array). What is not fused (``unfusable``) runs as a separate job.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from omegaconf import DictConfig, OmegaConf

from deepsweep.errors import NonFiniteError, check_finite

log = logging.getLogger("deepsweep")

# Keys whose values may differ between the members of one array: they change numbers, never a shape.
PER_MEMBER_KEYS = (
    "seed", "init", "optimizer", "experiment_name", "optimized_metric", "logger",
    "regularizer.name", "regularizer.l1", "regularizer.l2", "regularizer.early_stopping_patience",
    "finetune.freeze_encoder_epochs", "trainer.gradient_clip_val", "trainer.num_threads", "trainer.progress",
    "trainer.steps_per_call", "trainer.jobs_per_gpu",
)

# What a member is built as (the finetune stage's own set-up): (task, train loader, validation loader).
BuildMember = Callable[[DictConfig], tuple[Any, Any, Any]]


def unfusable(cfg: DictConfig) -> str | None:
    """Why this job cannot be a member of a fused array (it then runs as a job of its own), or None."""
    from deepsweep.config import fine_tunes_pretrained_encoder
    from deepsweep.kinds import declared_kind, declared_target

    if fine_tunes_pretrained_encoder(cfg):
        return (f"pretrain={cfg.pretrain.name}: each member would fine-tune its own pretrained encoder; a fused "
                "array fine-tunes from scratch (pretrain=none or finetune.load_pretrained=false)")
    if declared_kind(str(cfg.data._target_)) != "tensor":
        return f"data={cfg.data.name}: only tensor data (the MLP and CNN families) is fused so far"
    if declared_target(str(cfg.data._target_)) != "class":
        return f"data={cfg.data.name}: only classification is fused so far"
    if float(cfg.regularizer.dropout) > 0:
        return (f"regularizer.dropout={cfg.regularizer.dropout}: each member's dropout masks must follow its own "
                "random stream, which one vmapped draw does not")
    if cfg.regularizer.batch_norm:
        return "regularizer.batch_norm: running statistics are not stacked per member"
    if cfg.scheduler.name != "none":
        return f"scheduler={cfg.scheduler.name}: learning-rate schedules are not stepped per member yet"
    if str(cfg.optimizer.get("_target_", "")).endswith("LBFGS"):
        return "optimizer=lbfgs: its line search re-evaluates one member's loss alone"
    if str(cfg.trainer.strategy) != "auto" or str(cfg.trainer.devices) not in ("1", "[0]", "auto"):
        return f"trainer.strategy={cfg.trainer.strategy}, devices={cfg.trainer.devices}: one device per array"
    if str(cfg.trainer.precision) not in ("32", "32-true"):
        return f"trainer.precision={cfg.trainer.precision}: arrays train in 32-bit"
    if int(cfg.trainer.get("checkpoint_every_n_epochs") or 0):
        return "trainer.checkpoint_every_n_epochs: a fused array writes no resume checkpoints"
    if cfg.logger.get("layer_stats", False):
        return "logger.layer_stats: per-layer statistics are drawn per job"
    return None


def shape_key(cfg: DictConfig) -> str:
    """The config with every per-member key taken out: jobs with equal keys may share an array."""
    shape = copy.deepcopy(cfg)
    OmegaConf.set_struct(shape, False)
    for key in PER_MEMBER_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(shape, parent) if parent else shape
        if isinstance(node, DictConfig) and leaf in node:
            del node[leaf]
    return OmegaConf.to_yaml(shape, resolve=True)


def plan(cfgs: Sequence[DictConfig | None], max_members: int) -> tuple[list[list[int]], dict[int, str]]:
    """Arrays (lists of job positions, at most ``max_members`` each, in job order) and the jobs that run
    alone with the reason. A ``None`` config (one that failed validation) runs alone: its job reports why."""
    groups: dict[str, list[int]] = {}
    alone: dict[int, str] = {}
    for position, cfg in enumerate(cfgs):
        reason = "its config is invalid" if cfg is None else unfusable(cfg)
        if reason:
            alone[position] = reason
        else:
            groups.setdefault(shape_key(cfg), []).append(position)
    arrays = [members[i : i + max_members] for members in groups.values() for i in range(0, len(members), max_members)]
    for array in [a for a in arrays if len(a) == 1]:  # nothing to fuse it with: an ordinary job
        arrays.remove(array)
        alone[array[0]] = "no other job of the sweep has its shapes"
    return arrays, alone


@dataclass
class MemberResult:
    """One member's fit: what its unfused job's ``fit`` would have logged, kept and returned."""

    history: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> train/loss, val/loss, ...
    best_score: float | None = None
    best_epoch: int | None = None
    epochs: int = 0
    state: dict[str, Any] | None = None  # the best epoch's weights (the model's state dict, on the CPU)
    error: str | None = None  # why it left the array (non-finite loss)


class FusedArray:
    """The members of one array (their validated job configs, in job order) and, once trained, their results."""

    def __init__(self, cfgs: Sequence[DictConfig]) -> None:
        self.cfgs = list(cfgs)
        self.id = uuid.uuid4().hex[:12]
        self.current = 0  # the member whose job runs now (set by the launcher)
        self.results: list[MemberResult] | None = None
        self.broken: str | None = None  # why the array fell back to separate fits
        self.fit_seconds = 0.0

    def train(self, build: BuildMember) -> None:
        try:
            members = [build(cfg) for cfg in self.cfgs]
            start = time.perf_counter()
            self.results = train_members(self.cfgs, members)
            self.fit_seconds = time.perf_counter() - start
        except Unfusable as exc:
            self.broken = str(exc)
        except Exception as exc:  # the array's own failure: every member falls back to a fit of its own
            log.exception("fused array %s failed; its members are fitted one by one", self.id)
            self.broken = f"{type(exc).__name__}: {exc}"


class Unfusable(RuntimeError):
    """A member's built model holds what an array cannot stack (batch norm, dropout)."""


_ACTIVE: FusedArray | None = None


@contextlib.contextmanager
def active(array: FusedArray) -> Iterator[FusedArray]:
    """Within this block, the finetune stage of ``array.cfgs[array.current]`` is a member of ``array``."""
    global _ACTIVE
    _ACTIVE = array
    try:
        yield array
    finally:
        _ACTIVE = None


def member_fit(cfg: DictConfig, task: Any, out: Path, run_id: str | None, build: BuildMember):
    """The ``FitResult`` of this stage's task as a member of the active fused array (training the array first
    if no member has yet), with its metrics recorded as its own fit records them; None outside an array or
    where the array fell back (the stage then fits alone)."""
    array = _ACTIVE
    if array is None:
        return None
    if OmegaConf.to_yaml(cfg, resolve=True) != OmegaConf.to_yaml(array.cfgs[array.current], resolve=True):
        log.warning("fused array %s: this stage's config is not its member's; fitted alone", array.id)
        return None
    if array.results is None and array.broken is None:
        array.train(build)
    if array.broken is not None:
        log.warning("fused array %s: fitted alone: %s", array.id, array.broken)
        return None
    return _replay(array, array.results[array.current], task, out, run_id)


def _replay(array: FusedArray, result: MemberResult, task: Any, out: Path, run_id: str | None):
    import mlflow

    from deepsweep.training.fit import CURVES_FILE, FitResult, write_curves

    if result.state is not None:
        task.model.load_state_dict(result.state)
    if run_id is not None:
        from deepsweep.training.mlflow_logger import MlflowRunLogger

        logger = MlflowRunLogger(run_id)
        for epoch in sorted(result.history):
            logger.log_metrics({**result.history[epoch], "epoch": epoch})
        logger.flush()
        write_curves(Path(out) / CURVES_FILE, logger.history)
        mlflow.set_tags({"deepsweep.fused_array": array.id, "deepsweep.fused_members": str(len(array.cfgs))})
    if result.error is not None:
        raise NonFiniteError(result.error)
    last = result.history[max(result.history)] if result.history else {}
    best = result.history.get(result.best_epoch, {}) if result.best_epoch is not None else {}
    return FitResult(best_score=result.best_score, best_epoch=result.best_epoch, epochs=result.epochs,
                     last_metrics=dict(last), fit_seconds=array.fit_seconds / len(array.cfgs),
                     val_metrics={k: v for k, v in best.items() if k.startswith("val/")})


def _device(cfg: DictConfig):
    import torch

    if cfg.trainer.accelerator in ("gpu", "cuda"):
        devices = cfg.trainer.devices
        index = int(devices[0]) if OmegaConf.is_list(devices) else 0
        return torch.device("cuda", index)
    return torch.device("cpu")


def _check_stackable(model: Any) -> None:
    from deepsweep.nn.modes import drops, keeps_running_stats

    for name, module in model.named_modules():
        if keeps_running_stats(module):
            raise Unfusable(f"{name or 'the model'} is a batch norm: running statistics are not stacked per member")
        if drops(module):
            raise Unfusable(f"{name} is a dropout: each member's masks must follow its own random stream")


def _optimizers(tasks: Sequence[Any], models: Sequence[Any]) -> list[Any]:
    """One optimizer per distinct optimizer setting, over the weights of the members that share it: the
    update is elementwise, so a member's step is the same as with an optimizer of its own, and an array
    of 32 members with one learning rate takes one optimizer step instead of 32 (kernel launches on a GPU)."""
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        factory = task.optimizer_factory
        key = repr((getattr(factory, "func", factory), getattr(factory, "args", ()),
                    sorted(getattr(factory, "keywords", {}).items())))
        groups.setdefault(key, []).append(i)
    return [tasks[members[0]].optimizer_factory([p for i in members for p in models[i].parameters()])
            for members in groups.values()]


def train_members(cfgs: Sequence[DictConfig], members: Sequence[tuple[Any, Any, Any]]) -> list[MemberResult]:
    """Fit the members (task, train loader, validation loader) as one stacked model; what each one's
    ``training.fit`` would do alone: per-epoch train/val loss, val accuracy and macro F1, best weights by
    val/loss, early stopping by its own patience, a stop at its first non-finite epoch value."""
    import torch
    from torch.func import functional_call, vmap
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    device = _device(cfgs[0])
    tasks = [task for task, _, _ in members]
    models = [task.model for task in tasks]
    for model in models:
        _check_stackable(model)
        model.to(device).train()
    train_loaders = [loader.to(device) for _, loader, _ in members]
    val_loader = members[0][2].to(device)  # not shuffled, the same split: one for all
    n = len(models)
    template, criterion = models[0], tasks[0].criterion  # the loss group is a shape key: one for all
    names = [name for name, _ in template.named_parameters()]
    leaves = [dict(model.named_parameters()) for model in models]
    buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in models]) for name, _ in template.named_buffers()}
    optimizers = _optimizers(tasks, models)
    penalized = [i for i, t in enumerate(tasks) if t.regularization.l1 or t.regularization.l2]
    clip = [float(t.gradient_clip_val or 0) for t in tasks]
    classes = int(template.num_classes)

    def member_loss(params, member_buffers, x, y):
        logits = functional_call(template, (params, member_buffers), (x,))
        return criterion(logits, y), logits

    train_step = vmap(member_loss)
    validate = vmap(member_loss, in_dims=(0, 0, None, None))

    results = [MemberResult() for _ in range(n)]
    active = list(range(n))
    patience = [t.regularization.early_stopping_patience for t in tasks]
    stop_best = [math.inf] * n
    waits = [0] * n
    steps = 0
    epochs = int(cfgs[0].trainer.max_epochs)
    for epoch in range(epochs):
        if not active:
            break
        for i, task in enumerate(tasks):  # linear probing first (ClassifyTask.on_train_epoch_start)
            task.model.encoder.requires_grad_(epoch >= task.freeze_encoder_epochs)
        train_losses, train_counts = [], []
        for batches in zip(*train_loaders):
            x = torch.stack([b[0] for b in batches])
            y = torch.stack([b[1] for b in batches])
            params = {name: torch.stack([member[name] for member in leaves]) for name in names}
            losses, _ = train_step(params, buffers, x, y)
            if penalized:
                extra = [tasks[i].regularization.penalty(models[i]) if i in penalized else losses.new_zeros(())
                         for i in range(n)]
                losses = losses + torch.stack([torch.as_tensor(e, device=device) for e in extra])
            train_losses.append(losses.detach())
            train_counts.append(y.shape[1])
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            (losses.sum() if len(active) == n else losses[torch.tensor(active, device=device)].sum()).backward()
            for i in range(n):
                if i not in active:  # a member that left keeps its weights and its optimizer state
                    for p in models[i].parameters():
                        p.grad = None
                elif clip[i]:
                    torch.nn.utils.clip_grad_norm_(models[i].parameters(), clip[i])
            for optimizer in optimizers:
                optimizer.step()
            steps += 1
        train_mean = _weighted_means(train_losses, train_counts)

        with torch.no_grad():
            params = {name: torch.stack([member[name].detach() for member in leaves]) for name in names}
            val_losses, val_counts, predicted, targets = [], [], [], []
            for x, y in val_loader:
                losses, logits = validate(params, buffers, x, y)
                val_losses.append(losses)
                val_counts.append(len(y))
                predicted.append(logits.argmax(dim=-1))
                targets.append(y)
            val_mean = _weighted_means(val_losses, val_counts)
            predicted, target = torch.cat(predicted, dim=1), torch.cat(targets)
            acc = torch.stack([multiclass_accuracy(predicted[i], target, classes, average="micro", validate_args=False)
                               for i in range(n)])
            f1 = torch.stack([multiclass_f1_score(predicted[i], target, classes, average="macro", validate_args=False)
                              for i in range(n)])
        table = torch.stack([val_mean, acc, f1, train_mean], dim=1).tolist()  # one device sync per epoch
        for i in list(active):
            val_loss, val_acc, val_f1, train_loss = table[i]
            result = results[i]
            try:  # in the order a fit logs them: validation first, then the training epoch's mean
                check_finite({"val/loss": val_loss}, epoch, steps)
                check_finite({"val/acc": val_acc, "val/f1": val_f1}, epoch, steps)
                result.history[epoch] = {"val/loss": val_loss, "val/acc": val_acc, "val/f1": val_f1}
                check_finite({"train/loss": train_loss}, epoch, steps)
            except NonFiniteError as exc:
                result.error, result.epochs = str(exc), epoch
                active.remove(i)
                continue
            result.history[epoch]["train/loss"] = train_loss
            result.epochs = epoch + 1
            if result.best_score is None or val_loss < result.best_score:  # training.callbacks.BestWeights
                result.best_score, result.best_epoch = val_loss, epoch
                result.state = {k: v.detach().to("cpu", copy=True) for k, v in models[i].state_dict().items()}
            if patience[i] is not None:  # Lightning's EarlyStopping(min_delta=0, mode="min")
                if val_loss < stop_best[i]:
                    stop_best[i], waits[i] = val_loss, 0
                else:
                    waits[i] += 1
                    if waits[i] >= int(patience[i]):
                        active.remove(i)
    for model in models:
        model.to("cpu")
    return results


def _weighted_means(values: list[Any], counts: list[int]):
    """Per member, the sample-weighted mean over an epoch's batches: ``tasks.common.EpochMean`` over
    per-member vectors."""
    from deepsweep.tasks.common import EpochMean

    mean = EpochMean()
    for value, count in zip(values, counts):
        mean.update(value, count)
    return mean.pop()
