"""One writer per output folder; a killed process's leftovers (temp folders, RUNNING runs) are cleaned and
marked by the next process; a stage refuses inputs of different pipeline runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, deepsweep_cli
from deepsweep.errors import FolderInUse
from deepsweep.utils.io import folder_lock, write_json


def child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "DEEPSWEEP_ROOT": str(ROOT)})


HOLD = """
    import sys, time
    from deepsweep.utils.io import folder_lock
    with folder_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
"""


def test_a_second_writer_is_refused_naming_the_folder_and_the_holder(tmp_path, compose):
    from deepsweep.stages.pipeline import execute, run_all

    folder = tmp_path / "run"
    holder = child(HOLD, str(folder))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse, match=rf"{folder}: in use by process {holder.pid} on "):
            with folder_lock(folder):
                pass
        # The whole pipeline and a single stage refuse before writing or recording anything.
        with pytest.raises(FolderInUse):
            run_all(compose(), folder)
        with pytest.raises(FolderInUse):
            execute("prepare", compose(), folder)
        assert sorted(p.name for p in folder.iterdir()) == [".deepsweep.lock"]
    finally:
        holder.kill()
        holder.wait()
    # The OS drops the lock of a killed process: the folder is free again.
    with folder_lock(folder):
        pass


def test_default_run_folders_differ_for_runs_started_together(tmp_path):
    args = ("run", "--cfg", "hydra", "--resolve", "-p", "hydra.run.dir")
    procs = [subprocess.Popen([sys.executable, "-m", "deepsweep", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    dirs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(d.startswith("outputs/runs/") for d in dirs), dirs
    assert dirs[0] != dirs[1]


KILLED_IN_ATOMIC_DIR = """
    import os, signal, sys
    from pathlib import Path
    from deepsweep.utils.io import atomic_dir, folder_lock
    with folder_lock(sys.argv[1]):
        with atomic_dir(Path(sys.argv[1]) / "prepare") as out:
            (out / "half.txt").write_text("half-written")
            os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_next_writer_removes_what_a_killed_one_left(tmp_path, compose):
    from deepsweep.stages.pipeline import execute

    artifacts = tmp_path / "artifacts"
    victim = child(KILLED_IN_ATOMIC_DIR, str(artifacts))
    victim.wait(timeout=120)
    assert victim.returncode == -signal.SIGKILL
    leftovers = [p for p in artifacts.iterdir() if p.name.endswith(".tmp")]
    assert leftovers and not (artifacts / "prepare").exists()  # no partial output in place
    execute("prepare", compose(), artifacts)
    assert not any(p.name.endswith(".tmp") for p in artifacts.iterdir())
    assert (artifacts / "prepare" / "run.json").is_file()


