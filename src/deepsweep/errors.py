"""Failures deepsweep reports as one line (no traceback unless ``--debug``). A leaf module: anything may
import it, it imports nothing of deepsweep."""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and what is allowed."""


class UnrankedMetric(ConfigError):
    """A job of an Optuna search finished without the metric the search optimizes: the search cannot go on."""


class NonFiniteError(RuntimeError):
    """A loss or metric became NaN or infinite: the run's numbers mean nothing from there on."""


class FolderInUse(RuntimeError):
    """Another live process writes the same run or output folder."""


class DataFileError(ValueError):
    """A data file that cannot be read as its format says: the message starts with the file (and line)."""


class DownloadError(RuntimeError):
    """A raw data file could not be fetched, or arrived with other bytes than its checksum says."""


class TrackingError(RuntimeError):
    """The MLflow tracking store failed: on its first request of a process, or while a sweep started or ended."""


class SweepFailed(RuntimeError):
    """Every job of a sweep failed: it has nothing to rank or compare (a sweep with some failed jobs has)."""


class Reported(SystemExit):
    """Carries one of the failures above through Hydra, which reports every Exception with a traceback (and
    turns a callback's into a warning): ``deepsweep run`` catches it and prints ``error`` as one line."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def check_finite(values: dict[str, float], epoch: int, step: int) -> None:
    """Stop fitting at the first NaN or infinite epoch value: every number after it would be noise, and a
    sweep must show the job as failed rather than rank it. Checked once per epoch, on values already on
    the host for logging, so it costs no extra device sync."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{name} = {value}" for name, value in bad.items())
        raise NonFiniteError(f"non-finite value at epoch {epoch}, step {step}: {shown} (lower the learning "
                             "rate, clip gradients with trainer.gradient_clip_val, or check the data)")
