"""How the classification tasks read a batch, without Lightning: shared by ``tasks.classify`` (training) and
the evaluate stage (which scores a saved model and needs no trainer)."""

from __future__ import annotations

import torch


def outputs_and_targets(module: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``module``'s outputs and the labels of a batch. A tensor batch is ``(x, y)``; a graph batch is
    ``(x, edge_index, y, mask)``: the module sees the whole graph, the outputs and labels are the split's nodes."""
    if len(batch) == 4:
        x, edge_index, y, mask = batch
        return module(x, edge_index)[mask], y[mask]
    x, y = batch
    return module(x), y
