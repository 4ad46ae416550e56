"""Mid-training checkpoints, so that a job killed half-way through a long stage resumes from its last
saved epoch instead of from scratch.

Off by default (``trainer.checkpoint_every_n_epochs: 0``): the small models deepsweep is mostly run on
train an epoch faster than a checkpoint is written. When on, Lightning writes ``last.ckpt`` every N
epochs into ``<stage>.resume/`` beside the stage's output, tagged with the config's fingerprint; a
rerun of the same config (``dvc repro`` again, or a resumed sweep) fits from there. A finished stage
deletes it once its output is committed: that output is then the thing to keep."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

CHECKPOINT = "last.ckpt"
FINGERPRINT = "fingerprint.txt"


class Resume:
    def __init__(self, cfg: DictConfig, artifacts: Path, stage: str) -> None:
        from deepsweep.launch import fingerprint

        self.every = int(cfg.trainer.get("checkpoint_every_n_epochs") or 0)
        if self.every < 0:
            from deepsweep.config import ConfigError

            raise ConfigError(f"trainer.checkpoint_every_n_epochs: must be >= 0 (0 = off), got {self.every}")
        self.folder = Path(artifacts) / f"{stage}.resume"
        self.fingerprint = fingerprint(cfg)

    def callbacks(self, *loaders) -> list:
        """The checkpoint writer for the trainer, and the keeper of every random stream the fit draws from
        (``loaders``' shuffling included); a checkpoint another config left here is removed first."""
        if not self.every:
            return []
        from lightning.pytorch.callbacks import ModelCheckpoint

        if self.checkpoint() is None:
            self.done()
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
        trainer.fit(task, *loaders, ckpt_path=checkpoint)
        # Kept until the stage's output is committed (stages.pipeline calls discard_checkpoint).

    def done(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def discard_checkpoint(artifacts: Path, stage: str) -> None:
    """Remove a stage's resume checkpoint: called once its output is committed, never before."""
    shutil.rmtree(Path(artifacts) / f"{stage}.resume", ignore_errors=True)


def _generator(loader):
    """The shuffling generator of a loader, through its wrappers (Chunked, device placement)."""
    while loader is not None:
        generator = getattr(loader, "generator", None)
        if generator is not None:
            return generator
        loader = getattr(loader, "loader", None)
    return None


def random_states(*loaders):
    """A callback whose state, saved in every resume checkpoint, is every random stream a fit draws from:
    torch's (CPU and CUDA: dropout, noise, sampling), NumPy's, Python's and the loaders' shuffling
    generators. Restored before the resumed fit's first epoch, so the epochs after the checkpoint draw what
    they would have drawn had the fit never stopped: a resumed fit ends with the same weights as an
    uninterrupted one (tests/faults/test_resume.py, bit for bit on CPU)."""
    import random

    import lightning as L
    import numpy as np
    import torch

    generators = [g for g in (_generator(loader) for loader in loaders) if g is not None]

    class RandomStates(L.Callback):
        def state_dict(self) -> dict:
            # Plain types and tensors only: Lightning loads checkpoints with torch.load(weights_only=True).
            kind, keys, pos, has_gauss, cached = np.random.get_state()
            numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
            return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": list(random.getstate()),
                    # Only a process that uses CUDA has a CUDA stream to keep, and only its current device's:
                    # asking for every GPU's would start a context on each.
                    "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
                    "loaders": [g.get_state() for g in generators]}

        def load_state_dict(self, state: dict) -> None:
            torch.set_rng_state(state["torch"])
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            version, internal, gauss_next = state["python"]
            random.setstate((version, tuple(internal), gauss_next))
            if state["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state(state["cuda"][0])
            for generator, saved in zip(generators, state["loaders"]):
                generator.set_state(saved)

    return RandomStates()
