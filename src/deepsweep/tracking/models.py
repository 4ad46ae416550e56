"""The fine-tuned model as an MLflow model: loadable with ``mlflow.pyfunc.load_model`` wherever deepsweep is
installed, registrable in the model registry (``deepsweep register``). Its requirements name deepsweep, which
is not on PyPI: to serve it, ``mlflow models serve --env-manager local`` from this project's environment.

One pyfunc wrapper serves every family: it keeps no pickled module, only the weights, the resolved config
and the prepared data's meta, and rebuilds the model with ``factory.build_model`` when loaded, so a GNN
(which takes ``x`` and ``edge_index``) and a CNN load the same way and a model never depends on how
cloudpickle saw its class. ``predict`` returns class probabilities on axis 1: one row per input (per node for a
graph), ``(n, classes, height, width)`` for a segmentation, ``(n, vocabulary, steps)`` for a greedy decoding.

Inputs, as ``prepare`` writes them: images ``(n, channels, height, width)`` float32 in [0, 1]; token ids
``(n, max_len)`` int64; series ``(n, length)`` float32 (or what the data option's source yields); a graph as
``{"x": (nodes, features) float32, "edge_index": (2, edges) int64}``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

MODEL_NAME = "model"  # the logged model's name in its run
MODEL_URI_TAG = "deepsweep.model_uri"
EXAMPLE_ROWS = 5



class DeepsweepClassifier(mlflow.pyfunc.PythonModel):
    """A deepsweep classifier: the family ``config.yaml`` names with the weights of ``model.pt``."""

    def load_context(self, context) -> None:
        import torch
        from omegaconf import OmegaConf

        from deepsweep.factory import build_model

        cfg = OmegaConf.load(context.artifacts["config"])
        self.meta = json.loads(Path(context.artifacts["meta"]).read_text())
        model = build_model(cfg, self.meta["input_shape"], self.meta["num_classes"], self.meta.get("vocab_size"))
        model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True)["state_dict"])
        self.model = model.eval()

    # np.ndarray is a hint MLflow infers no schema from (the logged signature, from a real input example, is the
    # schema; a graph's input is a dict of arrays): without any hint MLflow warns at class creation.
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self.meta.get("kind") == "graph":
                logits = self.model(torch.as_tensor(np.asarray(model_input["x"])),
                                    torch.as_tensor(np.asarray(model_input["edge_index"])))
            else:
                logits = self.model(torch.as_tensor(np.asarray(model_input)))
            return torch.softmax(logits.float(), dim=1).numpy()


def input_example(data) -> Any:
    """A few real test inputs: images or sequences as an array, a graph as its first nodes and their edges."""
    if data.kind == "graph":
        x, edge_index = data.graph["x"], data.graph["edge_index"]
        kept = edge_index[:, (edge_index < EXAMPLE_ROWS).all(dim=0)]
        kept = kept[:, kept[1].argsort(stable=True)]  # sorted by target node, as some aggregations (LSTM) require
        return {"x": x[:EXAMPLE_ROWS].numpy(), "edge_index": kept.numpy().astype(np.int64)}
    return data.test.x[:EXAMPLE_ROWS].numpy()


def requirements(kind: str) -> list[str]:
    """What loading needs, pinned to this environment (given, not inferred: MLflow's inference loads the
    model again in a subprocess, seconds per stage)."""
    names = ["torch", "numpy", "omegaconf", "hydra-core", "deepsweep"] + (["torch-geometric"] if kind == "graph" else [])
    found = []
    for name in names:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def log_model(cfg, model, data, weights: Path) -> str:
    """Log the fine-tuned ``model`` (saved at ``weights``) to the active run; returns its model URI, also set
    as the run's ``deepsweep.model_uri`` tag."""
    import torch

    # MLflow narrates logging (INFO lines, a download progress bar while it checks the input example): quiet.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    example = input_example(data)
    model.eval()
    with torch.inference_mode():
        if isinstance(example, dict):
            probs = torch.softmax(model(torch.as_tensor(example["x"]), torch.as_tensor(example["edge_index"])), dim=1)
        else:
            probs = torch.softmax(model(torch.as_tensor(example)), dim=1)
    progress = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        return _log(cfg, data, weights, example, probs)
    finally:
        if progress is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = progress


