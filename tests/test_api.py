"""The Python API (deepsweep.run, deepsweep.load_sweep): the README's notebook example, executed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import FAST, ROOT, deepsweep_cli

WITH_MODEL = [o for o in FAST if not o.startswith("logger.log_model")]  # these tests load the logged model


def test_run_returns_the_pipelines_metrics_run_ids_and_folders(tmp_path):
    import mlflow

    import deepsweep

    result = deepsweep.run([*WITH_MODEL, "model.hidden_dims=[32]"], workdir=tmp_path / "run")
    metrics = json.loads((result.stage_dirs["evaluate"] / "metrics.json").read_text())
    assert result.metrics["evaluate.accuracy"] == metrics["accuracy"]
    pipeline = mlflow.get_run(result.run_id)
    assert pipeline.info.status == "FINISHED" and pipeline.data.params["model.hidden_dims"] == "[32]"
    assert pipeline.data.metrics["evaluate.accuracy"] == metrics["accuracy"]
    for stage, run_id in result.stage_run_ids.items():
        assert mlflow.get_run(run_id).data.tags["mlflow.parentRunId"] == result.run_id, stage

    # The fine-tuned model is an MLflow model: registered, loaded by pyfunc, it scores the test split as evaluate did.
    done = deepsweep_cli("register", result.run_id, "--name", "digits-mlp")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"registered models:/digits-mlp/1 (finetune run {result.stage_run_ids['finetune']})"
    model = mlflow.pyfunc.load_model("models:/digits-mlp/1")
    test = torch.load(result.stage_dirs["prepare"] / "test.pt", weights_only=True)
    probs = model.predict(test["x"].numpy())
    assert probs.shape == (len(test["y"]), 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(axis=1) == test["y"].numpy()).mean() == pytest.approx(metrics["accuracy"], abs=1e-7)
    assert model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 8, 8)


def test_a_gnn_is_an_mlflow_model_too(tmp_path):
    """A graph model takes {"x", "edge_index"}: the same wrapper rebuilds it and scores the test nodes."""
    import mlflow

    import deepsweep

    result = deepsweep.run(["data=karate", "model=gcn", "pretrain=none", "trainer.max_epochs=20"], workdir=tmp_path / "r")
    uri = mlflow.get_run(result.stage_run_ids["finetune"]).data.tags["deepsweep.model_uri"]
    graph = torch.load(result.stage_dirs["prepare"] / "graph.pt", weights_only=True)
    probs = mlflow.pyfunc.load_model(uri).predict({"x": graph["x"].numpy(), "edge_index": graph["edge_index"].numpy()})
    mask = graph["test_mask"].numpy()
    accuracy = (probs.argmax(axis=1)[mask] == graph["y"].numpy()[mask]).mean()
    assert accuracy == pytest.approx(result.metrics["evaluate.accuracy"], abs=1e-7)


@pytest.mark.slow  # 20-45 s here: started first, so it does not leave a worker alone at the end
def test_load_sweep_gives_one_row_per_job(tmp_path, isolated_tracking):
    import deepsweep

    sweep = tmp_path / "sweep"
    done = deepsweep_cli("run", "-m", "seed=0,1", *WITH_MODEL, f"hydra.sweep.dir={sweep}", "hydra.launcher.n_jobs=1",
                         env={"MLFLOW_TRACKING_URI": f"sqlite:///{isolated_tracking}"})
    assert done.returncode == 0, done.stderr[-2000:]
    # Progress against the total, failures and time left; no per-epoch lines from inside sweep jobs.
    progress = [line.split(" - ")[1] for line in done.stdout.splitlines() + done.stderr.splitlines()
                if "sweep progress" in line]
    assert progress[0].startswith("sweep progress: 1/2 jobs done, 0 failed, 0:0") and " left (job " in progress[0]
    assert progress[1].startswith("sweep progress: 2/2 jobs done, 0 failed (job 1 finished)"), progress
    assert " epoch " not in done.stderr
    table = deepsweep.load_sweep(sweep)
    assert sorted(table["params.seed"]) == ["0", "1"] and set(table["status"]) == {"FINISHED"}
    assert table["metrics.evaluate.accuracy"].notna().all()
    assert len(deepsweep.load_sweep(table["tags.mlflow.parentRunId"].iloc[0])) == 2  # by run id too
    # deepsweep register <sweep folder>: the best job's (finetune.best_val_acc) model.
    best = table.sort_values("metrics.finetune.best_val_acc", ascending=False, kind="stable").iloc[0]
    done = deepsweep_cli("register", str(sweep), env={"MLFLOW_TRACKING_URI": f"sqlite:///{isolated_tracking}"})
    assert done.returncode == 0, done.stderr
    import mlflow

    version = mlflow.MlflowClient().get_model_version("deepsweep-mlp-digits", "1")
    assert mlflow.get_run(version.run_id).data.tags["mlflow.parentRunId"] == best["run_id"]


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's Python block, as written, with the run's folder moved under tmp_path."""
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPSWEEP_ROOT", str(ROOT))
    namespace: dict = {}
    exec(compile(block.replace('deepsweep.run([', f'deepsweep.run(workdir={str(tmp_path / "r")!r}, overrides=['), "README", "exec"), namespace)
    assert namespace["result"].metrics["evaluate.accuracy"] > 0.5
