"""Failures deepsweep reports as one line (no traceback unless ``--debug``). A leaf module: anything may
import it, it imports nothing of deepsweep."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and what is allowed."""


class NonFiniteError(RuntimeError):
    """A loss or metric became NaN or infinite: the run's numbers mean nothing from there on."""


class FolderInUse(RuntimeError):
    """Another live process writes the same run or output folder."""


class DataFileError(ValueError):
    """A data file that cannot be read as its format says: the message starts with the file (and line)."""


class DownloadError(RuntimeError):
    """A raw data file could not be fetched, or arrived with other bytes than its checksum says."""
