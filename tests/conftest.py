"""Shared fixtures: every test logs to its own SQLite MLflow store and writes under tmp_path."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Logging the MLflow model costs 0.23 s a job, evaluate's figures 0.32 s (make bench: a job in a
# warm worker): tests/test_api.py checks the model and tests/test_pipeline.py the figures, the others skip both.
FAST = ["trainer.max_epochs=2", "pretrain.epochs=1", "logger.log_model=false", "logger.figures=false"]
SHARED_DATA = ROOT.parent / "shared" / "data"
# xdist's workers share the cores (make test: 3 on CI's 2): each worker and the processes it starts get their
# share of threads (OMP_NUM_THREADS, which deepsweep.factory.set_threads honours), instead of every process
# spinning one OpenMP thread per core against the others. tests/test_sweep.py, test_api, test_pipeline and
# test_training under -n 2: 167 s with 2 threads a process, 151 s with 1.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


def requires_shared(*names: str):
    """Skip (with the reason) where ../shared/data/<name>, which the test mirror serves, is not beside the
    project; CI has it."""
    missing = [n for n in names if not (SHARED_DATA / n).is_dir()]
    return pytest.mark.skipif(bool(missing), reason=f"needs ../shared/data/{', '.join(missing)}")


@contextlib.contextmanager
def http_folder(folder: Path):
    """``folder`` served over HTTP on 127.0.0.1 (a thread of this process); yields the base URL and the list of
    paths requested so far."""
    import functools
    import http.server
    import threading

    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session", autouse=True)
def data_mirror():
    """Every download of the suite (and of the commands it starts) comes from ../shared/data over HTTP on
    127.0.0.1, through the mirror setting users have: no test needs the internet."""
    if not SHARED_DATA.is_dir():
        yield None
        return
    with http_folder(SHARED_DATA) as (url, _):
        previous = os.environ.get("DEEPSWEEP_DATA_MIRROR")
        os.environ["DEEPSWEEP_DATA_MIRROR"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("DEEPSWEEP_DATA_MIRROR", None)
            else:
                os.environ["DEEPSWEEP_DATA_MIRROR"] = previous


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store as MLflow creates it, made once per test process: creating one runs MLflow's
    schema migrations, 1.6-2.4 s here (against 0.04 s to copy the file), which every test that logs would
    pay again. The tests of store creation itself (tests/faults/test_store.py, test_bad_input.py's "no store
    was created") use stores of their own."""
    import mlflow

    store = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}").search_experiments()
    return store


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path, monkeypatch, empty_store):
    import sqlite3

    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store, db)
    # The Default experiment's artifact folder, which MLflow resolved when it made the store: this test's own.
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                           (str(tmp_path / "mlruns" / "0"),))
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # Stages call mlflow.set_tracking_uri, which outlives the env var: reset it for each test.
    mlflow.set_tracking_uri(uri)
    monkeypatch.setenv("DEEPSWEEP_ROOT", str(ROOT))
    monkeypatch.delenv("DEEPSWEEP_PARENT_RUN_ID", raising=False)
    yield tmp_path / "mlflow.db"
    # A test that called monkeypatch.undo() ended this isolation too (it shares the fixture), and whatever it
    # logged after that went to the project's own mlflow.db: use monkeypatch.context() for a partial undo.
    # (mlflow.set_tracking_uri also sets the variable: a stage run after the undo leaves it on the project's store.)
    project_store = f"sqlite:///{ROOT / 'mlflow.db'}"
    assert os.environ.get("MLFLOW_TRACKING_URI", project_store) != project_store, (
        "this test logged to the project's own mlflow.db: did it call monkeypatch.undo()? (monkeypatch.context() "
        "undoes only its own changes)")


@pytest.fixture(autouse=True)
def forget_prepared_data():
    """Each test starts as a fresh process would, without the data an earlier test prepared (a process keeps
    the last data set its prepare stage read: deepsweep.stages.prepare)."""
    yield
    prepare = sys.modules.get("deepsweep.stages.prepare")
    if prepare is not None:
        prepare.forget()


@pytest.fixture
def compose():
    from deepsweep.config import compose as _compose

    def make(*overrides: str):
        return _compose(list(overrides))

    return make


def deepsweep_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `deepsweep` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "deepsweep", *args],
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def project_copy(tmp_path):
    """A throwaway copy of the project (code, conf, DVC pipeline) inside its own git repo (as make bench times it)."""
    from deepsweep.bench import scratch_project

    return scratch_project(ROOT, tmp_path / "project")


@contextlib.contextmanager
def mlflow_server(store: Path, cwd: Path):
    """A real `mlflow server` on 127.0.0.1 over the SQLite file ``store`` (artifacts under ``cwd``); yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # One request worker and no job runner: mlflow server's defaults start 4 workers and a job-runner process,
    # each importing MLflow (about 3 s of CPU apiece here), which the 2 cores' other test then waits for.
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
         "--artifacts-destination", str(cwd / "server_artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=cwd, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not come up on 127.0.0.1")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def pytest_collection_modifyitems(items):
    """The slow tests (whole sweeps, DVC queues, servers: 20 s to 2 min each) start first on every worker, so
    no long test is left for the end with the other workers idle.

    xdist's work stealing (make test) first hands each of its N workers one contiguous slice of the list, the
    first N-th to the first worker, and an idle worker then steals from the end of another's queue. Sorted
    slow-first, every slow test landed in the first slice: one worker ran them one after another while the
    others ran the fast ones (with -n 3, DVC's queue test started 10 minutes in and the studies ran last, one
    after another). So each slice here starts with its share of the slow tests. The suite is CPU-bound on 2
    cores, so the wall time barely moved (788 s before, 804 s after, within one run's noise); what it removes
    is the dependence on one worker's queue."""
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    fast = [item for item in items if item.get_closest_marker("slow") is None]
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    ordered, left = [], len(items)
    for worker in range(workers):
        size = left // (workers - worker)  # as xdist's WorkStealingScheduling sizes the slices
        share = slow[worker::workers]
        take = max(0, size - len(share))
        ordered += share + fast[:take]
        del fast[:take]
        left -= size
    items[:] = ordered + fast
