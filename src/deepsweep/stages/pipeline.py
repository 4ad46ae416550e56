"""The stage graph, and the two ways to run it.

* ``execute(name, ...)`` runs one stage over outputs on disk: what each DVC stage calls.
* ``run_all(cfg, workdir)`` runs every stage in one process: a ``deepsweep run`` job (and a sweep job),
  recorded as one MLflow run with a nested run per stage.

Every stage output folder holds ``run.json``: its MLflow run id, its pipeline id, and the values of the params
the stage declares (``stages.STAGE_PARAMS``). A downstream stage inherits the pipeline id, so the MLflow runs of
one pipeline share the tag ``deepsweep.pipeline_id``, and refuses an input made from other values of its params
than this config's: ``dvc repro`` reruns such a stage first, but a stage run by hand would score an old model
and record the new params beside its numbers.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from deepsweep.errors import ConfigError, NonFiniteError
from deepsweep.provenance import DEVICES, device_count, not_fingerprinted
from deepsweep.stages import STAGE_PARAMS, STAGES
from deepsweep.utils.io import atomic_dir, folder_lock, read_json, write_json

RUN_FILE = "run.json"


def declared_values(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The values of the params ``stage`` declares, flat (``model.hidden_dims``), as JSON gives them back: what
    its output is made from. A param this config lacks (``data.augment`` of a graph) is None."""
    values: dict[str, Any] = {}

    def add(key: str, node: Any) -> None:
        if isinstance(node, DictConfig):
            for child in node:
                add(f"{key}.{child}", node[child])
        else:
            values[key] = OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else node

    for key in STAGE_PARAMS[stage]:
        add(key, OmegaConf.select(cfg, key, default=None))
    return json.loads(json.dumps(values, default=str))


def _same(key: str, a: Any, b: Any) -> bool:
    if key == DEVICES:  # how many devices, not which (provenance.device_count)
        a, b = device_count(a), device_count(b)
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _compared(key: str, params: tuple[str, ...], recorded: dict[str, Any]) -> bool:
    """Whether an output's recorded value of ``key`` must equal this config's: not for keys that never change
    what a stage computes (``provenance.not_fingerprinted``), nor for a param its stage declared only after the
    output was written, or no longer does."""
    if not_fingerprinted(key):
        return False
    param = next((p for p in params if _under(key, p)), None)
    return param is not None and any(_under(k, param) for k in recorded)


def _under(key: str, param: str) -> bool:
    """Whether a dotted key is the declared param or one of its fields (``model.hidden`` under ``model``)."""
    return key == param or key.startswith(param + ".")


def _check_made_from(cfg: DictConfig, dep: str, folder: Path, recorded: dict[str, Any] | None) -> None:
    """An upstream output made from other values of its params than ``cfg``'s stops the stage, naming one."""
    if recorded is None:  # written before outputs recorded their params: nothing to compare
        return
    here = declared_values(cfg, dep)
    differ = sorted(key for key in recorded.keys() | here.keys()
                    if _compared(key, STAGE_PARAMS[dep], recorded) and not _same(key, recorded.get(key), here.get(key)))
    if differ:
        key = differ[0]
        more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
        raise ConfigError(f"{folder}: stage '{dep}' made it with {key}={json.dumps(recorded.get(key))}, this config "
                          f"says {key}={json.dumps(here.get(key))}{more}; rerun '{dep}' with these params first "
                          f"(dvc repro), or run this stage with the params it was made with")


def _lineage(inputs: dict[str, Path], cfg: DictConfig) -> tuple[str | None, dict[str, str]]:
    """The pipeline id the inputs share, and their run ids as tags. Inputs of different pipelines (two
    runs writing one folder, or an upstream stage rerun by hand without what follows it), or made from other
    values of their params than ``cfg``'s, stop the stage."""
    pipeline_ids, upstream = {}, {}
    for dep, folder in inputs.items():
        record = folder / RUN_FILE
        if not record.is_file():
            raise FileNotFoundError(
                f"{folder}: output of stage '{dep}' is missing; run it first (dvc repro {dep}, or the whole pipeline)"
            )
        info = read_json(record)
        _check_made_from(cfg, dep, folder, info.get("params"))
        pipeline_ids[dep] = info.get("pipeline_id")
        upstream[f"deepsweep.upstream.{dep}"] = info.get("run_id", "")
    if len(set(pipeline_ids.values())) > 1:
        shown = ", ".join(f"{dep}: {pid}" for dep, pid in pipeline_ids.items())
        raise FileNotFoundError(f"{next(iter(inputs.values())).parent}: the inputs come from different pipeline runs "
                                f"({shown}); rerun the stages after the first that differs (dvc repro)")
    return next(iter(pipeline_ids.values()), None), upstream


def summary_metrics(stage: str, metrics: dict[str, float]) -> dict[str, float]:
    """A stage's summary as MLflow metric names: ``<stage>.<metric>`` (``evaluate.accuracy``)."""
    return {f"{stage}.{key.replace('/', '_')}": value for key, value in metrics.items()}


def check_finite_metrics(metrics: dict[str, float]) -> None:
    """A stage's summary never holds NaN or inf: metrics.json, DVC and MLflow would show it as a result."""
    bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
    if bad:
        raise NonFiniteError("non-finite result " + ", ".join(f"{k} = {v}" for k, v in sorted(bad.items())))


