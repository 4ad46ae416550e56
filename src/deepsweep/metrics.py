"""Held-out classification metrics, ROC points and confusion data for DVC plots, in plain torch.

Not torchmetrics: importing it costs about 1.9 s (it pulls in scipy and its plotting helpers), most of an
evaluate stage's start-up for five formulas (``python -X importtime -m deepsweep stage evaluate``). The
values are torchmetrics' own, its zero-division conventions included (tests/test_metrics.py compares them)."""

from __future__ import annotations

import torch


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return numerator / torch.where(denominator == 0, torch.ones_like(denominator), denominator)


def binary_roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Exact ROC-AUC: the chance a positive outscores a negative, ties counting half (Mann-Whitney U from
    average ranks, the trapezoid under the exact ROC curve). 0 where the truth lacks positives or negatives,
    as torchmetrics returns."""
    scores, positive = scores.double().flatten(), positive.bool().flatten()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.0
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    average_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2  # 1-based, ties share their mean
    rank_sum = float(average_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def confusion_matrix(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts, rows the actual class, columns the predicted one."""
    predicted = logits.argmax(dim=1)
    return torch.bincount(target.long() * num_classes + predicted, minlength=num_classes ** 2).view(num_classes,
                                                                                                  num_classes)


def macro_f1(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of 2TP / (2TP + FP + FN); a class that is neither in the truth nor predicted is left
    out of the mean (torchmetrics' convention)."""
    table = torch.bincount(target.long() * num_classes + predicted.long(), minlength=num_classes ** 2)
    table = table.view(num_classes, num_classes).double()
    tp = table.diag()
    fp, fn = table.sum(0) - tp, table.sum(1) - tp
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)
    counted = (tp + fp + fn) > 0
    return float(f1[counted].mean()) if counted.any() else 0.0


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """accuracy, macro F1 and ROC-AUC (binary AUC for two classes, one-vs-rest macro AUC otherwise)."""
    probs = logits.softmax(dim=1)
    preds = probs.argmax(dim=1)
    if num_classes == 2:
        auc = binary_roc_auc(probs[:, 1], target == 1)
    else:
        auc = sum(binary_roc_auc(probs[:, c], target == c) for c in range(num_classes)) / num_classes
    return {
        "accuracy": float((preds == target).double().mean()),
        "f1_macro": macro_f1(preds, target, num_classes),
        "roc_auc": float(auc),
        "loss": float(torch.nn.functional.cross_entropy(logits, target)),
    }


def binned_roc(scores: torch.Tensor, positive: torch.Tensor, bins: int = 201) -> tuple[torch.Tensor, ...]:
    """(fpr, tpr, thresholds) at ``bins`` thresholds evenly over [0, 1], highest threshold first; an input
    counts as positive at a threshold its score reaches. A curve of fixed length whatever the test set."""
    thresholds = torch.linspace(0, 1, bins, dtype=scores.dtype)
    positive = positive.bool()
    above = scores.unsqueeze(0) >= thresholds.unsqueeze(1)  # bins x inputs
    tps = (above & positive).sum(1).double()
    fps = (above & ~positive).sum(1).double()
    tpr = _safe_divide(tps, torch.full_like(tps, float(positive.sum())))
    fpr = _safe_divide(fps, torch.full_like(fps, float((~positive).sum())))
    return fpr.flip(0).float(), tpr.flip(0).float(), thresholds.flip(0)


def roc_points(logits: torch.Tensor, target: torch.Tensor, num_classes: int, bins: int = 201) -> dict[str, torch.Tensor]:
    """One ROC curve: the positive class's for two classes, else the micro-average over one-vs-rest.

    Thresholds are binned so the curve has a fixed number of points whatever the test-set size."""
    probs = logits.softmax(dim=1)
    if num_classes == 2:
        scores, truth = probs[:, 1], target == 1
    else:
        scores = probs.flatten()
        truth = torch.nn.functional.one_hot(target, num_classes).flatten().bool()
    fpr, tpr, thresholds = binned_roc(scores, truth, bins)
    return {"fpr": fpr, "tpr": tpr, "threshold": thresholds}


def per_class_roc(logits: torch.Tensor, target: torch.Tensor, num_classes: int, bins: int = 201):
    probs = logits.softmax(dim=1)
    classes = [1] if num_classes == 2 else range(num_classes)
    for c in classes:
        fpr, tpr, _ = binned_roc(probs[:, c], target == c, bins)
        yield c, fpr, tpr


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                 num_classes: int, seed: int = 0) -> dict[str, float]:
    """Accuracy, macro F1 and ROC-AUC of a logistic regression on frozen features: how linearly separable
    a (pre)trained encoder leaves the classes, comparable across every pretraining method and none."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_test, y_test) = train, test
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(x_train.double().numpy(), y_train.numpy())
    probs = torch.zeros(len(y_test), num_classes, dtype=torch.float64)
    # Classes missing from the probe's training labels keep probability 0.
    probs[:, torch.as_tensor(probe.classes_)] = torch.from_numpy(probe.predict_proba(x_test.double().numpy()))
    metrics = classification_metrics(probs.clamp_min(1e-12).log().float(), y_test, num_classes)
    metrics.pop("loss")
    return {f"probe_{k}": v for k, v in metrics.items()}


def anomaly_roc_auc(scores: torch.Tensor, is_anomaly: torch.Tensor) -> float:
    """ROC-AUC of a per-input anomaly score (higher = more anomalous) against the true anomalies: scores of
    any range (a VAE's -ELBO, an RBM's free energy), ranked as they are."""
    return binary_roc_auc(scores, is_anomaly)


def matched_accuracy(categories: torch.Tensor, target: torch.Tensor, num_categories: int, num_classes: int) -> float:
    """Accuracy of categories found without labels (clusters, InfoGAN's code) after the best one-to-one
    matching of categories to classes (Hungarian algorithm on the contingency table): the usual score of
    unsupervised classification. Unmatched categories count as wrong."""
    from scipy.optimize import linear_sum_assignment

    table = torch.zeros(num_categories, num_classes, dtype=torch.long)
    table.index_put_((categories.long(), target.long()), torch.ones_like(target, dtype=torch.long), accumulate=True)
    rows, cols = linear_sum_assignment(table.numpy(), maximize=True)
    return float(table[rows, cols].sum()) / len(target)


def link_metrics(pos: torch.Tensor, neg: torch.Tensor) -> dict[str, float]:
    """Link prediction scores (Kipf & Welling 2016): ROC-AUC and average precision of the edge probabilities of
    held-out edges (``pos``) against as many non-edges (``neg``)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).numpy()
    scores = torch.cat([pos, neg]).double().numpy()
    return {"link_roc_auc": float(roc_auc_score(target, scores)),
            "link_average_precision": float(average_precision_score(target, scores))}


