"""deepsweep: a declarative experiment pipeline for the classic deep-learning families.

Importing the package is cheap on purpose: torch, Lightning and MLflow are imported by the stages
that need them, so config-only commands (help, validation, ``--cfg``) stay fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``deepsweep.run``, ``deepsweep.load_sweep`` and ``deepsweep.RunResult`` (``deepsweep.api``), imported on
    first use so that ``import deepsweep`` stays cheap."""
    if name in ("run", "load_sweep", "RunResult"):
        import importlib

        # Loaded by name: no stage runs the Python API, so it is not among the files a stage's dvc.yaml entry
        # depends on (provenance.stage_modules follows import statements only).
        return getattr(importlib.import_module("deepsweep.api"), name)
    raise AttributeError(f"module 'deepsweep' has no attribute {name!r}")
