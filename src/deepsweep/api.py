"""deepsweep from Python (a notebook, a script): run one pipeline, read a sweep back as a table.

    import deepsweep
    result = deepsweep.run(["model=lenet", "trainer.max_epochs=5"])
    result.metrics["evaluate.accuracy"], result.run_id, result.stage_dirs["finetune"]
    table = deepsweep.load_sweep("outputs/sweeps/2026-11-30_10-00-00.000000")  # or the sweep's MLflow run id

``run`` is ``deepsweep run`` without Hydra's app: the same composition, checks, MLflow records (one pipeline
run with a nested run per stage) and outputs; bad input raises ``ConfigError`` before any work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


@dataclass
class RunResult:
    """What one pipeline run left: its summary metrics (``<stage>.<metric>``), the MLflow run id of the pipeline
    and of each stage, and the folder of each stage's outputs."""

    metrics: dict[str, float]
    run_id: str
    workdir: Path
    stage_run_ids: dict[str, str] = field(default_factory=dict)
    stage_dirs: dict[str, Path] = field(default_factory=dict)


def run(overrides: Iterable[str] = (), workdir: str | Path | None = None) -> RunResult:
    """Compose ``conf/`` with ``overrides`` (``["model=lenet", "seed=1"]``), check it, run every stage in this
    process under ``workdir`` (default ``outputs/runs/<time>`` in the project) and return the result."""
    from deepsweep import paths
    from deepsweep.config import compose, validate
    from deepsweep.factory import check_accelerator, check_compatible, set_threads, steps_per_call
    from deepsweep.launch import FINGERPRINT_TAG, fingerprint
    from deepsweep.stages import STAGES
    from deepsweep.stages.pipeline import RUN_FILE, run_all
    from deepsweep.tracking.runs import redact
    from deepsweep.utils.io import read_json

    overrides = list(overrides)
    cfg = validate(compose(overrides))
    check_accelerator(cfg)
    check_compatible(cfg)
    steps_per_call(cfg)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S") + f".{time.time_ns() // 1000 % 1_000_000:06d}"
    folder = Path(workdir) if workdir is not None else paths.project_root() / "outputs" / "runs" / stamp
    folder.mkdir(parents=True, exist_ok=True)
    set_threads(cfg)
    name = redact(" ".join(overrides)) or "defaults"
    metrics = run_all(cfg, folder, run_name=name, tags={"deepsweep.overrides": name, FINGERPRINT_TAG: fingerprint(cfg),
                                                        "deepsweep.entry": "python"})
    records = {stage: read_json(folder / stage / RUN_FILE) for stage in STAGES}
    return RunResult(metrics=metrics, run_id=records["prepare"]["pipeline_id"], workdir=folder,
                     stage_run_ids={stage: record["run_id"] for stage, record in records.items()},
                     stage_dirs={stage: folder / stage for stage in STAGES})


def load_sweep(sweep: str | Path, tracking_uri: str | None = None, all_attempts: bool = False) -> Any:
    """The jobs of a sweep as a pandas DataFrame, one row per job (MLflow's ``search_runs`` columns: ``params.*``,
    ``metrics.*``, ``tags.*``, status), from the sweep's folder or its parent MLflow run id. A job resumed after
    an interruption is its latest attempt, as in the sweep report (``all_attempts``: every child run instead)."""
    import mlflow
    from omegaconf import OmegaConf

    from deepsweep.tracking import runs
    from deepsweep.tracking.sweep import PARENT_FILE

    folder = Path(sweep)
    if folder.is_dir():
        if not (folder / PARENT_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no sweep parent run recorded there ({PARENT_FILE}); "
                                    "give a sweep folder of `deepsweep run -m` or the sweep's MLflow run id")
        parent = (folder / PARENT_FILE).read_text().strip()
    else:
        parent = str(sweep)
    # The store deepsweep writes to: logger.tracking_uri's default, $MLFLOW_TRACKING_URI or the project's SQLite file.
    mlflow.set_tracking_uri(tracking_uri or runs.tracking_uri(OmegaConf.create({"logger": {"tracking_uri": None}})))
    from deepsweep.tracking.report import latest_attempts

    client = mlflow.MlflowClient()
    experiment = client.get_run(parent).info.experiment_id
    frame = mlflow.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                               order_by=["attributes.start_time ASC"])
    if all_attempts or frame.empty:
        return frame
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)
    kept = {run.info.run_id for run in latest_attempts(children)}
    return frame[frame["run_id"].isin(kept)].reset_index(drop=True)