KILLED_IN_RUN = """
    import os, signal, sys
    from deepsweep.config import compose
    from deepsweep.tracking.runs import start_run
    with start_run(compose([]), run_name="victim"):
        print("started", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _run_left_by_a_killed_process():
    """A run whose process was killed with SIGKILL inside it: (the process, a client, the experiment, the run)."""
    import mlflow

    victim = child(KILLED_IN_RUN)
    out, _ = victim.communicate(timeout=120)
    assert "started" in out and victim.returncode == -signal.SIGKILL
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("deepsweep").experiment_id
    (run,) = client.search_runs([experiment])
    return victim, client, experiment, run


def test_a_run_whose_process_was_killed_is_marked_by_the_next_process(tmp_path, compose):
    from deepsweep.tracking import runs

    victim, client, experiment, run = _run_left_by_a_killed_process()
    assert run.info.status == "RUNNING"  # what the kill left
    runs._READY.clear()  # a new process: the first to open the store
    runs.setup(compose())
    run = client.get_run(run.info.run_id)
    assert run.info.status == "KILLED"
    assert f"process {victim.pid} on " in run.data.tags["deepsweep.error"]
    # A live process's run is left alone.
    with runs.start_run(compose(), run_name="alive") as alive:
        assert runs.mark_dead_runs(client, [experiment]) == []
        assert client.get_run(alive.info.run_id).info.status == "RUNNING"


def test_a_run_whose_process_is_a_zombie_is_marked(tmp_path, compose):
    """A process that died but is not yet reaped (a sweep worker its pool has not joined) still answers
    kill(pid, 0) with its start time: it counts as dead all the same."""
    import time

    import mlflow

    from deepsweep.tracking import runs

    victim = child(KILLED_IN_RUN)
    assert victim.stdout.readline().strip() == "started"
    stat = f"/proc/{victim.pid}/stat"
    deadline = time.monotonic() + 60
    while open(stat).read().rsplit(")", 1)[1].split()[0] != "Z":  # killed, and not waited for
        assert time.monotonic() < deadline, "the child did not become a zombie"
        time.sleep(0.05)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("deepsweep").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.status == "RUNNING"
    assert runs.mark_dead_runs(client, [experiment]) == [run.info.run_id]
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    victim.communicate(timeout=60)


def test_a_sweep_that_dies_marks_the_runs_its_dead_workers_left_running(compose):
    """At the sweep process's exit, with its parent run still RUNNING: the parent ends FAILED, and so does a
    run whose worker process died with the sweep, at once rather than when the next process opens the store."""
    from deepsweep.tracking import runs, sweep

    victim, client, experiment, worker_run = _run_left_by_a_killed_process()
    # As if this process had opened the store before the worker died (opening it marks dead processes' runs).
    runs.setup(compose())
    client.update_run(worker_run.info.run_id, status="RUNNING")
    client.delete_tag(worker_run.info.run_id, "deepsweep.error")
    parent = client.create_run(experiment, tags=runs.process_tags()).info.run_id
    sweep._fail_if_running(parent)
    assert client.get_run(parent).info.status == "FAILED"
    assert client.get_run(worker_run.info.run_id).info.status == "KILLED"
    assert f"process {victim.pid} on " in client.get_run(worker_run.info.run_id).data.tags["deepsweep.error"]


def test_inputs_of_different_pipeline_runs_stop_the_stage(tmp_path, compose):
    from deepsweep.stages.pipeline import execute

    artifacts = tmp_path / "artifacts"
    for stage, pipeline in (("prepare", "aaa"), ("pretrain", "bbb")):
        write_json(artifacts / stage / "run.json", {"stage": stage, "run_id": stage, "pipeline_id": pipeline})
    with pytest.raises(FileNotFoundError, match="inputs come from different pipeline runs.*prepare: aaa, pretrain: bbb"):
        execute("finetune", compose(), artifacts)
    assert not (artifacts / "finetune").exists()


def test_two_runs_in_one_folder_through_the_cli(tmp_path):
    """Two `deepsweep run` given the same folder: one runs, the other stops at once with one line."""
    folder = tmp_path / "shared_run"
    holder = child(HOLD, str(folder))
    try:
        assert holder.stdout.readline().strip() == "held"
        result = deepsweep_cli("run", f"hydra.run.dir={folder}", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"deepsweep: error: {folder}: in use by process {holder.pid}")
    assert "Traceback" not in result.stderr


def test_two_sweeps_in_one_folder_and_a_study_cleared_under_its_running_sweep_are_refused(tmp_path, monkeypatch):
    """A sweep holds its folder while it runs: a second `deepsweep run -m` given it stops at once with one line,
    before it opens the store (it would have taken over the parent run and the progress markers), and
    `deepsweep study` does not empty the folder of its own sweep still running."""
    from deepsweep import studies

    folder = tmp_path / "sweep"
    holder = child(HOLD, str(folder))
    try:
        assert holder.stdout.readline().strip() == "held"
        (folder / "0").mkdir()
        store = tmp_path / "store.db"
        result = deepsweep_cli("run", "-m", "seed=0,1", "pretrain=none", f"hydra.sweep.dir={folder}",
                               "hydra/launcher=basic", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
        monkeypatch.setattr(studies, "sweep_dir", lambda name, budget, part=0: folder)
        with pytest.raises(FolderInUse, match=rf"{folder}: in use by process {holder.pid} on "):
            studies.run_sweep(studies.load("optimizers"), "small")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"deepsweep: error: {folder}: in use by process {holder.pid}")
    assert not store.exists() and sorted(p.name for p in folder.iterdir()) == [".deepsweep.lock", "0"]


def test_a_kill_between_the_two_renames_keeps_the_previous_output(tmp_path):
    """atomic_dir replacing an output moves the old one aside, then the new one in: killed in between, the
    folder holds .prepare.old (the previous output, whole) and no prepare. The next writer puts it back."""
    artifacts = tmp_path / "artifacts"
    (artifacts / ".prepare.old").mkdir(parents=True)
    (artifacts / ".prepare.old" / "run.json").write_text('{"run_id": "previous"}')
    (artifacts / ".prepare.k2j4.tmp").mkdir()
    with folder_lock(artifacts):
        pass
    assert (artifacts / "prepare" / "run.json").read_text() == '{"run_id": "previous"}'
    assert sorted(p.name for p in artifacts.iterdir()) == [".deepsweep.lock", "prepare"]


def test_passwords_in_overrides_never_reach_run_names_or_tags():
    from deepsweep.tracking.runs import redact

    text = "logger.tracking_uri=http://alice:s3cret@[::1]:5000 seed=1 other=https://u:p%40ss@Host.Example/x"
    assert redact(text) == "logger.tracking_uri=http://alice:***@[::1]:5000 seed=1 other=https://u:***@Host.Example/x"
    assert redact("logger:\n  tracking_uri: 'postgresql://me:it''s#x@db/m'\n") == \
        "logger:\n  tracking_uri: 'postgresql://me:***@db/m'\n"
