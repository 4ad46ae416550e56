"""Prepared splits on disk, and a batch loader for tensors that already sit in memory.

A torch DataLoader over a TensorDataset indexes one sample at a time and collates them back into a
batch: for the small, in-memory datasets deepsweep runs, that costs more than the model. The loader
here slices whole batches from the tensors instead (one gather per batch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from deepsweep.utils.io import read_json

SPLITS = ("train", "val", "test")
GRAPH_FILE = "graph.pt"


@dataclass
class TensorSplit:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "TensorSplit":
        return TensorSplit(self.x[index], self.y[index])


@dataclass
class PreparedData:
    """What the prepare stage wrote for a tensor dataset: ``{train,val,test}.pt`` plus ``meta.json``.

    Stages only use ``num_classes``, ``input_shape`` and ``loader(split, ...)``, which graph data
    (:class:`GraphData`) offers too, so no stage branches on the kind of data."""

    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    meta: dict

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "tensor")  # "tensor" (images, vectors) or "sequence"

    @property
    def target(self) -> str:
        return self.meta.get("target", "class")  # "class" per input, "mask" (a class per pixel) or "tokens"

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
               label_fraction: float = 1.0, exclude_class: int | None = None,
               num_neighbors: list[int] | None = None, all_nodes: bool = False, augment=None) -> "InMemoryLoader":
        """Batches of a split; ``num_neighbors`` and ``all_nodes`` concern graphs only (see GraphData);
        ``augment`` (``data.augment.Augment``): transform each batch, for a training loader."""
        data = getattr(self, split)
        if exclude_class is not None:  # anomaly detection: learn what the other classes look like
            data = data.subset((data.y != exclude_class).nonzero().flatten())
        if label_fraction != 1.0:
            data = label_subset(data, label_fraction, seed)
        return InMemoryLoader(data, batch_size or len(data), shuffle=shuffle, seed=seed, augment=augment)

    @classmethod
    def load(cls, folder: str | Path) -> "PreparedData | GraphData":
        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise FileNotFoundError(f"{folder}: prepared data missing meta.json; run the prepare stage first")
        meta = read_json(folder / "meta.json")
        if meta.get("kind") == "graph":
            return GraphData(torch.load(folder / GRAPH_FILE, weights_only=True), meta)
        missing = [f"{s}.pt" for s in SPLITS if not (folder / f"{s}.pt").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder}: prepared data incomplete (missing {', '.join(missing)}); "
                "run the prepare stage first (dvc repro prepare)"
            )
        splits = {s: TensorSplit(**torch.load(folder / f"{s}.pt", weights_only=True)) for s in SPLITS}
        return cls(**splits, meta=meta)


@dataclass
class GraphData:
    """One graph with train/val/test node masks.

    Transductive (the default): every split sees the whole graph, its mask names the nodes scored.
    Inductive (``meta["inductive"]``, from ``data.inductive``): training sees the graph without the
    validation and test nodes, validation the graph without the test nodes, test the whole graph, so
    no unseen node's features or edges reach training (GraphSAGE's setting, Hamilton et al. 2017)."""

    graph: dict
    meta: dict
    kind = "graph"
    target = "class"

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    @property
    def inductive(self) -> bool:
        return bool(self.meta.get("inductive", False))

    def mask(self, split: str, label_fraction: float = 1.0, seed: int = 0) -> torch.Tensor:
        mask = self.graph[f"{split}_mask"]
        if label_fraction == 1.0:
            return mask
        nodes = mask.nonzero().flatten()
        kept = label_subset(TensorSplit(nodes, self.graph["y"][nodes]), label_fraction, seed).x
        subset = torch.zeros_like(mask)
        subset[kept] = True
        return subset

    def view(self, split: str, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x, edge_index, y, mask) of the graph ``split`` may see: whole, or inductively cut."""
        x, edge_index, y = self.graph["x"], self.graph["edge_index"], self.graph["y"]
        unseen = {"train": ("val", "test"), "val": ("test",), "test": ()}[split] if self.inductive else ()
        if unseen:
            from torch_geometric.utils import subgraph

            keep = ~torch.stack([self.graph[f"{s}_mask"] for s in unseen]).any(0)
            edge_index, _ = subgraph(keep, edge_index, relabel_nodes=True, num_nodes=len(y))
            x, y, mask = x[keep], y[keep], mask[keep]
        # Edges sorted by target node: the LSTM aggregator reads each node's neighbours as one sequence.
        return x, edge_index[:, edge_index[1].argsort(stable=True)], y, mask

    def loader(self, split: str, batch_size: int = 0, shuffle: bool = False, seed: int = 0,
               label_fraction: float = 1.0, exclude_class: int | None = None,
               num_neighbors: list[int] | None = None, all_nodes: bool = False, augment=None):
        """Full batch, or with ``batch_size`` and ``num_neighbors`` GraphSAGE mini-batches: ``batch_size``
        seed nodes of the split (``all_nodes``: of the split's whole graph, for label-free pretraining)
        and their sampled neighbourhoods, ``num_neighbors[h]`` per node at hop h."""
        if exclude_class is not None:
            raise ValueError("pretrain.anomaly_class: anomaly detection works on tensor data, not on a graph")
        view = self.view(split, self.mask(split, label_fraction, seed))
        if batch_size and num_neighbors:
            return SampledGraphLoader(view, batch_size, list(num_neighbors), shuffle, all_nodes)
        return FullGraphLoader(view)


