"""The Python API (deepsweep.run, deepsweep.load_sweep): the README's notebook example, executed."""

from __future__ import annotations

import json
import re

from conftest import FAST, ROOT, deepsweep_cli


def test_run_returns_the_pipelines_metrics_run_ids_and_folders(tmp_path):
    import mlflow

    import deepsweep

    result = deepsweep.run([*FAST, "model.hidden_dims=[32]"], workdir=tmp_path / "run")
    metrics = json.loads((result.stage_dirs["evaluate"] / "metrics.json").read_text())
    assert result.metrics["evaluate.accuracy"] == metrics["accuracy"]
    pipeline = mlflow.get_run(result.run_id)
    assert pipeline.info.status == "FINISHED" and pipeline.data.params["model.hidden_dims"] == "[32]"
    assert pipeline.data.metrics["evaluate.accuracy"] == metrics["accuracy"]
    for stage, run_id in result.stage_run_ids.items():
        assert mlflow.get_run(run_id).data.tags["mlflow.parentRunId"] == result.run_id, stage


def test_load_sweep_gives_one_row_per_job(tmp_path, isolated_tracking):
    import deepsweep

    sweep = tmp_path / "sweep"
    done = deepsweep_cli("run", "-m", "seed=0,1", *FAST, f"hydra.sweep.dir={sweep}", "hydra.launcher.n_jobs=1",
                         env={"MLFLOW_TRACKING_URI": f"sqlite:///{isolated_tracking}"})
    assert done.returncode == 0, done.stderr[-2000:]
    table = deepsweep.load_sweep(sweep)
    assert sorted(table["params.seed"]) == ["0", "1"] and set(table["status"]) == {"FINISHED"}
    assert table["metrics.evaluate.accuracy"].notna().all()
    assert len(deepsweep.load_sweep(table["tags.mlflow.parentRunId"].iloc[0])) == 2  # by run id too


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's Python block, as written, with the run's folder moved under tmp_path."""
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPSWEEP_ROOT", str(ROOT))
    namespace: dict = {}
    exec(compile(block.replace('deepsweep.run([', f'deepsweep.run(workdir={str(tmp_path / "r")!r}, overrides=['), "README", "exec"), namespace)
    assert namespace["result"].metrics["evaluate.accuracy"] > 0.5
