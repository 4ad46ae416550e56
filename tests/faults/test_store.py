"""The tracking store never loses a run: concurrent writers on one fresh SQLite store, retries on a locked
database; reports and outputs safe to open."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from conftest import FAST, ROOT, deepsweep_cli, mlflow_server

WRITER = """
    import sys, time
    import mlflow
    from mlflow.entities import Metric
    from deepsweep.config import compose
    from deepsweep.tracking.runs import retry_locked, start_run
    with start_run(compose([]), run_name=sys.argv[1]) as run:
        client = mlflow.MlflowClient()
        for epoch in range(20):  # one write per epoch, as the run logger writes at most: the most contention
            metric = Metric("train/loss", 1.0 / (epoch + 1), int(time.time() * 1000), epoch)
            retry_locked(client.log_batch, run.info.run_id, metrics=[metric], synchronous=True)
"""

JOBS, ROUNDS = 6, 2  # the first round races on a fresh store; the second on one in use


@pytest.mark.slow
def test_concurrent_writers_on_a_fresh_sqlite_store_lose_nothing(tmp_path):
    import mlflow

    store = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "DEEPSWEEP_ROOT": str(ROOT)}
    for round_ in range(ROUNDS):
        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), f"r{round_}j{job}"], env=env,
                                  stderr=subprocess.PIPE, text=True) for job in range(JOBS)]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), "\n".join(errors)[-3000:]
    client = mlflow.MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("deepsweep").experiment_id], max_results=1000)
    assert sorted(r.info.run_name for r in runs) == sorted(f"r{r}j{j}" for r in range(ROUNDS) for j in range(JOBS))
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 20


def test_a_locked_database_is_retried_then_reported(monkeypatch):
    from deepsweep.tracking import runs

    monkeypatch.setattr(runs.time, "sleep", lambda s: None)
    calls = []

    def flaky(value):
        calls.append(value)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return value

    assert runs.retry_locked(flaky, 5) == 5 and len(calls) == 3

    def always_locked():
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError, match="database is locked"):
        runs.retry_locked(always_locked, attempts=4)

    def other_error():
        calls.append("other")
        raise ValueError("no such table")

    calls.clear()
    with pytest.raises(ValueError):
        runs.retry_locked(other_error)
    assert calls == ["other"]  # not retried


def test_report_cells_cannot_run_formulas_or_break_tables():
    import csv
    import io

    from deepsweep.tracking.report import render

    rows = [{"run_name": "=HYPERLINK(\"http://x\")", "status": "FAILED", "params": {"a": "1"},
             "metrics": {"finetune.best_val_acc": -0.5}, "error": "ValueError: <b>a|b</b>, \"quoted\"\nsecond line"},
            {"run_name": "ok", "status": "FINISHED", "params": {"a": "2"},
             "metrics": {"finetune.best_val_acc": 0.9}, "error": ""}]
    md, csv_text = render(rows, "finetune.best_val_acc")
    parsed = list(csv.reader(io.StringIO(csv_text)))
    assert all(len(row) == len(parsed[0]) for row in parsed)
    failed = next(row for row in parsed if "FAILED" in row)
    assert failed[0] == "'=HYPERLINK(\"http://x\")"
    assert "-0.5000" in failed  # a negative number stays a number
    assert 'ValueError: <b>a|b</b>, "quoted"' in failed  # the CSV keeps the text, quoted by the csv module
    line = next(line for line in md.splitlines() if "FAILED" in line)
    assert "&lt;b&gt;a\\|b&lt;/b&gt;" in line and "<b>" not in line


def test_outputs_get_the_permissions_of_any_new_file(tmp_path):
    from deepsweep.utils.io import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "stage") as out:
            write_json(out / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "stage").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "stage" / "metrics.json").stat().st_mode) == 0o644


def test_gpu_slot_folder_must_be_the_users_own(tmp_path):
    from deepsweep.launch import gpu_slot

    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "slots"
    link.symlink_to(target)
    with pytest.raises(PermissionError, match="not a folder of this user"):
        with gpu_slot(1, lock_dir=link):
            pass
    with gpu_slot(1, lock_dir=tmp_path / "own") as index:
        assert index == 0


@pytest.mark.slow
def test_a_parallel_sweep_through_a_real_mlflow_server_records_every_run(tmp_path):
    """The cluster set-up the README recommends over SQLite on a shared file system: jobs log over HTTP."""
    import mlflow

    with mlflow_server(tmp_path / "server.db", tmp_path) as url:
        # Each value alone passes the up-front check; autoencoder with 0 epochs does not: that job is refused
        # in its own process (a FAILED child run with the message) and the other three finish.
        result = deepsweep_cli("run", "-m", "pretrain=none,autoencoder", "pretrain.epochs=1,0", FAST[0], *FAST[2:],
                               "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep", cwd=tmp_path,
                               env={"MLFLOW_TRACKING_URI": url})
        assert result.returncode == 0, result.stderr[-3000:]
        client = mlflow.MlflowClient(tracking_uri=url)
        runs = client.search_runs([client.get_experiment_by_name("deepsweep").experiment_id], max_results=1000)
    stages = [r.data.tags.get("deepsweep.stage") for r in runs]
    # 1 parent, 4 jobs, 4 stages for each of the 3 that ran: every one recorded and ended.
    assert sorted(stages) == sorted(["sweep"] + ["pipeline"] * 4 + ["prepare", "pretrain", "finetune", "evaluate"] * 3)
    (refused,) = [r for r in runs if r.info.status != "FINISHED"]
    assert refused.info.status == "FAILED" and refused.data.tags["deepsweep.stage"] == "pipeline"
    assert "pretrain.epochs: 0 is out of range" in refused.data.tags["deepsweep.error"]
    assert "4 jobs, 1 failed" in (tmp_path / "sweep" / "sweep_report.md").read_text()


def test_a_dataset_insert_lost_to_a_concurrent_job_is_retried(compose, monkeypatch):
    """Two prepare stages logging the same dataset at once: the store refuses the second insert; the stage
    tries again (and then only links the existing dataset) instead of failing its job."""
    import mlflow
    import numpy as np
    from mlflow.exceptions import MlflowException

    from deepsweep.stages.prepare import datasets, log_datasets

    calls = []
    original = mlflow.MlflowClient.log_inputs

    def racing_log_inputs(self, run_id, datasets=None, models=None):
        calls.append(datasets[0].tags[0].value)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return original(self, run_id, datasets=datasets, models=models)

    monkeypatch.setattr(mlflow.MlflowClient, "log_inputs", racing_log_inputs)
    split = (np.zeros((4, 2), dtype=np.float32), np.zeros(4, dtype=np.int64))
    mlflow.set_experiment("dataset race")  # this test's fresh store: not the experiment an earlier test left active
    with mlflow.start_run() as run:
        log_datasets(run.info.run_id, datasets(compose(), {"train": split, "val": split}))
    assert calls == ["train", "train", "val"]
    logged = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert sorted(i.tags[0].value for i in logged) == ["train", "val"]


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that refuses every connection: bound by this test, never listening."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


def test_a_sweep_against_an_unreachable_server_stops_before_any_work_in_one_line(tmp_path, closed_port):
    """MLflow retries a server that is down for minutes in each process (the sweep's start took 4 min, then
    launched every job anyway): the run is refused up front, naming the key, with nothing started."""
    url = f"http://user:secret@127.0.0.1:{closed_port}"
    result = deepsweep_cli("run", "-m", "seed=0,1", "pretrain=none", "hydra.sweep.dir=sweep",
                           f"logger.tracking_uri={url}", cwd=tmp_path, env={"no_proxy": "*", "NO_PROXY": "*"})
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"deepsweep: error: logger.tracking_uri: {url.replace('secret', '***')}: no MLflow "
                           "server answers there"), line
    assert "secret" not in result.stderr + result.stdout
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "outputs").exists()


def test_the_store_check_names_where_the_uri_came_from_and_what_answers_there(compose, monkeypatch, tmp_path,
                                                                            closed_port):
    import http.server
    import threading

    from deepsweep.config import ConfigError
    from deepsweep.tracking import runs

    monkeypatch.setattr(runs, "_CHECKED", set())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port}/mlflow")
    monkeypatch.setenv("no_proxy", "*")  # the probe goes to 127.0.0.1 itself, whatever proxy the machine has
    with pytest.raises(ConfigError, match=r"^\$MLFLOW_TRACKING_URI: http://127\.0\.0\.1:\d+/mlflow: no MLflow server"):
        runs.check_store(compose())
    with pytest.raises(ConfigError, match=r"^logger\.tracking_uri: sqlite:////proc/deepsweep/x\.db: cannot create the "
                                          r"folder /proc/deepsweep"):
        runs.check_store(compose("logger.tracking_uri=sqlite:////proc/deepsweep/x.db"))

    for uri in (str(tmp_path / "mlruns"), f"file://{tmp_path / 'mlruns'}"):  # MLflow 3 refuses its file store
        with pytest.raises(ConfigError, match="a folder is MLflow's file store, which MLflow 3 refuses unless "
                                              "MLFLOW_ALLOW_FILE_STORE=true; allowed: sqlite:///"):
            runs.check_store(compose(f"logger.tracking_uri={uri}"))
    with pytest.raises(ConfigError, match=r"^logger\.tracking_uri: foo://bar: no tracking store has the scheme 'foo'"):
        runs.check_store(compose("logger.tracking_uri=foo://bar"))
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    with pytest.raises(ConfigError, match=rf"^logger\.tracking_uri: sqlite:///{text}: {text} is not an SQLite database"):
        runs.check_store(compose(f"logger.tracking_uri=sqlite:///{text}"))

    asked, answers = [], {}

    class Answering(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_response(answers.get(self.path.split("?")[0].rsplit("/", 1)[-1], 404))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        answers["health"] = 401  # a server behind authentication: it answers, and MLflow reports what it answers
        runs.check_store(compose(f"logger.tracking_uri={url}/mlflow/"))
        assert asked == ["/mlflow/health"]
        answers.update(health=404, search=200)  # an MLflow-compatible server without /health: its REST API answers
        runs.check_store(compose(f"logger.tracking_uri={url}/compatible"))
        assert asked[-1] == "/compatible/api/2.0/mlflow/experiments/search?max_results=1"
        answers.update(health=404, search=404)  # a web server, but no MLflow server: every one serves /health
        with pytest.raises(ConfigError, match=r"a web server answers there, but not an MLflow server \(GET /health "
                                              r"and the REST API: 404\)"):
            runs.check_store(compose(f"logger.tracking_uri={url}"))
        answers["health"] = 502  # a proxy whose MLflow server is down: MLflow would retry it for minutes
        with pytest.raises(ConfigError, match=r"a proxy answers there, but no MLflow server behind it \(GET /health: 502\)"):
            runs.check_store(compose(f"logger.tracking_uri={url}/proxied"))
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConfigError, match=r"no MLflow server answers there \(nonnumeric port"):
        runs.check_store(compose("logger.tracking_uri=http://127.0.0.1:abc"))


def test_a_store_that_fails_its_first_request_is_one_line_not_a_traceback(compose, monkeypatch):
    import mlflow

    from deepsweep.errors import TrackingError
    from deepsweep.tracking import runs

    def refuse(self, name):
        raise mlflow.exceptions.MlflowException("API request failed with error code 500 != 200.\nResponse body: ...")

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", refuse)
    with pytest.raises(TrackingError) as failed:
        runs.setup(compose())
    assert str(failed.value) == (f"$MLFLOW_TRACKING_URI: {os.environ['MLFLOW_TRACKING_URI']}: the tracking store failed: "
                                 "MlflowException: API request failed with error code 500 != 200.")


def test_a_sweep_whose_parent_run_cannot_start_stops_instead_of_running_its_jobs(compose, tmp_path, monkeypatch):
    """Hydra turns an Exception in a callback's on_multirun_start into a warning and launches the jobs anyway,
    each without a parent run: the sweep callback stops the sweep with one line instead."""
    from omegaconf import OmegaConf

    from deepsweep.errors import Reported, TrackingError
    from deepsweep.tracking import runs, sweep

    def store_fails(cfg):
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(runs, "setup", store_fails)
    config = OmegaConf.merge(compose(), {"hydra": {"sweep": {"dir": str(tmp_path / "sweep")},
                                                   "overrides": {"task": ["seed=0,1"]}}})
    with pytest.raises(Reported) as stopped:
        sweep.MlflowSweepCallback().on_multirun_start(config)
    from deepsweep.utils.io import folder_lock

    with folder_lock(tmp_path / "sweep"):  # the folder is free again
        pass
    assert isinstance(stopped.value.error, TrackingError)
    assert str(stopped.value.error).startswith("the sweep's parent run could not be started in sqlite:///")
    assert str(stopped.value.error).endswith("RuntimeError: disk I/O error")
    assert not (tmp_path / "sweep" / sweep.PARENT_FILE).exists()


def test_a_sweep_whose_report_fails_says_so_and_deepsweep_report_finishes_it(tmp_path, isolated_tracking):
    """Hydra turns an Exception in on_multirun_end into a warning and exits 0, and the parent run was then failed
    at exit as if its process had died. Now the command fails in one line naming the report, the parent run
    records why, and `deepsweep report` builds the report from the jobs' runs and finishes the parent."""
    import mlflow

    from deepsweep.tracking.sweep import PARENT_FILE

    sweep = tmp_path / "sweep"
    (sweep / "sweep_report.md").mkdir(parents=True)  # the report cannot be written there
    result = deepsweep_cli("run", "-m", "seed=0,1", "pretrain=none", *FAST, "hydra/launcher=basic",
                           f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"deepsweep: error: {sweep}: its jobs ran, but the sweep's report failed: IsADirectoryError: ")
    client = mlflow.MlflowClient()
    parent = client.get_run((sweep / PARENT_FILE).read_text().strip())
    assert parent.info.status == "FAILED"
    assert parent.data.tags["deepsweep.error"].startswith("the sweep's report failed: IsADirectoryError")

    (sweep / "sweep_report.md").rmdir()
    again = deepsweep_cli("report", str(sweep), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and "deepsweep.error" not in parent.data.tags
    assert "2 jobs, 0 failed" in (sweep / "sweep_report.md").read_text()