def signature(example, probs: np.ndarray):
    """Inputs and outputs with any number of rows (nodes, for a graph; edges, for its edge_index)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    if not isinstance(example, dict):
        return infer_signature(example, probs)
    x = example["x"]
    inputs = Schema([TensorSpec(x.dtype, (-1, *x.shape[1:]), "x"), TensorSpec(np.dtype(np.int64), (2, -1), "edge_index")])
    return ModelSignature(inputs, Schema([TensorSpec(probs.dtype, (-1, probs.shape[1]))]))


def _log(cfg, data, weights: Path, example, probs) -> str:
    from omegaconf import OmegaConf

    from deepsweep.tracking.runs import redact

    with tempfile.TemporaryDirectory() as scratch:
        config, meta = Path(scratch) / "config.yaml", Path(scratch) / "meta.json"
        config.write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
        meta.write_text(json.dumps({k: v for k, v in data.meta.items() if k != "vocab"}))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"weights": str(weights), "config": str(config), "meta": str(meta)},
            signature=signature(example, probs.float().numpy()), input_example=example,
            pip_requirements=requirements(data.kind))
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def finetune_run(target: str) -> Any:
    """The finetune stage run behind ``target``: a sweep folder or parent run id (its best job by the sweep's
    optimized metric), a pipeline run id, or a finetune run id."""
    import mlflow

    from deepsweep.tracking.report import METRIC_TAG, RANK_METRIC, _score, sweep_rows
    from deepsweep.tracking.sweep import PARENT_FILE

    client = mlflow.MlflowClient()
    folder = Path(target)
    if folder.is_dir():
        if not (folder / PARENT_FILE).is_file():
            raise FileNotFoundError(f"{folder}: not a sweep folder (no {PARENT_FILE} in it)")
        target = (folder / PARENT_FILE).read_text().strip()
    try:
        run = client.get_run(target)
    except mlflow.exceptions.MlflowException:
        raise FileNotFoundError(f"{target}: neither a sweep folder nor a run id of this tracking store") from None
    tags = run.data.tags
    if tags.get("deepsweep.stage") == "finetune":
        return run
    if METRIC_TAG in tags:  # a sweep: its best finished job
        metric = tags.get(METRIC_TAG, RANK_METRIC)
        rows = [r for r in sweep_rows(run.info.run_id) if r["status"] == "FINISHED" and "finetune" in r["stage_runs"]]
        if not rows:
            raise FileNotFoundError(f"{target}: this sweep has no finished job with a fine-tuned model")
        best = min(rows, key=lambda r: _score(r["metrics"], metric))
        return client.get_run(best["stage_runs"]["finetune"])
    pipeline = tags.get("deepsweep.pipeline_id", run.info.run_id)
    found = client.search_runs([run.info.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                               filter_string=f"tags.`deepsweep.pipeline_id` = '{pipeline}' and "
                                             f"tags.`deepsweep.stage` = 'finetune'")
    if not found:
        raise FileNotFoundError(f"{target}: no finetune stage run belongs to this run's pipeline")
    return found[0]


def register(target: str, name: str | None = None) -> Any:
    """Register the model of ``target``'s finetune run (see ``finetune_run``) as a new version of ``name``
    (default ``deepsweep-<model>-<data>``); returns the ModelVersion."""
    import mlflow

    from deepsweep.errors import ConfigError

    run = finetune_run(target)
    uri = run.data.tags.get(MODEL_URI_TAG)
    if not uri:
        raise ConfigError(f"{run.info.run_id}: its finetune run logged no MLflow model (logger.log_model=false, "
                          f"or a run older than model logging); rerun it with logger.log_model=true")
    params = run.data.params
    name = name or f"deepsweep-{params.get('model.name', 'model')}-{params.get('data.name', 'data')}"
    return mlflow.register_model(uri, name, tags={"deepsweep.finetune_run": run.info.run_id})
