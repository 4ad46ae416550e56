"""The held-out metrics evaluate writes are torchmetrics' and scikit-learn's values, computed without importing
either in the evaluate stage (tests/import_watch.py holds that line)."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.functional.classification import (
    binary_roc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from deepsweep.metrics import anomaly_roc_auc, binary_roc_auc, classification_metrics, confusion_matrix, roc_points


@pytest.mark.parametrize("num_classes, n, drop_class", [(2, 50, None), (5, 200, None), (5, 40, 3), (10, 300, None)])
def test_classification_metrics_equal_torchmetrics(num_classes, n, drop_class):
    generator = torch.Generator().manual_seed(num_classes + n)
    target = torch.randint(num_classes, (n,), generator=generator)
    if drop_class is not None:  # a class absent from the truth (a small test split)
        target[target == drop_class] = (drop_class + 1) % num_classes
    logits = torch.randn(n, num_classes, generator=generator) + 2.0 * torch.nn.functional.one_hot(target, num_classes)
    logits[:5] = logits[5]  # ties among scores
    ours = classification_metrics(logits, target, num_classes)
    probs, preds = logits.softmax(1), logits.argmax(1)
    assert ours["accuracy"] == pytest.approx(float(multiclass_accuracy(preds, target, num_classes, average="micro")))
    assert ours["f1_macro"] == pytest.approx(float(multiclass_f1_score(preds, target, num_classes, average="macro")),
                                             abs=1e-6)
    if num_classes == 2:
        expected_auc = roc_auc_score(target.numpy(), probs[:, 1].double().numpy())
    else:
        expected_auc = float(multiclass_auroc(probs, target, num_classes, average="macro"))
    assert ours["roc_auc"] == pytest.approx(expected_auc, abs=1e-5)
    assert torch.equal(confusion_matrix(logits, target, num_classes),
                       multiclass_confusion_matrix(preds, target, num_classes))
    points = roc_points(logits, target, num_classes)
    scores, truth = ((probs[:, 1], target) if num_classes == 2 else
                     (probs.flatten(), torch.nn.functional.one_hot(target, num_classes).flatten()))
    fpr, tpr, thresholds = binary_roc(scores, truth, thresholds=201)
    assert torch.allclose(points["fpr"], fpr) and torch.allclose(points["tpr"], tpr)
    assert torch.allclose(points["threshold"], thresholds)


def test_roc_auc_by_hand_and_for_scores_of_any_range():
    # Positives 3 and 1, negatives 2 and 1: pairs (3>2), (3>1), (1<2), (1=1 counts half) -> 2.5 / 4.
    assert binary_roc_auc(torch.tensor([3.0, 1.0, 2.0, 1.0]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.625)
    scores = torch.tensor([1e4, 5e4, 2e4, 9e4])  # a free energy: far outside [0, 1]
    assert anomaly_roc_auc(scores, torch.tensor([False, True, False, True])) == 1.0
    assert binary_roc_auc(torch.rand(4), torch.zeros(4)) == 0.0  # no positive: torchmetrics' 0
