"""How well predicted probabilities know what they do not know: calibration, predictive entropy, rejection.

Scores probabilities, whoever made them (a model, a Monte Carlo dropout average, an ensemble of runs), with
torch alone: the sweep report imports this (for its deep ensembles) without torchmetrics or Lightning."""

from __future__ import annotations

import torch


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each input's predicted class distribution, in nats: 0 when sure, log(k) when uniform."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): inputs binned by confidence (their top probability) into ``bins`` equal-width
    bins (k/bins, (k+1)/bins]; the mean over inputs of |accuracy - mean confidence| of their bin."""
    confidence, predicted = probs.double().max(dim=1)
    correct = (predicted == target).double()
    index = ((confidence * bins).ceil().long() - 1).clamp(0, bins - 1)
    gap = torch.zeros(bins, dtype=torch.double).index_add_(0, index, correct - confidence)
    return float(gap.abs().sum() / len(target))


def probability_metrics(probs: torch.Tensor, target: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """What predicted probabilities (a model's, a Monte Carlo average's, an ensemble's) score on labels:
    accuracy, ``loss`` (negative log-likelihood), ``ece`` and the mean predictive ``entropy``."""
    return {"accuracy": float((probs.argmax(dim=1) == target).double().mean()),
            "loss": float(torch.nn.functional.nll_loss(probs.double().clamp_min(1e-12).log(), target)),
            "ece": expected_calibration_error(probs, target, bins),
            "entropy": float(predictive_entropy(probs.double()).mean())}


def rejection_curve(probs: torch.Tensor, target: torch.Tensor, steps: int = 20) -> list[tuple[float, float]]:
    """Accuracy on the inputs kept when the most uncertain ones (highest predictive entropy) are rejected:
    (fraction rejected, accuracy of the rest) for fractions 0, 1/steps, ... < 1. A model whose uncertainty
    means something gains accuracy as it rejects more."""
    order = predictive_entropy(probs.double()).argsort(stable=True)  # most certain first
    correct = (probs.argmax(dim=1) == target)[order].double()
    n = len(target)
    return [(i / steps, float(correct[: max(1, n - (i * n) // steps)].mean())) for i in range(steps)]
