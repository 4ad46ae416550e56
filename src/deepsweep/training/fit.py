"""How a model gets trained (``deepsweep.training.fit``): ``fit`` is the one entry point every caller uses (the pretrain and finetune
stages, ``make bench``, the tests).

Given the config, a task, its loaders and the output folder, ``fit`` builds the Lightning trainer and its
callbacks (best weights, early stopping, learning-rate monitor, resume checkpoints), moves in-memory data
to the device once, resumes an interrupted fit of the same config, fits, and returns one ``FitResult``.
What a stage keeps is only its own: which task, which data, which files it writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig

from deepsweep.errors import ConfigError


@dataclass
class FitResult:
    """What a fit leaves: the best epoch's validation score (None where no validation loss ranks epochs),
    the epochs trained, the last epoch's logged values and, with ``fit(validate=True)``, the validation
    metrics of the kept weights."""

    best_score: float | None
    best_epoch: int | None
    epochs: int
    last_metrics: dict[str, float]
    fit_seconds: float  # trainer.fit alone (device work finished), what make bench compares
    val_metrics: dict[str, float] = field(default_factory=dict)
    trainer: Any = field(default=None, repr=False)  # the fitted trainer, for callers that look further


def strategy(cfg: DictConfig) -> str:
    """trainer.strategy, checked: data-parallel training must keep the stage in this process (ddp_spawn)."""
    name = str(cfg.trainer.get("strategy") or "auto")
    if name.startswith(("ddp", "fsdp", "deepspeed")) and not name.startswith("ddp_spawn"):
        raise ConfigError(
            f"trainer.strategy={name}: this launcher re-runs the whole command once per device, and a stage "
            "would then record and write its outputs once per device; use trainer.strategy=ddp_spawn"
        )
    if name.startswith("ddp_spawn"):
        import torch.multiprocessing

        # The in-memory datasets go to the spawned processes with the loaders; sharing them through files
        # rather than one descriptor per tensor keeps process start-up from failing on descriptor limits.
        torch.multiprocessing.set_sharing_strategy("file_system")
    return name


def quiet_lightning() -> None:
    """Keep Lightning's start-up banners (GPU/TPU availability, tips) out of every stage's output."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


CURVES_FILE = "curves.csv"
# The columns every curves.csv starts with (empty where a task logs no such value), so one DVC plot
# definition fits every pretraining objective and family.
CURVE_COLUMNS = ("train_loss", "val_loss", "val_acc")


def write_curves(path: Path, history: dict[int, dict[str, float]]) -> None:
    """Per-epoch metrics as CSV (``epoch,train_loss,val_loss,val_acc,...``): the DVC plots of a stage."""
    import csv

    rows = {epoch: {key.replace("/", "_"): value for key, value in metrics.items()} for epoch, metrics in history.items()}
    extra = sorted({key for row in rows.values() for key in row} - set(CURVE_COLUMNS) - {"epoch"})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *CURVE_COLUMNS, *extra])
        for epoch in sorted(rows):
            writer.writerow([epoch, *(rows[epoch].get(key, "") for key in (*CURVE_COLUMNS, *extra))])


def progress(cfg: DictConfig) -> str:
    """How a fit shows progress: ``trainer.progress``, where ``auto`` is Lightning's bar on a terminal, one line
    per epoch elsewhere, and nothing inside a sweep job (the sweep reports jobs done, failed and left)."""
    import os
    import sys

    chosen = str(cfg.trainer.get("progress", "auto"))
    if chosen != "auto":
        return chosen
    if os.environ.get("DEEPSWEEP_PARENT_RUN_ID"):  # tracking.runs.PARENT_RUN_ENV: set for sweep jobs
        return "none"
    return "bar" if sys.stdout.isatty() else "epochs"


def build_trainer(cfg: DictConfig, max_epochs: int, logger: Any, callbacks: list, root_dir: str | Path,
                  manual_optimization: bool = False):
    """The Lightning trainer of ``cfg.trainer``. ``manual_optimization``: the task steps its optimizer itself
    (and clips its own gradients, which Lightning refuses to do for it then)."""
    import lightning as L

    quiet_lightning()
    t = cfg.trainer
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=strategy(cfg),
        precision=t.precision,
        gradient_clip_val=None if manual_optimization else t.gradient_clip_val,
        deterministic=t.deterministic,
        enable_progress_bar=progress(cfg) == "bar",
        # Best weights are kept in memory (tasks.common.BestWeights) and saved once by the stage; the only
        # checkpoints written are the opt-in resume ones (training.resume).
        enable_checkpointing=any(type(c).__name__ == "ModelCheckpoint" for c in callbacks),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # tasks log per epoch only; this just silences the 'few batches' warning
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        default_root_dir=str(root_dir),
    )


