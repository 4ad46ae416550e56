"""deepsweep: a declarative experiment pipeline for the classic deep-learning families.

Importing the package is cheap on purpose: torch, Lightning and MLflow are imported by the stages
that need them, so config-only commands (help, validation, ``--cfg``) stay fast.
"""

__version__ = "0.1.0"
