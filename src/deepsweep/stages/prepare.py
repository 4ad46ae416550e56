"""prepare: fetch the raw files if missing (checksummed), read the dataset, split it (stratified, seeded), write tensors + meta.json.

Tensor datasets are written as ``{train,val,test}.pt``; a graph as ``graph.pt`` with its split masks."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from omegaconf import DictConfig

from deepsweep.factory import build
from deepsweep.data.downloads import ensure_for
from deepsweep.data.loaders import GRAPH_FILE
from deepsweep.data.sources import load_splits
from deepsweep.utils.io import write_json
from deepsweep.utils.retry import retry_insert_race


def log_datasets(cfg: DictConfig, splits: Mapping[str, tuple]) -> None:
    """Each split as an MLflow dataset input of the prepare run (the UI's Datasets column): named after the
    data option and split, with the digest of the arrays actually written and where they came from (the
    canonical URL of a fetched data set, else the loader)."""
    import mlflow
    import numpy as np
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    from deepsweep.data.downloads import CATALOG

    catalog = CATALOG.get(cfg.data.name)
    origin = (HTTPDatasetSource(catalog.files[0].url) if catalog else
              CodeDatasetSource({"loader": str(cfg.data.get("_target_")), "root": str(cfg.data.get("root"))}))
    for split, (x, y) in splits.items():
        dataset = mlflow.data.from_numpy(np.asarray(x), targets=np.asarray(y), source=origin,
                                         name=f"{cfg.data.name}-{split}")
        retry_insert_race(mlflow.log_input, dataset, context=split)


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run_id: str) -> dict[str, float]:
    import mlflow

    ensure_for(cfg.data)
    source = build(cfg.data)
    if source.kind == "graph":
        graph, meta = source.load()
        torch.save(graph, out / GRAPH_FILE)
    else:
        splits, extra = load_splits(source)
        for name in ("train", "val", "test"):
            split = getattr(splits, name)
            torch.save({"x": torch.from_numpy(split.x), "y": torch.from_numpy(split.y)}, out / f"{name}.pt")
        vocab = extra.pop("vocab", None)
        if vocab is not None:
            write_json(out / "vocab.json", vocab)
        meta = {
            **extra,
            "kind": source.kind,
            "target": getattr(source, "target", "class"),  # what y holds: a class, a mask, a token sequence
            "num_classes": len(splits.class_names),
            "class_names": splits.class_names,
            "input_shape": list(splits.input_shape),
            "sizes": {name: int(len(getattr(splits, name).y)) for name in ("train", "val", "test")},
        }
    meta["dataset"] = cfg.data.name
    write_json(out / "meta.json", meta)
    mlflow.log_dict(meta, "meta.json")
    if source.kind == "graph":
        log_datasets(cfg, {split: (graph["x"][graph[f"{split}_mask"]], graph["y"][graph[f"{split}_mask"]])
                           for split in ("train", "val", "test")})
    else:
        log_datasets(cfg, {name: (getattr(splits, name).x, getattr(splits, name).y) for name in ("train", "val", "test")})
    return {f"n_{k}": float(v) for k, v in meta["sizes"].items()}
