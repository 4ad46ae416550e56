"""Hydra multirun <-> MLflow: a sweep is a parent run, each job a child run under it.

The parent run is created before any job starts (which also creates the SQLite schema once, so
parallel first starts do not race on it). Jobs find it through $DEEPSWEEP_PARENT_RUN_ID or, on
launchers that do not pass the environment, the file ``mlflow_parent_run_id`` in the sweep folder.
At the end, the children are summarized into ``sweep_report.md``/``.csv`` logged to the parent.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from deepsweep.tracking.runs import PARENT_RUN_ENV

PARENT_FILE = "mlflow_parent_run_id"


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
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import mlflow

        from deepsweep.tracking.runs import git_tags, setup

        experiment_id = setup(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = " ".join(config.hydra.overrides.task)
        run = mlflow.MlflowClient().create_run(
            experiment_id,
            run_name=f"sweep {sweep_dir.name}",
            tags={**git_tags(), "deepsweep.stage": "sweep", "deepsweep.sweep_dir": str(sweep_dir.resolve()),
                  "deepsweep.overrides": overrides},
        )
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        (sweep_dir / PARENT_FILE).write_text(run.info.run_id)
        # If the sweep process dies (Ctrl-C, a launcher error), the parent run must not stay RUNNING.
        atexit.register(_fail_if_running, run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from deepsweep.tracking.report import finish_sweep

        run_id = os.environ.pop(PARENT_RUN_ENV, None) or parent_run_id(config.hydra.sweep.dir)
        if run_id:
            finish_sweep(run_id, Path(config.hydra.sweep.dir))
