"""Mid-training checkpoints, so that a job killed half-way through a long stage resumes from its last
saved epoch instead of from scratch.

Off by default (``trainer.checkpoint_every_n_epochs: 0``): the small models deepsweep is mostly run on
train an epoch faster than a checkpoint is written. When on, Lightning writes ``last.ckpt`` every N
epochs into ``<stage>.resume/`` beside the stage's output, tagged with the config's fingerprint; a
rerun of the same config (``dvc repro`` again, or a resumed sweep) fits from there. A finished stage
deletes it once its output is committed: that output is then the thing to keep."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from omegaconf import DictConfig

CHECKPOINT = "last.ckpt"
FINGERPRINT = "fingerprint.txt"


class Resume:
    def __init__(self, cfg: DictConfig, artifacts: Path, stage: str) -> None:
        self.every = int(cfg.trainer.get("checkpoint_every_n_epochs") or 0)
        if self.every < 0:
            from deepsweep.errors import ConfigError

            raise ConfigError(f"trainer.checkpoint_every_n_epochs: must be >= 0 (0 = off), got {self.every}")
        self.folder = resume_folder(artifacts, stage)
        self.cfg = cfg

    @functools.cached_property
    def fingerprint(self) -> str:
        """The config's fingerprint (``provenance.fingerprint``), computed only where checkpoints are on."""
        from deepsweep.provenance import fingerprint

        return fingerprint(self.cfg)

    def callbacks(self, *loaders) -> list:
        """The checkpoint writer for the trainer, and the keeper of every random stream the fit draws from
        (``loaders``' shuffling included); a checkpoint another config left here is removed first."""
        if not self.every:
            return []
        from lightning.pytorch.callbacks import ModelCheckpoint

        from deepsweep.training.callbacks import random_states

        if self.checkpoint() is None:  # another config's, or none: start clean
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / FINGERPRINT).write_text(self.fingerprint)
        # No monitor and top-1: the newest epoch, overwritten in place as last.ckpt.
        return [random_states(*loaders),
                ModelCheckpoint(dirpath=self.folder, filename="last", monitor=None, save_top_k=1,
                                every_n_epochs=self.every, enable_version_counter=False)]

    def checkpoint(self) -> str | None:
        """The checkpoint an interrupted run of this very config left, if any."""
        path, tag = self.folder / CHECKPOINT, self.folder / FINGERPRINT
        if self.every and path.is_file() and tag.is_file() and tag.read_text() == self.fingerprint:
            return str(path)
        return None

    def fit(self, trainer, task, *loaders) -> None:
        """``trainer.fit``, from this config's checkpoint when there is one (tagged on the stage's MLflow
        run); the checkpoint goes once fitting has finished."""
        checkpoint = self.checkpoint()
        if checkpoint is not None:
            import mlflow

            mlflow.set_tag("deepsweep.resumed_from", checkpoint)
        try:
            trainer.fit(task, *loaders, ckpt_path=checkpoint)
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown, and ignores SIGINT from then
            # on: the interrupt goes on as one (runs end KILLED, the command says so), and Ctrl-C works again.
            import signal
            import threading

            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        # Kept until the stage's output is committed (stages.pipeline calls discard_checkpoint).


def resume_folder(artifacts: Path, stage: str) -> Path:
    """Where a stage's resume checkpoint lives: beside its output folder, outside what DVC tracks of it."""
    return Path(artifacts) / f"{stage}.resume"


def discard_checkpoint(artifacts: Path, stage: str) -> None:
    """Remove a stage's resume checkpoint: once its output is committed, or when it belongs to another config."""
    shutil.rmtree(resume_folder(artifacts, stage), ignore_errors=True)
