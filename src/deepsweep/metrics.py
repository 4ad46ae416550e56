"""Held-out classification metrics (torchmetrics), ROC points and confusion data for DVC plots."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_roc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """accuracy, macro F1 and ROC-AUC (binary AUC for two classes, one-vs-rest macro AUC otherwise)."""
    probs = logits.softmax(dim=1)
    preds = probs.argmax(dim=1)
    if num_classes == 2:
        auc = binary_auroc(probs[:, 1], target)
    else:
        auc = multiclass_auroc(probs, target, num_classes=num_classes, average="macro")
    return {
        "accuracy": float(multiclass_accuracy(preds, target, num_classes=num_classes, average="micro")),
        "f1_macro": float(multiclass_f1_score(preds, target, num_classes=num_classes, average="macro")),
        "roc_auc": float(auc),
        "loss": float(torch.nn.functional.cross_entropy(logits, target)),
    }


def roc_points(logits: torch.Tensor, target: torch.Tensor, num_classes: int, bins: int = 201) -> dict[str, torch.Tensor]:
    """One ROC curve: the positive class's for two classes, else the micro-average over one-vs-rest.

    Thresholds are binned so the curve has a fixed number of points whatever the test-set size."""
    probs = logits.softmax(dim=1)
    if num_classes == 2:
        scores, truth = probs[:, 1], target
    else:
        scores = probs.flatten()
        truth = torch.nn.functional.one_hot(target, num_classes).flatten()
    fpr, tpr, thresholds = binary_roc(scores, truth, thresholds=bins)
    return {"fpr": fpr, "tpr": tpr, "threshold": thresholds}


def per_class_roc(logits: torch.Tensor, target: torch.Tensor, num_classes: int, bins: int = 201):
    probs = logits.softmax(dim=1)
    classes = [1] if num_classes == 2 else range(num_classes)
    for c in classes:
        fpr, tpr, _ = binary_roc(probs[:, c], (target == c).long(), thresholds=bins)
        yield c, fpr, tpr


def confusion_matrix(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    return multiclass_confusion_matrix(logits.argmax(dim=1), target, num_classes=num_classes)
