"""One MLflow run per stage and per sweep job: flat params, per-epoch metrics, artifacts, lineage tags.

A run that dies is marked FAILED with the error as a tag; a run is never left RUNNING by a crash.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from deepsweep import paths
from deepsweep.config import flatten
from deepsweep.utils.retry import retry_locked  # noqa: F401 - tracking.runs.retry_locked is what callers use

PARENT_RUN_ENV = "DEEPSWEEP_PARENT_RUN_ID"
INTERRUPTED = "interrupted (Ctrl-C or SIGINT)"


def tracking_uri(cfg: DictConfig) -> str:
    """logger.tracking_uri, else $MLFLOW_TRACKING_URI, else an SQLite file at the project root (the original
    project's, for a DVC queued experiment: paths.home_root).

    Always absolute: Lightning, Hydra and DVC may each run code from another cwd, and a relative
    store would scatter runs over several databases."""
    uri = cfg.logger.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{paths.home_root() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{paths.resolve(uri[len('sqlite:///'):])}"
    return uri


def _sqlite_file(uri: str) -> Path | None:
    """The database file of an SQLite store URI; None for any other store."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> str | None:
    """Artifacts of an SQLite store live beside the database file (``mlartifacts/``), whatever the cwd
    that created the experiment; a server store chooses its own."""
    db = _sqlite_file(uri)
    return (db.parent / "mlartifacts").as_uri() if db is not None else None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize first access to an SQLite store across processes: MLflow creates and migrates the schema
    on first use, and two processes doing it at once (parallel sweep jobs or DVC queue workers on a fresh
    database) break alembic's version bookkeeping."""
    db = _sqlite_file(uri)
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_CREDENTIALS = re.compile(r"(://[^/@\s:]*:)[^@\s/]*@")


def redact(text: str | None) -> str | None:
    """Text (a URI, an override list, a dumped config) with every URI password replaced by ***: params, tags,
    run names and logs never hold a credential. Works on the text as written: quoting, IPv6 hosts and case
    are left as they are."""
    return _CREDENTIALS.sub(r"\1***@", text) if text else text


def _process_stat(pid: int) -> tuple[str, str]:
    """Process ``pid``'s state letter and when it started (clock ticks since boot), from /proc; ("", "") where
    /proc has no such process (or no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return "", ""


def _process_start(pid: int) -> str:
    """When process ``pid`` started, so a reused pid is not taken for the original."""
    return _process_stat(pid)[1]


def process_tags() -> dict[str, str]:
    """Which process writes a run: the next process that opens the store can tell a live run from one
    whose process was killed (kill -9, the OOM killer) and so never ended it."""
    pid = os.getpid()
    return {"deepsweep.host": socket.gethostname(), "deepsweep.pid": str(pid),
            "deepsweep.pid_start": _process_start(pid)}


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state, started = _process_stat(pid)
    # A zombie (exited, not yet reaped by its parent: a sweep worker whose pool has not joined it) still answers
    # kill(pid, 0) and keeps its start time, but will never end its run.
    if state in ("Z", "X"):
        return False
    return not start or started == start


def mark_dead_runs(client: Any, experiment_ids: list[str]) -> list[str]:
    """End as KILLED every RUNNING run of this host whose process is gone, with the reason in
    ``deepsweep.error``. Returns their ids. Runs of other hosts (a cluster's nodes) are left alone."""
    host = socket.gethostname()
    runs = retry_locked(client.search_runs, experiment_ids,
                        filter_string=f"attributes.status = 'RUNNING' and tags.`deepsweep.host` = '{host}'")
    marked = []
    for run in runs:
        tags = run.data.tags
        try:
            pid = int(tags.get("deepsweep.pid", ""))
        except ValueError:
            continue
        if _alive(pid, tags.get("deepsweep.pid_start", "")):
            continue
        retry_locked(client.set_tag, run.info.run_id, "deepsweep.error",
                     f"process {pid} on {host} ended without ending this run (interrupted or killed: Ctrl-C in a "
                     f"sweep's worker, kill -9, the OOM killer, a power loss); marked KILLED by process {os.getpid()}")
        retry_locked(client.set_terminated, run.info.run_id, "KILLED")
        marked.append(run.info.run_id)
    return marked


def first_line(exc: BaseException, limit: int = 1000) -> str:
    """An error's first line, credentials redacted, cut to ``limit`` characters: for one-line messages and tags
    (MLflow's errors go on with the server's whole response, and name the URI with its password)."""
    return (redact((str(exc).strip().splitlines() or [""])[0]) or "")[:limit]


def _uri_key(cfg: DictConfig) -> str:
    """Where the store's URI came from, as the user would set it."""
    from_env = not cfg.logger.get("tracking_uri") and os.environ.get("MLFLOW_TRACKING_URI")
    return "$MLFLOW_TRACKING_URI" if from_env else "logger.tracking_uri"


_CHECKED: set[str] = set()  # stores this process has found reachable


def _server_problem(uri: str) -> str | None:
    """Why no MLflow server answers at ``uri``, or None when one may: an answer that is an HTTP status other than
    those of a page or a backend that is not there, or a TLS refusal (a client certificate, a private CA: MLflow's
    own MLFLOW_TRACKING_* settings decide those)."""
    import http.client
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    base = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query="", fragment="")

    def status(path: str) -> int | str:
        try:
            urllib.request.urlopen(base._replace(path=base.path.rstrip("/") + path).geturl(), timeout=10).close()
            return 200
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(exc, ssl.SSLError) or isinstance(reason, ssl.SSLError):
                return 200
            return str(reason) or type(exc).__name__

    answer = status("/health")
    if isinstance(answer, str):
        return f"no MLflow server answers there ({answer})"
    if answer in (502, 503, 504):  # MLflow retries these for minutes too
        return f"a proxy answers there, but no MLflow server behind it (GET /health: {answer})"
    if answer == 404 and status("/api/2.0/mlflow/experiments/search?max_results=1") == 404:
        # Every `mlflow server` serves /health; a compatible server may not, but it serves the REST API.
        return "a web server answers there, but not an MLflow server (GET /health and the REST API: 404)"
    return None


_ALLOWED_STORES = ("sqlite:///path/mlflow.db (unset: the project's mlflow.db), http(s)://host:port of an `mlflow "
                   "server`, a database URI (postgresql://, mysql://, mssql://) or databricks")


def _store_schemes() -> set[str]:
    """The URI schemes MLflow has a tracking store for: its own, and those of installed plugins (the
    ``mlflow.tracking_store`` entry points MLflow loads)."""
    from importlib.metadata import entry_points

    try:
        from mlflow.store.db.db_types import DATABASE_ENGINES
    except ImportError:  # where MLflow moves it: the engines it has had since 1.0
        DATABASE_ENGINES = ["postgresql", "mysql", "sqlite", "mssql"]
    return {"http", "https", "file", "databricks", "databricks-uc", "uc", *DATABASE_ENGINES,
            *(entry.name for entry in entry_points(group="mlflow.tracking_store"))}


def check_store(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, a tracking store that cannot be reached or written, before any work.

    MLflow retries an unreachable server with exponential backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7 by
    default): a sweep against a server that is down spent 4 min 6 s in its start before Hydra turned the error
    into a warning, then launched its jobs, each retrying as long (``deepsweep run -m seed=0,1
    logger.tracking_uri=http://127.0.0.1:9``, MLflow 3.17). One request to the server's ``/health``, with a
    10 s timeout and no retry, tells a server that is not there from one that answers (what it answers, such as
    an authentication error, is MLflow's to report; ``_server_problem`` says which answers mean no server). An
    SQLite store's folder must be creatable and writable, and an existing one an SQLite database. A folder (MLflow's
    file store) and a scheme no installed store has are refused; other stores (Databricks, a database, a
    plugin's) are left to MLflow."""
    uri = tracking_uri(cfg)
    if uri in _CHECKED:
        return
    from deepsweep.errors import ConfigError

    key = _uri_key(cfg)
    db = _sqlite_file(uri)
    # A plain path has no scheme ("databricks" alone, a profile's store, is the one that does without "://").
    scheme = uri.split("://", 1)[0] if "://" in uri else ("databricks" if uri.startswith("databricks") else "file")
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{key}: {redact(uri)}: cannot create the folder {db.parent} ({exc.strerror}); "
                              "allowed: an SQLite file in a writable folder, or an MLflow server's URI") from None
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise ConfigError(f"{key}: {redact(uri)}: {db if db.exists() else db.parent} is not writable; "
                              "allowed: an SQLite file in a writable folder, or an MLflow server's URI")
        try:
            header = b"SQLite format 3\x00"  # what a missing or empty file counts as: MLflow creates the database
            if db.is_file() and db.stat().st_size:
                with open(db, "rb") as handle:  # its header only: a store grows to hundreds of MB
                    header = handle.read(16)
        except OSError as exc:
            raise ConfigError(f"{key}: {redact(uri)}: cannot read {db} ({exc.strerror}); allowed: an SQLite file "
                              "this user can read and write, or an MLflow server's URI") from None
        if header != b"SQLite format 3\x00":
            raise ConfigError(f"{key}: {redact(uri)}: {db} is not an SQLite database; allowed: an SQLite "
                              "file (MLflow creates a missing one), or an MLflow server's URI")
    elif scheme == "file":
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            raise ConfigError(f"{key}: {redact(uri)}: a folder is MLflow's file store, which MLflow 3 refuses unless "
                              f"MLFLOW_ALLOW_FILE_STORE=true; allowed: {_ALLOWED_STORES}")
    elif scheme not in _store_schemes():
        raise ConfigError(f"{key}: {redact(uri)}: no tracking store has the scheme {scheme!r}; "
                          f"allowed: {_ALLOWED_STORES}")
    elif scheme in ("http", "https"):
        problem = _server_problem(uri)
        if problem:
            raise ConfigError(f"{key}: {redact(uri)}: {problem}; allowed: the URI of a running `mlflow server`, or an "
                              "SQLite file (sqlite:///path/mlflow.db; unset, the project's mlflow.db)")
    _CHECKED.add(uri)


_READY: set[tuple[str, str]] = set()  # (store, experiment) pairs this process has set up


def setup(cfg: DictConfig) -> str:
    """Point MLflow at the configured store and experiment (created if new); return the experiment id.

    Once per process and store, runs left RUNNING by dead processes of this host are marked KILLED."""
    import mlflow

    check_store(cfg)
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    name = cfg.logger.experiment_name
    try:
        with _store_lock(uri):
            client = mlflow.MlflowClient()
            experiment = client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(name, artifact_location=artifact_location(uri))
            )
    except Exception as exc:  # the store's first answer: one line, not MLflow's or SQLAlchemy's traceback
        from deepsweep.errors import TrackingError

        raise TrackingError(f"{_uri_key(cfg)}: {redact(uri)}: the tracking store failed: {type(exc).__name__}: "
                            f"{first_line(exc)}") from exc
    mlflow.set_experiment(experiment_id=experiment_id)
    if (uri, experiment_id) not in _READY:
        _READY.add((uri, experiment_id))
        mark_dead_runs(client, [experiment_id])
    return experiment_id


def git_tags() -> dict[str, str]:
    """The code state a run came from: git commit and dirtiness, and a digest of dvc.lock. Read once per process
    and project (two git processes: a pipeline's five runs in one process share them)."""
    return dict(_git_tags(paths.project_root()))


@functools.lru_cache(maxsize=4)
def _git_tags(root: Path) -> tuple[tuple[str, str], ...]:
    tags: dict[str, str] = {}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if commit:
            tags["mlflow.source.git.commit"] = commit
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root, capture_output=True, text=True, timeout=10,
            ).stdout.strip()
            tags["deepsweep.git_dirty"] = str(bool(dirty)).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    lock = root / "dvc.lock"
    if lock.is_file():
        tags["deepsweep.dvc_lock_md5"] = hashlib.md5(lock.read_bytes()).hexdigest()
    return tuple(tags.items())