class FullGraphLoader:
    """Full-batch training: one (x, edge_index, y, mask) batch per epoch."""

    def __init__(self, view: tuple[torch.Tensor, ...]) -> None:
        self.batch = view

    def __len__(self) -> int:
        return 1

    @property
    def num_labels(self) -> int:
        return int(self.batch[3].sum())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        yield self.batch

    def to(self, device: torch.device) -> "FullGraphLoader":
        """The graph moved to ``device`` once, instead of Lightning copying it there every step."""
        if fits_on(device, sum(t.nbytes for t in self.batch)):
            self.batch = tuple(t.to(device) for t in self.batch)
        return self


class SampledGraphLoader:
    """torch-geometric's NeighborLoader, its batches as (x, edge_index, y, mask) with the mask on the
    seed nodes (the first ``batch_size`` of each sampled subgraph), the layout the graph tasks read."""

    def __init__(self, view: tuple[torch.Tensor, ...], batch_size: int, num_neighbors: list[int],
                 shuffle: bool, all_nodes: bool) -> None:
        from torch_geometric.data import Data
        from torch_geometric.loader import NeighborLoader

        from deepsweep.data.sampling import neighbor_sampler

        x, edge_index, y, mask = view
        graph = Data(x=x, edge_index=edge_index, y=y)
        seeds = torch.arange(len(y)) if all_nodes else mask.nonzero().flatten()
        self.num_labels = len(seeds)
        self.loader = NeighborLoader(graph, num_neighbors, input_nodes=seeds, batch_size=batch_size,
                                     shuffle=shuffle, neighbor_sampler=neighbor_sampler(graph, num_neighbors))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for batch in self.loader:
            order = batch.edge_index[1].argsort(stable=True)
            mask = torch.zeros(batch.num_nodes, dtype=torch.bool)
            mask[: batch.batch_size] = True
            yield batch.x, batch.edge_index[:, order], batch.y, mask

    def to(self, device: torch.device) -> "SampledGraphLoader":
        return self  # sampled on the CPU; Lightning moves each (small) sampled batch


