"""kill -9 at two points of each training and evaluation stage, then the stage again (the command dvc.yaml
runs): no partial output is ever in place, every killed run is marked KILLED by the next process, and the final
metrics.json is byte for byte the one an uninterrupted pipeline writes (CPU, one thread).

The stage runs that complete go through tests/import_watch.py, each in a fresh interpreter as DVC runs it: pay
only for what runs, each stage imports no heavy library it does not use (``FORBIDDEN``; a failure names the
module and the chain of calls that imported it). One set of stage processes serves both checks: each costs
5-7 s of start-up here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from import_watch import FORBIDDEN

pytestmark = pytest.mark.slow

OVERRIDES = ["pretrain.epochs=8", "trainer.max_epochs=8", "trainer.num_threads=1", "logger.log_checkpoints=false"]
KILLED_STAGES = ("pretrain", "finetune", "evaluate")
# Of the stage's uninterrupted MLflow run duration, from its first output write: early (set-up, first epoch)
# and late (last epochs, writing). A third point at 40% cost 25-30 s of suite time and found nothing new.
KILL_FRACTIONS = (0.1, 0.6)


def stage(name: str, params: Path, artifacts: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deepsweep", "stage", name, "--params", str(params),
                             "--artifacts", str(artifacts)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def temps(artifacts: Path, name: str) -> set[str]:
    """The stage's temporary output folders (atomic_dir's), present now."""
    return {p.name for p in artifacts.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp")} \
        if artifacts.is_dir() else set()


def run_stage(name: str, params: Path, artifacts: Path, env: dict) -> list[str]:
    """The stage to its end, in a fresh interpreter watching its imports; the forbidden ones it made, with chains."""
    import json

    result = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "import_watch.py"), "stage", name,
                             "--params", str(params), "--artifacts", str(artifacts)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0 and (artifacts / name / "run.json").is_file()
    return [f"stage {name} imported {module} through:\n    " + "\n    ".join(reversed(chain[-12:]))
            for module, chain in report["imported"].items() if module in FORBIDDEN[name]]


def kill_at(name: str, params: Path, artifacts: Path, env: dict, delay: float) -> bool:
    """Start the stage, kill -9 it ``delay`` s after it starts writing its output; False if it finished first."""
    before = temps(artifacts, name)  # a killed attempt's leftovers, which this one removes on start
    proc = stage(name, params, artifacts, env)
    deadline = None
    while proc.poll() is None:
        if deadline is None and temps(artifacts, name) - before:
            deadline = time.monotonic() + delay
        if deadline is not None and time.monotonic() >= deadline:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def stage_seconds(client, experiment: str, workdir: Path) -> dict[str, float]:
    """Each stage's MLflow run duration in the uninterrupted pipeline: the span a kill should land in."""
    runs = client.search_runs([experiment], "tags.`deepsweep.stage` != 'pipeline'")
    return {r.info.run_name: (r.info.end_time - r.info.start_time) / 1000 for r in runs}


def test_killed_stages_leave_nothing_partial_and_the_rerun_matches_importing_only_what_each_uses(tmp_path):
    import mlflow

    from deepsweep.config import params_text

    params = tmp_path / "params.yaml"
    params.write_text(params_text(OVERRIDES))
    store = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "DEEPSWEEP_ROOT": str(ROOT)}
    client = mlflow.MlflowClient(tracking_uri=store)

    # The uninterrupted pipeline, in one process (the same stages as the stage commands, one start-up).
    clean = tmp_path / "uninterrupted"
    done = subprocess.run([sys.executable, "-m", "deepsweep", "run", *OVERRIDES, f"hydra.run.dir={clean}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    experiment = client.get_experiment_by_name("deepsweep").experiment_id
    seconds = stage_seconds(client, experiment, clean)

    faulty = tmp_path / "killed"
    wrong_imports = run_stage("prepare", params, faulty, env)
    kills = landed = 0
    for name in KILLED_STAGES:
        for fraction in KILL_FRACTIONS:
            if not kill_at(name, params, faulty, env, fraction * seconds[name]):
                continue
            kills += 1
            if (faulty / name).exists():
                # The kill came after the output's rename: what is in place is whole.
                assert (faulty / name / "run.json").is_file()
            else:
                landed += 1  # killed mid-stage: nothing of it is in place, only its temp folder
        wrong_imports += run_stage(name, params, faulty, env)
        assert not any(p.name.endswith(".tmp") for p in faulty.iterdir())
    assert landed >= len(KILL_FRACTIONS) * len(KILLED_STAGES) - 2, \
        f"only {landed} of {kills} kills landed before their stage's output"

    metrics = "evaluate/metrics.json"
    assert (faulty / metrics).read_bytes() == (clean / metrics).read_bytes()
    assert not wrong_imports, "\n".join(wrong_imports)

    runs = client.search_runs([experiment], max_results=1000)
    statuses = [r.info.status for r in runs]
    # Every kill mid-stage left a run that the next process marked KILLED; a kill after the output's rename
    # may have come after the run ended too (then it is FINISHED, and rightly so). None stays RUNNING.
    assert landed <= statuses.count("KILLED") <= kills and "RUNNING" not in statuses
    # The pipeline run and its 4 stages, prepare and the 3 final stages; plus post-rename kills that ended their run.
    assert 5 + 4 <= statuses.count("FINISHED") <= 5 + 4 + kills - statuses.count("KILLED")
    assert len(runs) == 5 + 4 + kills
    print(f"\nfault suite: {kills} kills ({landed} mid-stage), {len(runs)} runs recorded, "
          f"{statuses.count('KILLED')} marked KILLED, 0 lost")


def test_ctrl_c_ends_the_runs_killed_with_one_line(tmp_path):
    """Ctrl-C mid-fit: Lightning shuts down and calls sys.exit(1), which printed nothing, exited 1 and left the runs
    FAILED with 'SystemExit: 1'. Now the runs end KILLED as interrupted and the command says so (exit code 130)."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "DEEPSWEEP_ROOT": str(ROOT)}
    # Ctrl-C's disposition as a shell gives it: xdist's workers ignore SIGINT, and a child inherits that.
    # Output to files: a pipe nobody reads while the test waits would fill up and stop the run.
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "deepsweep", "run", "pretrain=none", "trainer.max_epochs=100000",
                                 "trainer.num_threads=1", f"hydra.run.dir={tmp_path / 'run'}"], env=env, stdout=out,
                                stderr=errors, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 240
        while "finetune epoch 1 (2/" not in (tmp_path / "err.txt").read_text():  # into its epochs
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    err = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("deepsweep: interrupted; its MLflow runs end KILLED")
    client = mlflow.MlflowClient(tracking_uri=store)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("deepsweep").experiment_id])}
    finetune = runs["finetune"]
    (pipeline,) = [r for name, r in runs.items() if name.startswith("pretrain=none")]
    for run in (finetune, pipeline):
        assert run.info.status == "KILLED" and run.data.tags["deepsweep.error"] == "interrupted (Ctrl-C or SIGINT)"
    assert runs["prepare"].info.status == "FINISHED"
