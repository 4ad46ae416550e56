"""A Hydra multirun over init x regularizer: parallel jobs, one MLflow parent run, a child per job,
a report; a failing job is isolated."""

from __future__ import annotations

import mlflow
import pytest

from conftest import FAST, deepsweep_cli

pytestmark = pytest.mark.slow


def test_init_by_regularizer_sweep(tmp_path, isolated_tracking):
    sweep_dir = tmp_path / "sweep"
    result = deepsweep_cli("run", "-m", "init=xavier_uniform,he_normal", "regularizer=dropout,l2",
                           "optimizer.lr=0.001,-1", *FAST, f"hydra.sweep.dir={sweep_dir}", "hydra.launcher.n_jobs=2")
    assert result.returncode == 0, result.stderr[-3000:]

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("deepsweep.stage") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(jobs) == 8
    combos = {(r.data.params["init.name"], r.data.params["regularizer.name"], r.data.params["optimizer.lr"]) for r in jobs}
    assert len(combos) == 8
    finished = [r for r in jobs if r.info.status == "FINISHED"]
    failed = [r for r in jobs if r.info.status == "FAILED"]
    assert len(finished) == 4 and all(r.data.params["optimizer.lr"] == "0.001" for r in finished)
    assert len(failed) == 4 and all("Invalid learning rate" in r.data.tags["deepsweep.error"] for r in failed)
    assert all("evaluate.accuracy" in r.data.metrics for r in finished)
    # Each job's stages are nested runs under the job.
    stage_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == finished[0].info.run_id]
    assert {r.data.tags["deepsweep.stage"] for r in stage_runs} == {"prepare", "pretrain", "finetune", "evaluate"}

    report = (sweep_dir / "sweep_report.md").read_text()
    assert "8 jobs, 4 failed" in report and "| best |" in report
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(parent_id)}
    assert {"sweep_report.md", "sweep_report.csv"} <= logged
