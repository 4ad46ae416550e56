"""Hydra's joblib launcher (the default ``hydra/launcher=parallel``), made to survive a dead worker.

It lives in the ``hydra_plugins`` namespace because Hydra instantiates launchers from there only; Hydra
imports every module there at each start, so this one imports deepsweep only once jobs have run (and a job
that found an Optuna search's optimized_metric missing stops the search: ``tracking.sweep.stop_on_unranked``).

When a worker process dies (the OOM killer, ``kill -9``, a segfault in a library), joblib's process pool
(loky) breaks as a whole: it fails every job in it and kills the other workers too (joblib 1.4,
``terminate_broken`` -> ``kill_workers``), and Hydra's launcher lets the error end the sweep with no
report. Which job brought the pool down is not told. ``SurvivingJoblibLauncher`` keeps the sweep going:

1. every job that had started and not ended is run again *alone* in a fresh pool: one that kills its
   worker when alone is the cause, and fails with the reason (its MLflow runs FAILED, the report lists
   it); one that finishes was only caught in the fall;
2. the other jobs are launched in parallel again, as before: those that had finished are skipped by the
   sweep's resume (``cli.run``: same fingerprint, FINISHED run), the rest run.

Jobs are still scheduled by joblib (this class calls Hydra's own launcher for each batch); what it adds
is the bookkeeping above. Cost: nothing while no worker dies; after a death, the jobs in flight (at most
``n_jobs``) run again one at a time.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger("deepsweep")

STARTED_DIR = ".jobs_started"  # <job number> -> the pid of the worker running it (written by the job)
DONE_DIR = ".jobs_done"  # <job number>[.failed], written by each job's end (deepsweep.tracking.sweep.DONE_DIR)


class WorkerDied(RuntimeError):
    """A sweep job whose worker process died while it ran alone."""


def _mark_started(task_function: Callable) -> Callable:
    """The task function, first writing ``<sweep dir>/.jobs_started/<job number>`` with its pid."""

    def task(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        started = Path(hydra_cfg.sweep.dir) / STARTED_DIR
        started.mkdir(parents=True, exist_ok=True)
        (started / str(hydra_cfg.job.num)).write_text(str(os.getpid()))
        return task_function(cfg)

    return task


def _exit_codes(error: BaseException) -> str:
    """loky's text for the dead workers' exit codes, e.g. ``{SIGKILL(-9)}``."""
    found = re.search(r"exit codes of the workers are (\{[^}]*\})", str(error))
    return f"exit code {found.group(1)}" if found else type(error).__name__


def _runs(numbers: set[int]) -> list[tuple[int, list[int]]]:
    """Sorted job numbers as (first, numbers) runs of consecutive ones: Hydra launches a consecutive batch."""
    batches: list[tuple[int, list[int]]] = []
    for num in sorted(numbers):
        if batches and batches[-1][1][-1] == num - 1:
            batches[-1][1].append(num)
        else:
            batches.append((num, [num]))
    return batches


class SurvivingJoblibLauncher(JoblibLauncher):
    def setup(self, *, hydra_context: Any, task_function: Callable, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=_mark_started(task_function), config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        overrides = {initial_job_idx + i: list(o) for i, o in enumerate(job_overrides)}
        returns: dict[int, JobReturn] = {}
        todo = set(overrides)
        while todo:
            for first, numbers in _runs(todo):
                before = self._markers()
                try:
                    batch = super().launch([overrides[n] for n in numbers], first)
                except BrokenProcessPool as error:
                    # A job whose start marker changed and whose end marker did not was running when the pool broke.
                    after = self._markers()
                    changed = {n for n in numbers if after.get((STARTED_DIR, n)) != before.get((STARTED_DIR, n))}
                    ended = {n for n in numbers if after.get((DONE_DIR, n)) != before.get((DONE_DIR, n))}
                    running = sorted(changed - ended)
                    if not running:  # died before any job began: nothing to tell the cause by
                        raise
                    log.warning("sweep: a worker process died (%s); job(s) %s were running and run again, "
                                "one at a time", _exit_codes(error), ", ".join(map(str, running)))
                    for num in running:
                        returns[num] = self._alone(num, overrides[num])
                        todo.discard(num)
                    break  # the rest goes round again: the jobs that had finished are skipped by the resume
                returns.update(zip(numbers, batch))
                todo.difference_update(numbers)
        from deepsweep.tracking.sweep import stop_on_unranked

        result = [returns[n] for n in sorted(overrides)]
        stop_on_unranked(result, str(self.config.hydra.sweep.dir))  # an Optuna search with nothing to optimize
        return result

    def _markers(self) -> dict[tuple[str, int], int]:
        """(folder, job number) -> modification time (ns) of the jobs' start and end markers in the sweep folder."""
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        found = {}
        for folder in (STARTED_DIR, DONE_DIR):
            for path in (sweep_dir / folder).glob("*"):
                num = path.name.split(".")[0]
                if num.isdigit():
                    found[(folder, int(num))] = path.stat().st_mtime_ns
        return found

    def _alone(self, num: int, overrides: list[str]) -> JobReturn:
        try:
            [result] = super().launch([overrides], num)
            return result
        except BrokenProcessPool as error:
            reason = (f"its worker process died while running alone ({_exit_codes(error)}: killed by a signal, "
                      "often the out-of-memory killer)")
            log.error("sweep job %s failed: %s", num, reason)
            self._record_failure(num, overrides, reason)
            from deepsweep.launch import optuna_search

            # What the job itself would have ended with (cli.run): a failed trial of a search, else a NaN.
            died = JobReturn(overrides=overrides, status=JobStatus.FAILED if optuna_search(self.config.hydra)
                             else JobStatus.COMPLETED)
            died.return_value = WorkerDied(reason) if died.status == JobStatus.FAILED else float("nan")
            return died

    def _record_failure(self, num: int, overrides: list[str], reason: str) -> None:
        """The dead job's MLflow runs FAILED with the reason (one is made if it died before starting one),
        and its progress marker, as the job's own ``on_job_end`` would have written."""
        import mlflow

        from deepsweep.tracking.runs import process_tags, redact
        from deepsweep.tracking.sweep import parent_run_id
        from deepsweep.utils.retry import retry_locked

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        (sweep_dir / DONE_DIR).mkdir(parents=True, exist_ok=True)
        (sweep_dir / DONE_DIR / f"{num}.failed").touch()
        parent = parent_run_id(sweep_dir)
        if not parent:
            return
        client = mlflow.MlflowClient()
        experiment = retry_locked(client.get_run, parent).info.experiment_id
        mine = client.search_runs([experiment], filter_string=(
            f"tags.mlflow.parentRunId = '{parent}' and tags.`deepsweep.job` = '{num}' and attributes.status = 'RUNNING'"))
        if not mine:
            mine = [retry_locked(client.create_run, experiment, run_name=redact(" ".join(overrides)) or "defaults",
                                 tags={"mlflow.parentRunId": parent, "deepsweep.stage": "pipeline",
                                       "deepsweep.job": str(num), **process_tags()})]
        for run in mine:
            stages = client.search_runs([experiment], filter_string=(
                f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'"))
            for r in [run, *stages]:
                retry_locked(client.set_tag, r.info.run_id, "deepsweep.error", f"WorkerDied: {reason}")
                retry_locked(client.set_terminated, r.info.run_id, "FAILED")
