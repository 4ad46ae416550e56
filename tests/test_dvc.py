"""The real DVC pipeline: `dvc repro` runs the stages, skips what is unchanged, re-runs what a param
touches, and `dvc exp run -S` composes conf/ through DVC's Hydra integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import deepsweep_cli

pytestmark = pytest.mark.slow


def dvc(project: Path, *args: str, tracking_env: bool = True) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DEEPSWEEP_ROOT": ""}
    if not tracking_env:  # as a user runs it: the default store, at the project root
        env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_repro_runs_then_skips_then_reruns_downstream(project_copy):
    written = deepsweep_cli("params", "trainer.max_epochs=2", "pretrain.epochs=1", cwd=project_copy,
                            env={"DEEPSWEEP_ROOT": str(project_copy)})
    assert written.returncode == 0, written.stderr

    assert ran(dvc(project_copy, "repro")) == ["prepare", "pretrain", "finetune", "evaluate"]
    metrics = json.loads((project_copy / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["accuracy"] > 0.5
    shown = dvc(project_copy, "metrics", "show", "--json")
    assert '"roc_auc"' in shown
    # Learning curves as DVC plots: one point per epoch and curve (2 finetune epochs, 1 pretraining epoch).
    plots = json.loads(dvc(project_copy, "plots", "show", "--json"))["data"]

    def points(title: str, y: str) -> list[float]:
        values = plots[title][0]["content"]["data"]["values"]
        return [float(v[y]) for v in values if v.get("field", y) == y]

    assert len(points("Fine-tuning loss", "train_loss")) == len(points("Fine-tuning loss", "val_loss")) == 2
    assert len(points("Fine-tuning validation accuracy", "val_acc")) == 2
    assert len(points("Pretraining loss", "val_loss")) == 1

    assert ran(dvc(project_copy, "repro")) == []

    # A fine-tuning param: the stages that read it run again. (--dry: DVC's decision, without the two stage
    # processes, about 20 s here; the run above showed the stages run.)
    params = project_copy / "params.yaml"
    original_params = params.read_text()
    params.write_text(original_params.replace("label_fraction: 1.0", "label_fraction: 0.5"))
    assert ran(dvc(project_copy, "repro", "--dry")) == ["finetune", "evaluate"]
    params.write_text(original_params)

    def stale() -> list[str]:
        """The stages whose own dependencies changed (``dvc repro`` would run these and what follows them)."""
        status = json.loads(dvc(project_copy, "status", "dvc.yaml", "--json"))
        return sorted(name.split(":")[-1] for name, changes in status.items() if changes)

    # A pretraining param makes pretrain stale, and evaluate, whose linear probe reads the pretrain group (and
    # through pretrain's output what follows; running it would only repeat what the label_fraction change showed).
    params.write_text(original_params.replace("  epochs: 1", "  epochs: 2"))
    assert stale() == ["evaluate", "pretrain"]
    params.write_text(original_params)

    # Code is a dependency too: an edit to a module every stage runs makes every stage stale, one to the
    # evaluate stage's own module only that stage.

    factory = project_copy / "src/deepsweep/factory.py"
    original = factory.read_text()
    factory.write_text(original + "\n# edited\n")
    assert stale() == ["evaluate", "finetune", "prepare", "pretrain"]
    factory.write_text(original)
    assert stale() == []
    # What Python writes beside the code is not code: bytecode in a folder a stage depends on changes nothing.
    cache = project_copy / "src/deepsweep/data/__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "loaders.cpython-311.pyc").write_bytes(b"bytecode")
    assert stale() == []
    evaluate = project_copy / "src/deepsweep/stages/evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# edited\n")
    assert stale() == ["evaluate"]


def test_experiments_set_params_through_hydra_and_run_on_parallel_queue_workers(project_copy):
    """`dvc exp run -S` composes conf/ through DVC's Hydra integration; queued, two run at once on `dvc queue`
    workers, and `dvc exp show` / `dvc plots diff` read what each wrote. (One test for both: each experiment is
    a whole pipeline of four stage processes, about 30 s of suite time.)"""
    import time

    # One sets a field of a group, the other also swaps a whole group option (init), as Hydra composes it.
    for lr, init in (("0.01", "he_normal"), ("0.003", "xavier_uniform")):
        out = dvc(project_copy, "exp", "run", "--queue", "-S", f"optimizer.lr={lr}", "-S", f"init={init}",
                  "-S", "trainer.max_epochs=1", "-S", "pretrain.epochs=1", "-S", "model.hidden_dims=[32]",
                  tracking_env=False)
        assert "Queued experiment" in out, out
    dvc(project_copy, "queue", "start", "-j", "2", tracking_env=False)
    deadline = time.monotonic() + 500
    while time.monotonic() < deadline:
        status = dvc(project_copy, "queue", "status", tracking_env=False)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc(project_copy, "exp", "show", "--json"))
    revisions = [rev for row in shown for exp in (row.get("experiments") or []) for rev in exp.get("revs", [])]
    assert len(revisions) == 2, shown
    results = {}
    for revision in revisions:
        data = revision["data"]
        recorded = data["params"]["params.yaml"]["data"]
        # What -S set, composed into the experiment's params.yaml by Hydra (the rest is conf/'s defaults).
        assert recorded["trainer"]["max_epochs"] == 1 and recorded["pretrain"]["epochs"] == 1
        assert recorded["model"]["hidden_dims"] == [32]
        results[recorded["optimizer"]["lr"]] = (recorded["init"], data["metrics"]["artifacts/evaluate/metrics.json"]["data"])
    assert sorted(results) == [0.003, 0.01], shown
    # The swapped group is the whole option file, not a renamed default.
    import yaml

    option = yaml.safe_load((project_copy / "conf" / "init" / "xavier_uniform.yaml").read_text())
    assert results[0.003][0] == option and option["scheme"] == "xavier_uniform", results[0.003][0]
    assert results[0.01][0]["name"] == "he_normal"
    # The readable table: the params that differ between the runs shown, and the metrics.
    # (This copy's first commit has no dvc.lock, so its code deps show as changed too: left out here.)
    header = dvc(project_copy, "exp", "show", "--only-changed", "--csv").splitlines()[0].split(",")
    assert {"model.hidden_dims", "trainer.max_epochs", "optimizer.lr", "accuracy", "roc_auc"} <= set(header), header
    assert len([h for h in header if not h.startswith("src/")]) <= 25, header
    # dvc plots diff overlays the two experiments' learning curves in one plot.
    names = [revision["name"] for revision in revisions]
    diff = json.loads(dvc(project_copy, "plots", "diff", *names, "--json"))["data"]
    assert set(diff["Fine-tuning loss"][0]["revisions"]) == set(names)
    # With no tracking setting, the queue workers' runs land in the project's own store (not in DVC's
    # temporary workspace copies, which are deleted): 4 stages of each experiment.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("deepsweep").experiment_id])
    evaluated = {float(r.data.params["optimizer.lr"]): r for r in runs if r.info.run_name == "evaluate"}
    assert sorted(evaluated) == [0.003, 0.01] and {r.info.status for r in runs} == {"FINISHED"}
    # What `dvc exp show` read from each experiment's metrics.json is what its evaluate stage recorded.
    for lr, (_, metrics) in results.items():
        recorded = evaluated[lr].data.metrics
        assert metrics["accuracy"] > 0.3 and {k: metrics[k] for k in ("accuracy", "roc_auc")} == pytest.approx(
            {k: recorded[f"evaluate.{k}"] for k in ("accuracy", "roc_auc")}), (lr, metrics, recorded)


def test_ready_made_pipelines_are_their_own_dvc_projects():
    """So the root's `dvc exp show` holds the root pipeline alone (it had 853 columns with them), and each
    runs from the root with `dvc --cd`."""
    root = Path(__file__).resolve().parents[1]
    from deepsweep.pipelines import names

    for name in names():
        assert (root / "pipelines" / name / ".dvc" / "config").is_file(), name
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--all"], cwd=root, capture_output=True,
                            text=True, timeout=120).stdout
    assert listed and "pipelines/" not in listed, listed
    listed = subprocess.run([sys.executable, "-m", "dvc", "--cd", "pipelines/mnist_lenet", "stage", "list"], cwd=root,
                            capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert [line.split()[0] for line in listed] == ["fetch", "prepare", "pretrain", "finetune", "evaluate"], listed
