"""Segmentation: a class per pixel. The family's scores ``(N, classes, H, W)`` and the masks ``(N, H, W)`` are
read as one classification per pixel, so every option of the loss group applies per pixel (cross-entropy,
focal, ``loss=dice``, ...) and validation scores pixel accuracy, macro F1 (the mean Dice over classes) and
the mean intersection over union."""

from __future__ import annotations

import torch

from deepsweep.metrics import segmentation_metrics
from deepsweep.tasks.classify import ClassifyTask


def pixels(scores: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, H, W) scores and (N, H, W) masks as (N*H*W, K) scores and (N*H*W,) classes."""
    return scores.movedim(1, -1).flatten(0, -2), masks.flatten()


class SegmentTask(ClassifyTask):
    target = "mask"

    def logits_and_targets(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, masks = batch
        return pixels(self.model(x), masks)

    def epoch_scores(self, predicted: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = segmentation_metrics(predicted, target, self.model.num_classes)
        device = predicted.device  # on the device: a data-parallel fit reduces them across ranks
        return {name: torch.tensor(scores[key], device=device)
                for name, key in (("val/acc", "pixel_accuracy"), ("val/f1", "dice"), ("val/miou", "mean_iou"))}
