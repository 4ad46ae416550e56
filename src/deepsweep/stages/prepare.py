"""prepare: read the dataset from disk, split it (stratified, seeded), write tensors + meta.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig

from deepsweep.config import build
from deepsweep.utils.io import write_json


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run: Any) -> dict[str, float]:
    import mlflow

    splits = build(cfg.data).load()
    sizes = {}
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        torch.save({"x": torch.from_numpy(split.x), "y": torch.from_numpy(split.y)}, out / f"{name}.pt")
        sizes[name] = int(len(split.y))
    meta = {
        "dataset": cfg.data.name,
        "num_classes": len(splits.class_names),
        "class_names": splits.class_names,
        "input_shape": list(splits.input_shape),
        "sizes": sizes,
    }
    write_json(out / "meta.json", meta)
    mlflow.log_dict(meta, "meta.json")
    metrics = {f"n_{k}": float(v) for k, v in sizes.items()}
    mlflow.log_metrics(metrics)
    return metrics