def place_on_device(trainer, *loaders):
    """``loaders`` with their in-memory data moved once to the trainer's accelerator, where it trains on
    one (a GPU): Lightning would otherwise copy every batch from host memory, which on a small model
    costs more than its step. Data-parallel strategies, the CPU and data too big for the device keep
    the data where it is (Lightning moves each batch, as before)."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    device = trainer.strategy.root_device if isinstance(trainer.strategy, SingleDeviceStrategy) else None
    if device is None or device.type == "cpu":
        return loaders
    return tuple(loader.to(device) for loader in loaders)


def fit(cfg: DictConfig, task, train_loader, val_loader, out: Path, *, stage: str, epochs: int,
        run_id: str | None = None, early_stopping_patience: int | None = None, validate: bool = False,
        callbacks: Sequence[Any] = ()) -> FitResult:
    """Fit ``task`` for ``epochs`` on the loaders; Lightning writes under ``out``, a resume checkpoint (when
    ``trainer.checkpoint_every_n_epochs`` is set) under ``out.parent/<stage>.resume``, per-epoch metrics to
    the MLflow run ``run_id``. The task's kept weights are the best epoch's (``task.keep_best_weights``).
    ``callbacks``: what a stage measures besides (e.g. ``ModeCoverage``)."""
    from deepsweep.training.callbacks import BestWeights
    from deepsweep.training.resume import Resume

    best = BestWeights()
    callbacks = ([best] if task.keep_best_weights else []) + list(callbacks)
    if early_stopping_patience is not None:
        from lightning.pytorch.callbacks import EarlyStopping

        callbacks.append(EarlyStopping("val/loss", patience=early_stopping_patience, mode="min"))
    if cfg.scheduler.name != "none" and run_id is not None:  # the learning rate per epoch, in the MLflow run
        from deepsweep.training.callbacks import EpochLearningRates

        callbacks.append(EpochLearningRates())
    if progress(cfg) == "epochs":
        from deepsweep.training.callbacks import EpochLines

        callbacks.append(EpochLines(stage))
    resume = Resume(cfg, Path(out).parent, stage)
    callbacks += resume.callbacks(train_loader)
    logger = None
    if run_id is not None:
        from deepsweep.training.mlflow_logger import MlflowRunLogger

        logger = MlflowRunLogger(run_id)
        if resume.every:  # the curves of epochs an interrupted attempt trained travel in its checkpoint
            from deepsweep.training.callbacks import CurveHistory

            callbacks.append(CurveHistory(logger))
        if cfg.logger.get("layer_stats", False):
            from deepsweep.training.callbacks import LayerStatistics

            # The first validation batch: fixed, and drawn without touching the training loader's random stream.
            callbacks.append(LayerStatistics(next(iter(val_loader)), logger))
    trainer = build_trainer(cfg, epochs, logger, callbacks, out, manual_optimization=not task.automatic_optimization)
    train_loader, val_loader = place_on_device(trainer, task.batches(train_loader), task.batches(val_loader))
    start = time.perf_counter()
    resume.fit(trainer, task, train_loader, val_loader)
    if trainer.strategy.root_device.type == "cuda":
        import torch

        torch.cuda.synchronize(trainer.strategy.root_device)
    fit_seconds = time.perf_counter() - start
    if logger is not None:
        logger.flush()
        write_curves(Path(out) / CURVES_FILE, logger.history)

    best_score, best_epoch = best.result(trainer)
    result = FitResult(best_score=best_score, best_epoch=best_epoch, epochs=best.epochs(trainer),
                       last_metrics={k: float(v) for k, v in trainer.callback_metrics.items()}, fit_seconds=fit_seconds,
                       trainer=trainer)
    if validate:  # the kept (best) weights' validation metrics: the numbers a sweep should rank on
        trainer.logger = None
        result.val_metrics = {k: float(v) for k, v in trainer.validate(task, val_loader, verbose=False)[0].items()}
    return result