def config_tags(cfg: DictConfig) -> dict[str, str]:
    """What the run is (family, data, pretraining) and what it was computed from (provenance digests)."""
    from deepsweep import provenance

    return {
        "deepsweep.family": str(cfg.model.name),
        "deepsweep.dataset": str(cfg.data.name),
        "deepsweep.pretrain": str(cfg.pretrain.name),
        **provenance.tags(cfg),
    }


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    params = {k: redact(v) if k == "logger.tracking_uri" else v for k, v in params.items()}
    items = [(k, "null" if v is None else str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        retry_locked(mlflow.log_params, dict(items[i : i + 100]))


@contextlib.contextmanager
def start_run(
    cfg: DictConfig,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[Any]:
    """An MLflow run holding the flattened config and the resolved config file.

    Nested under the active run when there is one (a stage inside a sweep job), else under
    ``parent_run_id``. On an exception the run ends FAILED with the error in ``deepsweep.error``."""
    import mlflow

    setup(cfg)
    nested = mlflow.active_run() is not None
    all_tags = {**git_tags(), **config_tags(cfg), **process_tags(), **(tags or {})}
    with mlflow.start_run(
        run_name=run_name,
        nested=nested,
        parent_run_id=None if nested else parent_run_id,
        tags=all_tags,
    ) as run:
        try:
            log_params(flatten(cfg))
            mlflow.log_text(redact(OmegaConf.to_yaml(cfg)), "config.yaml")
            yield run
        except KeyboardInterrupt:
            # Ctrl-C (or SIGINT from DVC or a scheduler): KILLED, as MLflow's UI shows a stopped run, not FAILED.
            mlflow.set_tag("deepsweep.error", INTERRUPTED)
            mlflow.end_run("KILLED")
            raise
        except BaseException as exc:
            mlflow.set_tag("deepsweep.error", f"{type(exc).__name__}: {exc}"[:4000])
            raise


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path)


def record_invalid_job(cfg: Any, parent_run_id: str, run_name: str, job: int, error: str) -> str:
    """A FAILED child run for a sweep job whose config was refused before it could start one: the sweep's
    report and the MLflow UI show every job, the refused ones with their error."""
    import mlflow

    try:
        uri = tracking_uri(cfg)
    except Exception:  # the refused config may not even have a usable logger group
        uri = tracking_uri(OmegaConf.create({"logger": {"tracking_uri": None}}))
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = retry_locked(client.get_run, parent_run_id).info.experiment_id
    run = retry_locked(client.create_run, experiment, run_name=run_name, tags={
        "mlflow.parentRunId": parent_run_id, "deepsweep.stage": "pipeline", "deepsweep.job": str(job),
        "deepsweep.error": f"ConfigError: {error}"[:4000], **process_tags()})
    retry_locked(client.set_terminated, run.info.run_id, "FAILED")
    return run.info.run_id
