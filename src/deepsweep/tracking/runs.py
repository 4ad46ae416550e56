"""One MLflow run per stage and per sweep job: flat params, per-epoch metrics, artifacts, lineage tags.

A run that dies is marked FAILED with the error as a tag; a run is never left RUNNING by a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from deepsweep import paths
from deepsweep.config import flatten

PARENT_RUN_ENV = "DEEPSWEEP_PARENT_RUN_ID"


def tracking_uri(cfg: DictConfig) -> str:
    """logger.tracking_uri, else $MLFLOW_TRACKING_URI, else an SQLite file at the project root.

    Always absolute: Lightning, Hydra and DVC may each run code from another cwd, and a relative
    store would scatter runs over several databases."""
    uri = cfg.logger.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{paths.project_root() / 'mlflow.db'}"
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


def setup(cfg: DictConfig) -> str:
    """Point MLflow at the configured store and experiment (created if new); return the experiment id."""
    import mlflow

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    name = cfg.logger.experiment_name
    with _store_lock(uri):
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(name, artifact_location=artifact_location(uri))
        )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_tags() -> dict[str, str]:
    """The code state a run came from: git commit and dirtiness, and a digest of dvc.lock."""
    root = paths.project_root()
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
    return tags


def config_tags(cfg: DictConfig) -> dict[str, str]:
    return {
        "deepsweep.family": str(cfg.model.name),
        "deepsweep.dataset": str(cfg.data.name),
        "deepsweep.pretrain": str(cfg.pretrain.name),
    }


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    items = [(k, "null" if v is None else str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow.log_params(dict(items[i : i + 100]))


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
    all_tags = {**git_tags(), **config_tags(cfg), **(tags or {})}
    with mlflow.start_run(
        run_name=run_name,
        nested=nested,
        parent_run_id=None if nested else parent_run_id,
        tags=all_tags,
    ) as run:
        try:
            log_params(flatten(cfg))
            mlflow.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
            yield run
        except BaseException as exc:
            mlflow.set_tag("deepsweep.error", f"{type(exc).__name__}: {exc}"[:4000])
            raise


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path)