def execute(name: str, cfg: DictConfig, artifacts: Path, pipeline_id: str | None = None) -> dict[str, float]:
    """Run stage ``name``: read upstream outputs under ``artifacts/``, write ``artifacts/<name>/`` atomically,
    record one MLflow run (FAILED, with the error, if the stage raises)."""
    from deepsweep.factory import check_accelerator, check_compatible, steps_per_call

    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; allowed: {', '.join(STAGES)}")
    check_accelerator(cfg)
    check_compatible(cfg)
    steps_per_call(cfg)  # checks trainer.steps_per_call here, not first in the pretrain stage
    artifacts = Path(artifacts)
    with folder_lock(artifacts):
        return _execute_locked(name, cfg, artifacts, pipeline_id)


def _execute_locked(name: str, cfg: DictConfig, artifacts: Path, pipeline_id: str | None) -> dict[str, float]:
    import mlflow

    from deepsweep.launch import fingerprint
    from deepsweep.training.resume import discard_checkpoint
    from deepsweep.tracking.runs import PARENT_RUN_ENV, start_run

    inputs = {dep: artifacts / dep for dep in STAGES[name]}
    inherited, upstream = _lineage(inputs, cfg)
    pipeline_id = pipeline_id or inherited or uuid.uuid4().hex
    tags = {"deepsweep.stage": name, "deepsweep.pipeline_id": pipeline_id, **upstream}
    stage = importlib.import_module(f"deepsweep.stages.{name}")
    with start_run(cfg, run_name=name, tags=tags, parent_run_id=os.environ.get(PARENT_RUN_ENV)) as run:
        with atomic_dir(artifacts / name) as out:
            try:
                metrics = stage.run(cfg, out, inputs, run.info.run_id)
                check_finite_metrics(metrics)
                # One name per number wherever it shows: the stage run and the pipeline run both say
                # evaluate.accuracy, so a search_runs table over stages and jobs has one column for it.
                mlflow.log_metrics(summary_metrics(name, metrics))
            except NonFiniteError as exc:
                raise NonFiniteError(f"stage {name}: {exc}") from None
            write_json(out / RUN_FILE, {"stage": name, "run_id": run.info.run_id, "pipeline_id": pipeline_id,
                                        "fingerprint": fingerprint(cfg), "params": declared_values(cfg, name),
                                        "metrics": metrics})
        # Only now that the output is in place may the resume checkpoint go: a kill before this line
        # resumes from it.
        discard_checkpoint(artifacts, name)
    return metrics


def finished_stage(cfg: DictConfig, folder: Path) -> dict[str, float] | None:
    """The metrics of a stage output already in ``folder`` computed from this very config, if any."""
    from deepsweep.launch import fingerprint

    record = folder / RUN_FILE
    if not record.is_file():
        return None
    info = read_json(record)
    return info.get("metrics") if info.get("fingerprint") == fingerprint(cfg) else None


def _close_kept_run(run_id: str) -> None:
    """A kept stage's output is complete, and so is its record: its metrics were logged before the output
    was committed. A process that died between that commit and the run's end left the run RUNNING (or the
    rerun of its sweep marked it FAILED as interrupted); it finished, so it is closed as FINISHED."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return  # recorded in another tracking store: not this one's to close
    if run.info.status != "FINISHED":
        if "deepsweep.error" in run.data.tags:
            client.delete_tag(run_id, "deepsweep.error")
        client.set_tag(run_id, "deepsweep.closed_on_resume", "its output was complete; the resumed job closed it")
        client.set_terminated(run_id, "FINISHED")


def run_all(cfg: DictConfig, workdir: Path, run_name: str = "pipeline", tags: dict[str, str] | None = None,
            parent_run_id: str | None = None, resume: bool = False) -> dict[str, float]:
    """Every stage in order, in this process; one MLflow run for the whole pipeline with the stages nested.

    The pipeline run carries the flat params and each stage's summary metrics (``finetune.best_val_acc``,
    ``test.accuracy``, ...) so sweep jobs compare on one row each. With ``resume``, a stage whose output
    in ``workdir`` came from the same config (an interrupted job's finished stages) is kept, not rerun."""
    import mlflow

    from deepsweep.tracking.runs import start_run

    summary: dict[str, Any] = {}
    with folder_lock(workdir), start_run(cfg, run_name=run_name, tags={"deepsweep.stage": "pipeline", **(tags or {})},
                   parent_run_id=parent_run_id) as run:
        pipeline_id = run.info.run_id
        mlflow.set_tag("deepsweep.pipeline_id", pipeline_id)
        for name in STAGES:
            metrics = finished_stage(cfg, workdir / name) if resume else None
            if metrics is not None:
                kept = read_json(workdir / name / RUN_FILE)
                mlflow.set_tag(f"deepsweep.resumed.{name}", kept["run_id"])
                _close_kept_run(kept["run_id"])
                # The stages rerun after kept ones belong to the kept ones' pipeline: one lineage.
                pipeline_id = kept.get("pipeline_id") or pipeline_id
            else:
                resume = False  # what follows a rerun stage reads its new outputs: rerun it too
                metrics = execute(name, cfg, workdir, pipeline_id=pipeline_id)
            stage_summary = summary_metrics(name, metrics)
            mlflow.log_metrics(stage_summary)
            summary.update(stage_summary)
        mlflow.set_tag("deepsweep.pipeline_id", pipeline_id)
    return summary
