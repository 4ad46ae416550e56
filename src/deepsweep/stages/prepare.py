"""prepare: fetch the raw files if missing (checksummed), read the dataset, split it (stratified, seeded), write tensors + meta.json.

Tensor datasets are written as ``{train,val,test}.pt``; a graph as ``graph.pt`` with its split masks.

What prepare writes depends on ``cfg.data`` alone, so a process that runs several jobs on the same data (a
fused array's members, Hydra's basic launcher running a sweep one job after another) reads and splits it
once: it keeps the last data it prepared (``Prepared``), and the next job with the same ``cfg.data`` gets
the same tensor files (hard links from the third job on), its own meta.json and the same MLflow dataset inputs in
its own run. MNIST's prepare stage: 2.7 s in a fresh process (python -m cProfile -m deepsweep run
pretrain=none data=mnist: reading and splitting 2.05 s, the datasets' digests 0.42 s), 0.05 s for the next
job. A DVC stage runs in a process of its own: nothing is kept between stages or runs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from deepsweep.factory import build
from deepsweep.data.downloads import ensure_for
from deepsweep.data.loaders import GRAPH_FILE
from deepsweep.data.sources import load_splits
from deepsweep.utils.io import write_json
from deepsweep.utils.retry import retry_insert_race

SPLITS = ("train", "val", "test")


def datasets(cfg: DictConfig, splits: Mapping[str, tuple]) -> dict[str, Any]:
    """Each split as an MLflow dataset (the prepare run's inputs, the UI's Datasets column): named after the
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
    return {split: mlflow.data.from_numpy(np.asarray(x), targets=np.asarray(y), source=origin,
                                          name=f"{cfg.data.name}-{split}")
            for split, (x, y) in splits.items()}


def log_datasets(datasets: Mapping[str, Any]) -> None:
    """Each split's dataset as an input of the active run, in the split's context; an insert lost to a
    concurrent job logging the same dataset is tried again."""
    import mlflow

    for split, dataset in datasets.items():
        retry_insert_race(mlflow.log_input, dataset, context=split)


@dataclass
class Prepared:
    """What prepare writes for one ``cfg.data``: tensors to save, JSON files, meta.json and the datasets."""

    data_key: str  # cfg.data as resolved YAML: the same key, the same outputs
    tensors: dict[str, Any]
    json_files: dict[str, Any]
    meta: dict
    datasets: dict[str, Any]
    # Hard links to the tensor files as the second job on this data wrote them, in a hidden folder beside
    # that job's output: the jobs after it link them too instead of writing the same bytes again (MNIST:
    # 220 MB, 0.3-0.6 s a job; a 32-member sweep wrote 7 GB). Not made for the first job, so a process that
    # prepares once (a DVC stage, deepsweep run) leaves nothing beside its output; removed when this
    # process exits or reads other data.
    kept: Path | None = None
    written: bool = False

    def write(self, out: Path) -> None:
        if not (self.kept is not None and _link(self.kept, out, self.tensors)):
            for name, value in self.tensors.items():
                torch.save(value, out / name)
            self.forget()
            if self.written:
                kept = Path(tempfile.mkdtemp(prefix=".prepared.", dir=out.parent))
                self.kept = kept if _link(out, kept, self.tensors) else None
                if self.kept is None:
                    shutil.rmtree(kept, ignore_errors=True)
            self.written = True
        for name, value in self.json_files.items():
            write_json(out / name, value)

    def forget(self) -> None:
        if self.kept is not None:
            shutil.rmtree(self.kept, ignore_errors=True)
            self.kept = None


def _link(source: Path, target: Path, names) -> bool:
    """Hard-link each named file of ``source`` into ``target``; False (and nothing left behind) where one
    cannot be (another file system, a file gone)."""
    linked = []
    try:
        for name in names:
            os.link(source / name, target / name)
            linked.append(target / name)
    except OSError:
        for path in linked:
            path.unlink(missing_ok=True)
        return False
    return True


_last: Prepared | None = None  # the last data this process prepared (one data set's tensors in memory at most)


@atexit.register
def forget() -> None:
    """Drop the data this process keeps and its folder of links (at exit; a test starts without them)."""
    global _last
    if _last is not None:
        _last.forget()
        _last = None


def data_key(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg.data, resolve=True, sort_keys=True)


def read(cfg: DictConfig) -> Prepared:
    """Fetch (checksummed), read and split ``cfg.data``."""
    ensure_for(cfg.data)
    source = build(cfg.data)
    if source.kind == "graph":
        graph, meta = source.load()
        tensors, json_files = {GRAPH_FILE: graph}, {}
        splits = {split: (graph["x"][graph[f"{split}_mask"]], graph["y"][graph[f"{split}_mask"]]) for split in SPLITS}
    else:
        loaded, extra = load_splits(source)
        tensors = {f"{name}.pt": {"x": torch.from_numpy(getattr(loaded, name).x),
                                  "y": torch.from_numpy(getattr(loaded, name).y)} for name in SPLITS}
        vocab = extra.pop("vocab", None)
        json_files = {} if vocab is None else {"vocab.json": vocab}
        meta = {
            **extra,
            "kind": source.kind,
            "target": getattr(source, "target", "class"),  # what y holds: a class, a mask, a token sequence
            "num_classes": len(loaded.class_names),
            "class_names": loaded.class_names,
            "input_shape": list(loaded.input_shape),
            "sizes": {name: int(len(getattr(loaded, name).y)) for name in SPLITS},
        }
        splits = {name: (getattr(loaded, name).x, getattr(loaded, name).y) for name in SPLITS}
    meta["dataset"] = cfg.data.name
    json_files["meta.json"] = meta
    return Prepared(data_key(cfg), tensors, json_files, meta, datasets(cfg, splits))


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run_id: str) -> dict[str, float]:
    import mlflow

    global _last
    key = data_key(cfg)
    if _last is None or _last.data_key != key:
        forget()  # the previous data set's tensors go before the next one's are read
        _last = read(cfg)
    prepared = _last
    prepared.write(out)
    mlflow.log_dict(prepared.meta, "meta.json")
    log_datasets(prepared.datasets)
    return {f"n_{k}": float(v) for k, v in prepared.meta["sizes"].items()}
