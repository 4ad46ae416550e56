"""Fitting: the one path every model is trained by (``fit``), the trainer it builds, the callbacks it uses
(best weights, random states) and the resume checkpoints of interrupted fits."""

from deepsweep.training.fit import FitResult, build_trainer, fit, place_on_device, strategy

__all__ = ["FitResult", "build_trainer", "fit", "place_on_device", "strategy"]