def mean_average_distance(embedding: torch.Tensor) -> float:
    """MAD (Chen et al., 2020): the mean cosine distance between the embeddings of every two distinct nodes.
    It falls towards 0 as a deep GNN over-smooths (every node's embedding alike). Computed in O(N d) from
    sum over i != j of cos(x_i, x_j) = |sum_i u_i|^2 - sum_i |u_i|^2 with u_i = x_i / |x_i|, not from the
    N x N matrix of distances (55 MB for Cora's 2,708 nodes)."""
    units = torch.nn.functional.normalize(embedding.detach().double(), dim=1)
    n = len(units)
    if n < 2:
        return 0.0
    similarity = (units.sum(dim=0).square().sum() - units.square().sum()) / (n * (n - 1))
    return float(1.0 - similarity)


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float, within: float = 3.0,
                  min_share: float = 0.008) -> dict[str, float]:
    """How a generator's samples cover a mixture of Gaussians (the measure of Srivastava et al. 2017, VEEGAN,
    on the ring of 8): a sample is *high quality* when it lies within ``within`` standard deviations of its
    nearest centre; a mode is *covered* when at least ``min_share`` of the samples are high-quality samples of
    it (VEEGAN: 20 of 2,500). Returns ``modes_covered`` (a count) and ``high_quality`` (a fraction)."""
    distance, nearest = torch.cdist(samples.double(), centers.double()).min(dim=1)
    good = distance <= within * std
    per_mode = torch.bincount(nearest[good], minlength=len(centers))
    return {"modes_covered": float((per_mode >= min_share * len(samples)).sum()),
            "high_quality": float(good.double().mean())}


def class_coverage(predicted: torch.Tensor, num_classes: int, min_share: float = 0.01) -> dict[str, float]:
    """How a classifier labels generated samples: ``classes_covered``, the classes it gives at least
    ``min_share`` of them, and ``class_kl``, the KL divergence (nats) of the label shares from uniform
    (0 when every class is as common, log K when all samples get one label). Mode collapse lowers the first and
    raises the second."""
    shares = torch.bincount(predicted, minlength=num_classes).double() / len(predicted)
    present = shares[shares > 0]
    return {"classes_covered": float((shares >= min_share).sum()),
            "class_kl": float((present * (present * num_classes).log()).sum())}


def segmentation_metrics(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Per-pixel scores of predicted classes against true ones (any shape, compared element by element), over
    every pixel of the split at once: ``pixel_accuracy``; ``mean_iou``, the mean over classes of TP / (TP + FP
    + FN); ``dice``, the mean over classes of 2TP / (2TP + FP + FN). A class neither present nor predicted is
    left out of both means; ``iou/<class>`` gives each class's IoU (0 where left out)."""
    predicted, target = predicted.flatten().long(), target.flatten().long()
    table = torch.bincount(target * num_classes + predicted, minlength=num_classes ** 2).view(num_classes, num_classes)
    table = table.double()
    tp = table.diag()
    fp, fn = table.sum(0) - tp, table.sum(1) - tp
    counted = (tp + fp + fn) > 0
    iou = _safe_divide(tp, tp + fp + fn)
    dice = _safe_divide(2 * tp, 2 * tp + fp + fn)
    scores = {"pixel_accuracy": float(tp.sum() / table.sum().clamp(min=1)),
              "mean_iou": float(iou[counted].mean()) if counted.any() else 0.0,
              "dice": float(dice[counted].mean()) if counted.any() else 0.0}
    scores.update({f"iou/{c}": float(iou[c]) for c in range(num_classes)})
    return scores


def until_eos(tokens: torch.Tensor) -> torch.Tensor:
    """A mask of the positions up to and including each row's first <eos> (every position where none)."""
    from deepsweep.data.sequences import EOS_ID

    is_eos = (tokens == EOS_ID).long()
    return (is_eos.cumsum(dim=1) - is_eos) == 0


def sequence_metrics(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Greedy outputs (N, T') against targets (N, T) ending in <eos> and padded with 0: ``token_accuracy``, the
    share of target tokens (<eos> included, padding not) predicted at their position; ``exact_match``, the
    share of targets predicted whole (up to and including <eos>). Whatever follows a prediction's first <eos>
    counts as padding."""
    steps = target.shape[1]
    if predicted.shape[1] < steps:
        predicted = torch.nn.functional.pad(predicted, (0, steps - predicted.shape[1]))
    predicted = predicted[:, :steps] * until_eos(predicted[:, :steps])
    real = target != 0
    right = (predicted == target) & real
    whole = (right | ~real).all(dim=1)
    return {"token_accuracy": float(right.sum() / real.sum().clamp(min=1)), "exact_match": float(whole.double().mean())}
