"""Held-out edges for link prediction (Kipf & Welling 2016, "Variational Graph Auto-Encoders", section 3).

The graph's undirected edges are split at random into training, validation and test edges (85/5/10 in the
paper). Message passing and the reconstruction loss see the training edges only; the validation and test
edges are scored against as many node pairs that are no edge of the whole graph. A pure function of the
graph and the seed: a resumed or repeated run holds out the same edges."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinkSplit:
    """``train_edge_index``: the training edges, both directions (what the encoder propagates over);
    ``{val,test}_{pos,neg}``: 2 x k node pairs, one direction each (``neg``: pairs that are no edge)."""

    train_edge_index: torch.Tensor
    val_pos: torch.Tensor
    val_neg: torch.Tensor
    test_pos: torch.Tensor
    test_neg: torch.Tensor

    def to(self, device: torch.device | str) -> "LinkSplit":
        return LinkSplit(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def undirected_edges(edge_index: torch.Tensor) -> torch.Tensor:
    """Each edge once as (low, high), self-loops dropped, sorted: 2 x m."""
    low, high = edge_index.min(dim=0).values, edge_index.max(dim=0).values
    keep = low != high
    n = int(edge_index.max()) + 1 if edge_index.numel() else 0
    keys = torch.unique(low[keep] * n + high[keep])
    return torch.stack([keys // max(n, 1), keys % max(n, 1)])


def split_edges(edge_index: torch.Tensor, num_nodes: int, val_fraction: float, test_fraction: float,
                seed: int) -> LinkSplit:
    """``floor(fraction * m)`` of the m undirected edges for validation and for test (the paper's
    ``mask_test_edges``), the rest for training; as many negative pairs as positives for each, drawn
    uniformly among the pairs that are no edge of the whole graph, validation and test negatives disjoint."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"link split: val_fraction {val_fraction} and test_fraction {test_fraction} must be "
                         "in [0, 1) with a sum below 1")
    edges = undirected_edges(edge_index.cpu())
    m = edges.shape[1]
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(m, generator=generator)
    n_val, n_test = int(val_fraction * m), int(test_fraction * m)
    val, test, train = (edges[:, order[:n_val]], edges[:, order[n_val:n_val + n_test]],
                        edges[:, order[n_val + n_test:]])
    negatives = _non_edges(edges, num_nodes, n_val + n_test, generator)
    return LinkSplit(torch.cat([train, train.flip(0)], dim=1), val, negatives[:, :n_val], test,
                     negatives[:, n_val:])


def _non_edges(edges: torch.Tensor, num_nodes: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct pairs (low, high), low != high, none an edge: uniform over such pairs (rejection)."""
    taken = edges[0] * num_nodes + edges[1]
    possible = num_nodes * (num_nodes - 1) // 2 - edges.shape[1]
    if count > possible:
        raise ValueError(f"link split: {count} negative pairs asked of a graph with {possible} non-edges")
    found = torch.empty(0, dtype=torch.long)
    while len(found) < count:
        a = torch.randint(num_nodes, (2 * count + 16,), generator=generator)
        b = torch.randint(num_nodes, (2 * count + 16,), generator=generator)
        keys = torch.minimum(a, b) * num_nodes + torch.maximum(a, b)
        keys = keys[(a != b) & ~torch.isin(keys, taken) & ~torch.isin(keys, found)]
        # First occurrence of each key, in draw order: the pairs stay a uniform random sequence.
        unique, inverse = torch.unique(keys, return_inverse=True)
        first = torch.full((len(unique),), len(keys), dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(len(keys)), reduce="amin")
        found = torch.cat([found, keys[first.sort().values]])
    found = found[:count]
    return torch.stack([found // num_nodes, found % num_nodes])
