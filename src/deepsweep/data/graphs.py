"""Graph data sources (torch-geometric): Cora and CiteSeer with the Planetoid public split, and Zachary's karate
club.

Planetoid reads the raw files from ``root`` (fetched by ``data.downloads`` when missing; copied to a scratch
folder first, so PyG's processed/ cache never lands beside them), and KarateClub ships inside torch-geometric.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from deepsweep import paths

PLANETOID_FILES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def graph_record(data, class_names: list[str], inductive: bool) -> tuple[dict[str, torch.Tensor], dict]:
    graph = {
        "x": data.x.float(),
        "edge_index": data.edge_index,
        "y": data.y,
        "train_mask": data.train_mask,
        "val_mask": data.val_mask,
        "test_mask": data.test_mask,
    }
    meta = {
        "kind": "graph",
        "num_classes": len(class_names),
        "class_names": class_names,
        "input_shape": [int(data.x.shape[1])],
        "sizes": {s: int(graph[f"{s}_mask"].sum()) for s in ("train", "val", "test")},
        "num_nodes": int(data.num_nodes),
        "num_edges": int(data.edge_index.shape[1]),
        "inductive": inductive,
    }
    return graph, meta


@dataclass
class Planetoid:
    """Cora / CiteSeer / PubMed in the Planetoid format, with the public split (Yang et al. 2016)."""

    kind = "graph"
    root: str = "data/planetoid"
    name_in_source: str = "Cora"
    split: str = "public"
    normalize_features: bool = True
    inductive: bool = False  # training never sees the validation and test nodes (see GraphData)
    batch_size: int = 0  # full batch: every epoch is one step over the whole graph
    num_neighbors: list[int] | None = None  # per-hop fan-outs of GraphSAGE mini-batches (batch_size > 0)

    def raw_dir(self) -> Path:
        raw = paths.resolve(self.root) / self.name_in_source / "raw"
        names = [f"ind.{self.name_in_source.lower()}.{f}" for f in PLANETOID_FILES]
        missing = [n for n in names if not (raw / n).is_file()]
        if missing:
            raise FileNotFoundError(f"data.root: {raw} lacks the Planetoid file(s) {', '.join(missing)}")
        return raw

    def load(self):
        from torch_geometric.datasets import Planetoid as PygPlanetoid

        from deepsweep.errors import DataFileError

        raw = self.raw_dir()
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copytree(raw, Path(scratch) / self.name_in_source / "raw")
            try:
                dataset = PygPlanetoid(scratch, self.name_in_source, split=self.split)
            except Exception as exc:  # pickle, numpy or scipy errors from a corrupt file: which one, PyG does not say
                raise DataFileError(f"{raw}: a Planetoid file cannot be read ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:200]}); fetch the files again") from None
            data = dataset[0]
        if self.normalize_features:
            # Row-normalize the bag-of-words features, as Kipf & Welling and PyG's examples do.
            data.x = data.x / data.x.sum(dim=1, keepdim=True).clamp(min=1)
        return graph_record(data, [str(c) for c in range(dataset.num_classes)], self.inductive)


@dataclass
class Karate:
    """Zachary's karate club (34 members, 4 communities): one labelled node per community for training;
    the other nodes are split in half, stratified, for validation and test."""

    kind = "graph"
    split_seed: int = 0
    inductive: bool = False
    batch_size: int = 0
    num_neighbors: list[int] | None = None

    def load(self):
        from torch_geometric.datasets import KarateClub

        data = KarateClub()[0]
        rest = (~data.train_mask).nonzero().flatten()
        generator = torch.Generator().manual_seed(self.split_seed)
        rest = rest[torch.randperm(len(rest), generator=generator)]
        order = rest[data.y[rest].argsort(stable=True)]  # class by class, shuffled within: alternate = stratified
        data.val_mask = torch.zeros_like(data.train_mask)
        data.test_mask = torch.zeros_like(data.train_mask)
        data.val_mask[order[0::2]] = True
        data.test_mask[order[1::2]] = True
        return graph_record(data, [str(c) for c in range(int(data.y.max()) + 1)], self.inductive)
