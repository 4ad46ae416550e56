"""MLP / DNN family."""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from deepsweep.models.base import Family
from deepsweep.nn.layers import Layers


class MLP(Family):
    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_dims: Sequence[int] = (128, 64),
        layers: Layers | None = None,
    ) -> None:
        super().__init__(tuple(input_shape), num_classes)
        if not hidden_dims:
            raise ValueError("model.hidden_dims: needs at least one hidden width, e.g. [128]")
        layers = layers or Layers()
        width = math.prod(input_shape)
        blocks: list[nn.Module] = [nn.Flatten()]
        for hidden in hidden_dims:
            blocks.append(layers.dense(width, hidden))
            width = hidden
        self.encoder = nn.Sequential(*blocks)
        self.feature_dim = width
        self.head = layers.linear(width, num_classes)


def dense_stack(model: Family, option: str) -> list[nn.Linear]:
    """The dense layers of an MLP's encoder, input side first: what layer-wise pretraining (DBN, stacked
    and tied autoencoders) works on. Other families have no such stack; ``option`` names the setting."""
    linears = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    if not isinstance(model, MLP) or not linears:
        raise ValueError(f"{option} works on the dense layer stack of model=mlp; other families have none "
                         f"(got {type(model).__name__})")
    return linears
