"""A NaN or infinite loss or metric stops the job: named stage, epoch, step and value; FAILED MLflow run; no
metrics.json; best weights never from a non-finite epoch; in a sweep the other jobs go on."""

from __future__ import annotations

import pytest
import torch

from conftest import deepsweep_cli
from deepsweep.errors import NonFiniteError

DIVERGES = ["pretrain=none", "optimizer=sgd", "optimizer.lr=10000", "trainer.max_epochs=3"]


@pytest.mark.slow  # 20-45 s here: started first, so it does not leave a worker alone at the end
def test_a_diverging_run_fails_with_one_line_and_a_failed_run(tmp_path):
    import mlflow

    store = tmp_path / "store.db"
    result = deepsweep_cli("run", *DIVERGES, "hydra.run.dir=out", cwd=tmp_path,
                           env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("deepsweep: error: stage finetune: non-finite value at epoch 0, step "), result.stderr
    assert "= nan" in line and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "finetune").exists() and not (tmp_path / "out" / "evaluate").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("deepsweep").experiment_id])}
    assert runs["finetune"].info.status == "FAILED"
    assert "non-finite value at epoch 0" in runs["finetune"].data.tags["deepsweep.error"]
    assert runs[" ".join(DIVERGES)].info.status == "FAILED"
    assert runs["prepare"].info.status == "FINISHED"


def test_a_sweep_whose_every_job_diverged_fails_with_one_line(tmp_path):
    """Some failed jobs are a sweep's result (its report lists them, exit 0: tests/test_sweep.py); all of them
    failed is a sweep that failed."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'store.db'}"
    result = deepsweep_cli("run", "-m", *DIVERGES, "optimizer.lr=1e30", "seed=0,1", "hydra/launcher=basic",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": store})
    assert result.returncode == 1, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"deepsweep: error: {tmp_path / 'sweep'}: all 2 of its jobs failed (the first: "), line
    assert "non-finite value" in line and "Traceback" not in result.stderr
    assert "2 jobs, 2 failed" in (tmp_path / "sweep" / "sweep_report.md").read_text()
    parent = [r for r in mlflow.MlflowClient(store).search_runs([mlflow.MlflowClient(store).get_experiment_by_name(
        "deepsweep").experiment_id]) if r.data.tags.get("deepsweep.stage") == "sweep"]
    assert len(parent) == 1 and parent[0].info.status == "FAILED"


def test_a_non_finite_stage_result_is_never_written(tmp_path, compose, monkeypatch):
    from deepsweep.stages import prepare
    from deepsweep.stages.pipeline import execute

    monkeypatch.setattr(prepare, "run", lambda cfg, out, inputs, run: (out / "metrics.json").write_text("{}") and {"loss": float("inf")})
    with pytest.raises(NonFiniteError, match=r"stage prepare: non-finite result loss = inf"):
        execute("prepare", compose(), tmp_path / "artifacts")
    assert not (tmp_path / "artifacts" / "prepare").exists()


def test_best_weights_skip_a_non_finite_epoch():
    from types import SimpleNamespace

    from deepsweep.training.callbacks import BestWeights

    module = torch.nn.Linear(2, 1)
    best = BestWeights()
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={"val/loss": torch.tensor(1.0)})
    best.on_validation_end(trainer, module)
    kept = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        module.weight.fill_(7.0)
    trainer.current_epoch, trainer.callback_metrics["val/loss"] = 1, torch.tensor(float("nan"))
    best.on_validation_end(trainer, module)
    assert (best.best_score, best.best_epoch) == (1.0, 0)
    best.on_fit_end(SimpleNamespace(callback_metrics={}, current_epoch=1), module)
    assert torch.equal(module.weight, kept["weight"])

# In a sweep the diverging jobs fail and the others finish: tests/test_sweep.py::test_init_by_regularizer_sweep_and_its_report.
