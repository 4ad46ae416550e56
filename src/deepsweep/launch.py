"""How one sweep job fits the machine its launcher put it on.

The launchers (Hydra's joblib, Ray, submitit) decide *where* a job runs; this module only reads what
they decided: how many CPU threads the job may use, which GPU is its own, and whether an identical
job of the same sweep already finished (so a rerun of an interrupted sweep skips it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from deepsweep.provenance import fingerprint  # noqa: F401  (what a job computes: config, code, data, libraries)

FINGERPRINT_TAG = "deepsweep.fingerprint"


def optuna_search(hydra_cfg: DictConfig) -> bool:
    """Whether the sweep is an Optuna search (conf/hparams_search/): hydra-optuna-sweeper records a raising job
    as a FAILED trial but crashes on a NaN return (1.2: ``study.tell`` called twice), so its failed jobs raise
    where other sweeps' return NaN and go on."""
    return "optuna" in str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="")).lower()


def job_threads(launcher: DictConfig | None, cpu_count: int | None = None) -> int:
    """CPU threads for one job, from the launcher's own resource setting: joblib's ``n_jobs`` share the
    cores; Ray's ``ray.remote.num_cpus`` and submitit's ``cpus_per_task`` are the job's cores."""
    cores = cpu_count or os.cpu_count() or 1
    launcher = launcher or OmegaConf.create({})
    target = str(launcher.get("_target_", ""))
    if "ray" in target.lower():
        cpus = OmegaConf.select(launcher, "ray.remote.num_cpus")
        return max(1, int(cpus)) if cpus else cores
    if "submitit" in target.lower():
        cpus = launcher.get("cpus_per_task")
        return max(1, int(cpus)) if cpus else cores
    n_jobs = launcher.get("n_jobs", 1) or 1
    parallel = cores if n_jobs < 0 else min(int(n_jobs), cores)
    return max(1, cores // max(1, parallel))


@contextlib.contextmanager
def gpu_slot(num_gpus: int, jobs_per_gpu: int = 1, lock_dir: str | os.PathLike | None = None,
             poll_s: float = 0.5) -> Iterator[int]:
    """Hold one of ``num_gpus * jobs_per_gpu`` slots for the duration of a job; yields the GPU index.

    Parallel jobs on one machine (joblib workers) each take a free slot under an exclusive file lock, so
    no GPU ever holds more than ``jobs_per_gpu`` jobs; a job with no free slot waits for one. The OS drops
    a lock when its process dies, so a crashed job never leaves its GPU reserved."""
    if num_gpus < 1:
        raise ValueError("gpu_slot: no GPU to hand out")
    lock_dir = Path(lock_dir or Path(tempfile.gettempdir()) / f"deepsweep-gpu-slots-{os.getuid()}")
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # In a shared /tmp another user could have made this folder first, or planted links in it.
    info = lock_dir.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{lock_dir}: GPU slot folder is not a folder of this user; remove it or set TMPDIR")
    slots = num_gpus * max(1, jobs_per_gpu)
    while True:
        for slot in range(slots):
            fd = os.open(lock_dir / f"slot{slot}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            handle = os.fdopen(fd, "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield slot % num_gpus
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll_s)


def previous_runs(parent_run_id: str, digest: str) -> list[Any]:
    """Runs of this sweep (children of ``parent_run_id``) that had the same fingerprint, newest first."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{FINGERPRINT_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"],
    )


def finished_run(runs: list[Any]) -> Any | None:
    """The FINISHED one among a job's runs (``previous_runs``), if any: the job is done in this sweep."""
    return next((run for run in runs if run.info.status == "FINISHED"), None)
