"""Hydra multirun <-> MLflow: a sweep is a parent run, each job a child run under it.

The parent run is created before any job starts (which also creates the SQLite schema once, so
parallel first starts do not race on it). Jobs find it through $DEEPSWEEP_PARENT_RUN_ID or, on
launchers that do not pass the environment, the file ``mlflow_parent_run_id`` in the sweep folder.
At the end, the children are summarized into ``sweep_report.md``/``.csv`` logged to the parent.
"""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from deepsweep.tracking.runs import PARENT_RUN_ENV

PARENT_FILE = "mlflow_parent_run_id"
DONE_DIR = ".jobs_done"


def _resumable_parent(client: Any, sweep_dir: Path) -> str | None:
    """The parent run of an earlier sweep in this folder, if the tracking store still has it."""
    record = sweep_dir / PARENT_FILE
    if not record.is_file():
        return None
    try:
        return client.get_run(record.read_text().strip()).info.run_id
    except Exception:  # another tracking store, or the run was deleted: start a new parent
        return None


def parent_run_id(sweep_dir: str | os.PathLike | None) -> str | None:
    if os.environ.get(PARENT_RUN_ENV):
        return os.environ[PARENT_RUN_ENV]
    if sweep_dir is not None and (Path(sweep_dir) / PARENT_FILE).is_file():
        return (Path(sweep_dir) / PARENT_FILE).read_text().strip()
    return None


def _fail_if_running(run_id: str) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_tag(run_id, "deepsweep.error", "the sweep process ended before the sweep finished")
        client.set_terminated(run_id, "FAILED")


class MlflowSweepCallback(Callback):
    """``heatmap_axes``: the two params of the report's heatmap (default: the first two swept ones)."""

    def __init__(self, heatmap_axes: list[str] | None = None) -> None:
        self.heatmap_axes = list(heatmap_axes) if heatmap_axes else None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import mlflow

        from deepsweep.tracking.report import METRIC_TAG
        from deepsweep.tracking.runs import git_tags, process_tags, redact, setup

        experiment_id = setup(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        client = mlflow.MlflowClient()
        run_id = _resumable_parent(client, sweep_dir)
        if run_id:
            # The same sweep folder again: the same parent run, whose finished jobs are skipped.
            for key, value in process_tags().items():  # this process holds it now: tagged before it is RUNNING,
                client.set_tag(run_id, key, value)     # so no other process takes it for a dead one's
            client.set_tag(run_id, "deepsweep.resumed", "true")
            client.update_run(run_id, status="RUNNING")
        else:
            overrides = redact(" ".join(config.hydra.overrides.task))
            run_id = client.create_run(
                experiment_id,
                run_name=f"sweep {sweep_dir.name}",
                tags={**git_tags(), **process_tags(), "deepsweep.stage": "sweep", "deepsweep.sweep_dir": str(sweep_dir.resolve()),
                      "deepsweep.overrides": overrides, METRIC_TAG: str(config.optimized_metric)},
            ).info.run_id
            (sweep_dir / PARENT_FILE).write_text(run_id)
        shutil.rmtree(sweep_dir / DONE_DIR, ignore_errors=True)
        os.environ[PARENT_RUN_ENV] = run_id
        # If the sweep process dies (Ctrl-C, a launcher error), the parent run must not stay RUNNING.
        atexit.register(_fail_if_running, run_id)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Progress while the sweep runs: jobs report from their own processes, so count marker files.
        import logging

        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:  # Hydra calls job hooks for a single run too
            return
        done_dir = Path(config.hydra.sweep.dir) / DONE_DIR
        done_dir.mkdir(parents=True, exist_ok=True)
        num = config.hydra.job.num
        (done_dir / str(num)).touch()
        try:
            value = job_return.return_value
            failed = value != value  # a job that fails returns NaN (cli.run), so the sweep goes on
        except Exception:
            failed = True
        logging.getLogger("deepsweep").info(
            "sweep progress: %d jobs done (job %s %s)", len(list(done_dir.iterdir())), num,
            "FAILED" if failed else "finished")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from deepsweep.tracking.report import finish_sweep

        run_id = os.environ.pop(PARENT_RUN_ENV, None) or parent_run_id(config.hydra.sweep.dir)
        if run_id:
            finish_sweep(run_id, Path(config.hydra.sweep.dir), rank_metric=str(config.optimized_metric),
                         axes=self.heatmap_axes)