class Chunked:
    """Lists of up to ``k`` consecutive batches of ``loader``: one call of a task's step takes a list
    (a ``tasks.common.LossTask`` with ``steps_per_call``), so Lightning's per-call work is paid once per ``k``
    batches."""

    def __init__(self, loader, k: int) -> None:
        self.loader, self.k = loader, k

    def __len__(self) -> int:
        return -(-len(self.loader) // self.k)

    @property
    def num_labels(self) -> int:
        return self.loader.num_labels

    def to(self, device: torch.device) -> "Chunked":
        self.loader = self.loader.to(device)
        return self

    def __iter__(self) -> Iterator[list]:
        chunk = []
        for batch in self.loader:
            chunk.append(batch)
            if len(chunk) == self.k:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether ``nbytes`` of data may live on ``device`` for a whole fit: at most a quarter of its free
    memory on a GPU, the rest left to the model, its activations and the optimizer."""
    if device.type != "cuda":
        return device.type != "cpu"  # another accelerator (mps): no free-memory query, try it
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 4


def label_subset(split: TensorSplit, fraction: float, seed: int) -> TensorSplit:
    """A stratified ``fraction`` of a split (at least one example per class); a plain random ``fraction`` where
    each example's label is more than a class (a mask, a token sequence)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"finetune.label_fraction: must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return split
    generator = torch.Generator().manual_seed(seed)
    if split.y.dim() > 1:
        n = max(1, round(fraction * len(split)))
        return split.subset(torch.randperm(len(split), generator=generator)[:n].sort().values)
    keep = []
    for label in split.y.unique():
        idx = (split.y == label).nonzero().flatten()
        n = max(1, round(fraction * len(idx)))
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:n]])
    return split.subset(torch.cat(keep).sort().values)


class InMemoryLoader:
    """Iterate (x, y) batches over in-memory tensors; reshuffled each epoch when ``shuffle``."""

    def __init__(self, split: TensorSplit, batch_size: int, shuffle: bool = False, seed: int = 0,
                 augment=None) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size: must be >= 1, got {batch_size}")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.augment = augment
        # A stream of its own (derived from the seed, not the next seed's shuffle stream): augmenting
        # leaves the shuffle order as it was.
        self.augment_generator = torch.Generator().manual_seed((seed * 1_000_003 + 0x5EED) % 2**63)

    def __len__(self) -> int:
        return -(-self._shard_size() // self.batch_size)

    def to(self, device: torch.device) -> "InMemoryLoader":
        """The split moved to ``device`` once, so batches are sliced there: on a GPU, a copy of every
        batch from host memory costs more than a small model's step (the same draws: the shuffle
        order still comes from the CPU generator)."""
        if fits_on(device, self.split.x.nbytes + self.split.y.nbytes):
            self.split = TensorSplit(self.split.x.to(device), self.split.y.to(device))
        return self

    @property
    def num_labels(self) -> int:
        return len(self.split)

    @staticmethod
    def _rank_and_world() -> tuple[int, int]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _shard_size(self) -> int:
        return -(-len(self.split) // self._rank_and_world()[1])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.split.x, self.split.y
        if not self.shuffle and self._rank_and_world()[1] == 1:
            for start in range(0, len(y), self.batch_size):
                yield self._augmented(x[start : start + self.batch_size]), y[start : start + self.batch_size]
            return
        order = self.epoch_order().to(x.device)  # one copy per epoch, not one index copy per batch
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self._augmented(x[index]), y[index]

    def epoch_order(self) -> torch.Tensor:
        """The sample indices of the next epoch's batches, in order (this rank's share), drawn from the loader's
        own generator as iterating the epoch draws them (a fused array gathers its members' batches at once)."""
        rank, world = self._rank_and_world()
        n = len(self.split.y)
        # Every rank draws the same permutation (same seed) and takes its own equal share, wrapping
        # around as DistributedSampler does: DDP ranks must see the same number of batches.
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if world > 1:
            order = order.repeat(2)[: self._shard_size() * world][rank::world]
        return order

    def _augmented(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.augment is None else self.augment(x, self.augment_generator)
