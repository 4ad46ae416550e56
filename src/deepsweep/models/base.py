"""The contract every family follows, so that tasks and stages never depend on a family."""

from __future__ import annotations

import torch
from torch import nn


class Family(nn.Module):
    """``encoder`` maps an input batch to flat features of size ``feature_dim``; ``head`` maps
    features to ``num_classes`` logits. Pretraining learns the encoder; fine-tuning loads it."""

    kind = "tensor"  # the kind of prepared data it reads; graph families say "graph"
    attends = False  # whether generate's attention weights over the source mean anything (evaluate's heatmap)
    convolutional = False  # whether it is built of convolutions (a fused array of them on a CPU is not worth it)
    encoder: nn.Module
    head: nn.Module
    feature_dim: int

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)
