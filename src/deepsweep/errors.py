"""Failures deepsweep reports as one line (no traceback unless ``--debug``), beside ``config.ConfigError``."""

from __future__ import annotations


class NonFiniteError(RuntimeError):
    """A loss or metric became NaN or infinite: the run's numbers mean nothing from there on."""


class FolderInUse(RuntimeError):
    """Another live process writes the same run or output folder."""


class DataFileError(ValueError):
    """A data file that cannot be read as its format says: the message starts with the file (and line)."""
