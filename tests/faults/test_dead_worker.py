"""A sweep survives a dead worker, and a long sweep through the parallel launcher loses no run.

One sweep of many tiny jobs through the default launcher (hydra/launcher=parallel), while a thread plays
the out-of-memory killer: it kill -9s the worker process of one job each time that job starts. That job
fails with the reason; the jobs the broken pool took down with it run again; every other job finishes;
the report is written; no run is left RUNNING and none is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from conftest import ROOT
from deepsweep.tracking import sweep
from hydra_plugins.deepsweep_joblib_launcher import surviving_launcher

pytestmark = pytest.mark.slow

JOBS = 10  # a long sweep, and twice as many jobs after the kill as before it
VICTIM = 3
# The smallest whole pipeline: no pretraining, one epoch, no files beyond what every job records.
TINY = ["pretrain=none", "trainer.max_epochs=1", "logger.log_model=false", "logger.log_checkpoints=false",
        "logger.figures=false"]


def _kill_each_start(marker: Path, stop: threading.Event, killed: list[int]) -> None:
    """kill -9 the process named in ``marker`` every time a new one writes it (as an OOM killer would, again)."""
    while not stop.is_set():
        try:
            pid = int(marker.read_text())
        except (OSError, ValueError):
            pid = None
        if pid and pid not in killed:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def test_a_killed_worker_fails_its_job_and_the_long_sweep_goes_on(tmp_path, isolated_tracking):
    sweep_dir = tmp_path / "sweep"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_each_start, args=(sweep_dir / ".jobs_started" / str(VICTIM), stop, killed))
    killer.start()
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "deepsweep", "run", "-m", f"seed=range(0,{JOBS})", *TINY,
             f"hydra.sweep.dir={sweep_dir}", "hydra.launcher.n_jobs=2"],
            cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        stop.set()
        killer.join()
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    # Killed once in the pool (which then killed the other worker too) and once when run alone.
    assert len(killed) == 2, killed
    assert "a worker process died" in result.stdout + result.stderr  # Hydra logs to stdout

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=10000)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("deepsweep.stage") == "sweep"]
    assert parent.info.status == "FINISHED"
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = {int(r.data.params["seed"]) for r in jobs if r.info.status == "FINISHED"}
    assert finished == set(range(JOBS)) - {VICTIM}
    victim = [r for r in jobs if r.data.tags.get("deepsweep.job") == str(VICTIM)]
    assert victim and all(r.info.status != "FINISHED" for r in victim)
    assert any(r.data.tags.get("deepsweep.error", "").startswith("WorkerDied: its worker process died while "
                                                                    "running alone") for r in victim)
    # Every finished job has its four stage runs, ended: its own, or (a job the broken pool took down, rerun)
    # those its killed attempt had finished, which the rerun reused and names in its tags.
    by_id = {r.info.run_id: r for r in runs}
    for job in (r for r in jobs if r.info.status == "FINISHED"):
        stages = {r.data.tags["deepsweep.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == job.info.run_id}
        stages.update({key.split(".")[-1]: by_id[value] for key, value in job.data.tags.items()
                       if key.startswith("deepsweep.resumed.")})
        assert sorted(stages) == ["evaluate", "finetune", "prepare", "pretrain"]
        assert all(s.info.status == "FINISHED" for s in stages.values()), \
            {name: (s.info.status, s.data.tags.get("deepsweep.error")) for name, s in stages.items()}
    # The launcher's copy of the end markers' folder name is the sweep callback's.
    assert surviving_launcher.DONE_DIR == sweep.DONE_DIR

    report = (sweep_dir / "sweep_report.md").read_text()
    assert "## Failed jobs" in report and "WorkerDied" in report
    # The figures docs/reliability.md quotes.
    print(f"\ndead worker soak: {JOBS} jobs, {len(killed)} kills, {len(jobs)} runs recorded "
          f"({len(finished)} finished), 0 lost, 0 RUNNING, {wall:.0f} s")
