"""Sampling on a graph in CSC/CSR form, in plain torch: GraphSAGE neighbour sampling and random walks.

torch-geometric's NeighborLoader does the mini-batching (seed nodes first, relabelling, slicing node and
edge attributes); its sampling kernels live in pyg-lib or torch-sparse, compiled packages without wheels
for this torch. When neither is installed, PyG's sampler gets the kernel below (through
``deepsweep.internals.torch_neighbor_sampler``), so the loader, its batches and everything downstream are
PyG's own. Each hop is one vectorized draw over the whole frontier, not a Python loop over nodes.
"""

from __future__ import annotations

import torch



def _segments(pointer: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each node's slice ``pointer[n]:pointer[n+1]``, laid end to end: the owning position in
    ``nodes`` of every entry, the entry's index into the compressed arrays, and its offset in its slice."""
    start = pointer[nodes]
    degree = pointer[nodes + 1] - start
    owner = torch.repeat_interleave(torch.arange(len(nodes)), degree)
    offset = torch.arange(int(degree.sum())) - torch.repeat_interleave(degree.cumsum(0) - degree, degree)
    return owner, start[owner] + offset, offset


def sample_neighbors(colptr: torch.Tensor, row: torch.Tensor, seeds: torch.Tensor, fanouts: list[int]):
    """Directional multi-hop sampling as pyg-lib does it: from every node first reached at hop h-1, up to
    ``fanouts[h]`` of its in-neighbours (-1: all), uniformly without replacement. Nodes are numbered in
    the order they are reached, seeds first; a node reached twice is expanded once.

    Returns (node, row, col, edge, nodes per hop, edges per hop): sampled edge e goes from local node
    ``row[e]`` to local node ``col[e]`` and is entry ``edge[e]`` of the CSC arrays."""
    if seeds.unique().numel() != seeds.numel():
        raise ValueError("sample_neighbors: seed nodes must be distinct")
    local = torch.full((colptr.numel() - 1,), -1, dtype=torch.long)
    local[seeds] = torch.arange(len(seeds))
    nodes, frontier = [seeds], seeds
    rows, cols, edges = [], [], []
    nodes_per_hop, edges_per_hop = [len(seeds)], []
    for fanout in fanouts:
        owner, entry, offset = _segments(colptr, frontier)
        if fanout >= 0 and len(owner):
            # Random keys within each node's slice (owner is sorted): sorting keeps the slices in place
            # and shuffles each, so the first `fanout` of a slice are a uniform sample without replacement.
            order = (owner.double() + torch.rand(len(owner), dtype=torch.double)).argsort()
            keep = order[offset < fanout]
            owner, entry = owner[keep], entry[keep]
        neighbor = row[entry]
        new = neighbor[local[neighbor] < 0].unique()
        local[new] = torch.arange(len(new)) + sum(nodes_per_hop)
        nodes.append(new)
        rows.append(local[neighbor])
        cols.append(local[frontier[owner]])
        edges.append(entry)
        nodes_per_hop.append(len(new))
        edges_per_hop.append(len(entry))
        frontier = new
    return torch.cat(nodes), torch.cat(rows), torch.cat(cols), torch.cat(edges), nodes_per_hop, edges_per_hop


def neighbor_sampler(data, num_neighbors: list[int]):
    """PyG's own sampler where pyg-lib or torch-sparse is installed, the plain-torch one otherwise."""
    import torch_geometric.typing as pyg_typing
    from torch_geometric.sampler import NeighborSampler

    from deepsweep.internals import torch_neighbor_sampler

    if pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE:
        return NeighborSampler(data, num_neighbors)
    return torch_neighbor_sampler(sample_neighbors)(data, num_neighbors)


def random_walks(rowptr: torch.Tensor, col: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """Uniform random walks (DeepWalk, GraphSAGE's unsupervised loss) over a CSR graph: one row of
    ``length + 1`` nodes per start node. A walk that reaches a node without out-edges stays there."""
    walk = [start]
    current = start
    for _ in range(length):
        degree = rowptr[current + 1] - rowptr[current]
        step = (torch.rand(len(current), device=current.device) * degree).long()
        nxt = col[(rowptr[current] + step).clamp(max=max(len(col) - 1, 0))] if len(col) else current
        current = torch.where(degree > 0, nxt, current)
        walk.append(current)
    return torch.stack(walk, dim=1)
