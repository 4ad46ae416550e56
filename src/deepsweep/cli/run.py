"""``deepsweep run``: the Hydra app. One job = the whole pipeline in-process, in the job's output folder.

    deepsweep run model=lenet init=xavier_uniform
    deepsweep run -m init=xavier_uniform,he_normal regularizer=dropout,l2   # parallel sweep
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from deepsweep import paths

log = logging.getLogger("deepsweep")


def _reuse_finished(parent: str, digest: str) -> dict[str, float] | None:
    """On a rerun of a sweep: the summary of this job's finished run, if one exists; a run of this job
    left RUNNING by an interrupted sweep (and its stage runs) is marked FAILED."""
    import mlflow

    from deepsweep.launch import finished_run, previous_runs

    client = mlflow.MlflowClient()
    runs = previous_runs(parent, digest)  # newest first
    done = finished_run(runs)
    for run in runs:
        if run is done:
            break
        if run.info.status == "RUNNING":
            stale = [run, *client.search_runs([run.info.experiment_id],
                                              filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")]
            for r in stale:
                if r.info.status == "RUNNING":
                    client.set_tag(r.info.run_id, "deepsweep.error", "interrupted; the rerun of the sweep restarted it")
                    client.set_terminated(r.info.run_id, "FAILED")
    return dict(done.data.metrics) if done is not None else None


@contextlib.contextmanager
def _own_gpu(cfg: DictConfig, launcher: DictConfig):
    """Parallel joblib jobs on a GPU machine: each takes a GPU slot of its own (Ray and SLURM assign
    GPUs themselves, through the job's resource request)."""
    if cfg.trainer.accelerator not in ("gpu", "cuda") or "joblib" not in str(launcher.get("_target_", "")):
        yield
        return
    import torch

    from deepsweep.launch import gpu_slot

    with gpu_slot(torch.cuda.device_count(), int(cfg.trainer.get("jobs_per_gpu", 1))) as index:
        cfg.trainer.devices = [index]
        yield


def _stop_single_run(exc: Exception) -> None:
    """A single run's known failures leave Hydra as themselves, not inside its error report: SystemExit
    passes through Hydra's job runner, and ``deepsweep run`` prints them as one line."""
    from deepsweep.config import ConfigError
    from deepsweep.errors import DataFileError, DownloadError, FolderInUse, NonFiniteError, Reported, TrackingError

    if isinstance(exc, (ConfigError, FileNotFoundError, DataFileError, DownloadError, NonFiniteError, FolderInUse,
                        TrackingError)):
        raise Reported(exc)
    raise exc


@hydra.main(version_base="1.3", config_path=str(paths.conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from deepsweep.config import ConfigError, validate
    from deepsweep.launch import optuna_search

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        cfg = validate(cfg)  # before any heavy import or work
    except ConfigError as exc:
        if not multirun:
            _stop_single_run(exc)
        # A combination of swept values the up-front check did not try: this job fails (recorded as a FAILED
        # child run, so the report lists it), the sweep goes on.
        log.error("sweep job %s: %s", hydra_cfg.job.num, exc)
        from deepsweep.tracking.runs import record_invalid_job, redact
        from deepsweep.tracking.sweep import parent_run_id

        parent = parent_run_id(hydra_cfg.sweep.dir)
        if parent:
            record_invalid_job(cfg, parent, redact(" ".join(hydra_cfg.overrides.task)), hydra_cfg.job.num, str(exc))
        if optuna_search(hydra_cfg):
            raise
        return float("nan")

    from deepsweep.factory import set_threads
    from deepsweep.launch import FINGERPRINT_TAG, fingerprint, job_threads
    from deepsweep.stages.pipeline import run_all
    from deepsweep.tracking.sweep import parent_run_id

    set_threads(cfg, job_threads(hydra_cfg.launcher) if multirun else None)
    from deepsweep.tracking.runs import redact

    overrides = redact(" ".join(hydra_cfg.overrides.task)) or "defaults"
    digest = fingerprint(cfg)
    tags = {"deepsweep.overrides": overrides, FINGERPRINT_TAG: digest}
    parent = None
    if multirun:
        parent = parent_run_id(hydra_cfg.sweep.dir)
        tags["deepsweep.job"] = str(hydra_cfg.job.num)
        done = _reuse_finished(parent, digest) if parent else None
        if done is not None:
            log.info("sweep job %s (%s) already finished in this sweep: skipped", hydra_cfg.job.num, overrides)
            return _objective(cfg, done, hydra_cfg)
    try:
        with _own_gpu(cfg, hydra_cfg.launcher):
            summary = run_all(cfg, Path(hydra_cfg.runtime.output_dir), run_name=overrides, tags=tags,
                              parent_run_id=parent, resume=multirun)
    except Exception as exc:
        if not multirun:
            _stop_single_run(exc)
        # One failing sweep job must not stop the others: its MLflow run is already marked FAILED
        # with the error, and the sweep report lists it.
        log.error("sweep job %s failed: %s: %s", hydra_cfg.job.num, type(exc).__name__, exc)
        if optuna_search(hydra_cfg):  # a FAILED trial, up to the search's max_failure_rate
            raise
        return float("nan")
    job = f"job {hydra_cfg.job.num} " if multirun else ""  # parallel jobs' lines interleave: each says whose it is
    for key, value in summary.items():
        print(f"{job}{key} = {value:.4f}")
    if not multirun:  # where to look next: the stage folders and the run in MLflow
        import mlflow

        from deepsweep.stages.pipeline import RUN_FILE
        from deepsweep.utils.io import read_json

        output_dir = Path(hydra_cfg.runtime.output_dir)
        run_id = read_json(output_dir / "prepare" / RUN_FILE).get("pipeline_id", "?")
        print(f"outputs: {output_dir}\nMLflow run: {run_id} in {redact(mlflow.get_tracking_uri())}")
    return _objective(cfg, summary, hydra_cfg)


def _objective(cfg: DictConfig, metrics: dict[str, float], hydra_cfg: Any) -> float | None:
    """The value a sweeper optimizes (conf/hparams_search/): the job's ``optimized_metric``. Missing, it is an
    error line; an Optuna search, which has nothing to optimize then, stops at that job in one line (exit 2;
    a NaN return crashed hydra-optuna-sweeper: study.tell called twice). The job's own runs are complete and
    stay FINISHED; the search's parent run ends FAILED with the reason. Another sweep's job returns None: it finished,
    and the sweep's end (tracking.sweep._check_ranked) says that nothing ranks its jobs."""
    if cfg.optimized_metric in metrics:
        return metrics[cfg.optimized_metric]
    message = (f"optimized_metric={cfg.optimized_metric} is not among this job's metrics, so nothing ranks it; "
               f"allowed: {', '.join(sorted(k for k in metrics if '.' in k))}")
    from deepsweep.launch import optuna_search

    if not optuna_search(hydra_cfg):
        # No sweeper reads the value; None, not the NaN of a failed job: the job finished (its progress line says so).
        log.error("%s", message)
        return None
    from deepsweep.errors import UnrankedMetric
    from deepsweep.tracking.sweep import held_here, stop_search

    error = UnrankedMetric(message)
    if held_here(hydra_cfg.sweep.dir):
        raise stop_search(hydra_cfg.sweep.dir, error)
    raise error  # in a launcher's worker: a failed job, which deepsweep's launchers turn into the same stop


if __name__ == "__main__":
    main()
