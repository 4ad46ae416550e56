"""Hydra multirun <-> MLflow: a sweep is a parent run, each job a child run under it.

The parent run is created before any job starts (which also creates the SQLite schema once, so
parallel first starts do not race on it). Jobs find it through $DEEPSWEEP_PARENT_RUN_ID or, on
launchers that do not pass the environment, the file ``mlflow_parent_run_id`` in the sweep folder.
At the end, the children are summarized into ``sweep_report.md``/``.csv`` logged to the parent.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from deepsweep.tracking.runs import PARENT_RUN_ENV

PARENT_FILE = "mlflow_parent_run_id"
DONE_DIR = ".jobs_done"
REPORT_FAILED = "the sweep's report failed"  # how a parent run's deepsweep.error starts when only its report failed
SPACE_TAG = "deepsweep.sweep_space"  # the parent run's digest of the sweep its overrides run (sweep_space)
SEARCH_TAG = "deepsweep.sweep_search"  # and its sweeper's settings (search_space)
TOTAL_FILE = ".jobs_total"  # "<total jobs or empty> <start time>": what the progress lines count against


def total_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep runs: an Optuna search's n_trials, else the product of the swept values
    (choices, ranges, globs over a group's options); None when that cannot be told up front."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob, IntervalSweep

    from deepsweep.config import options

    trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
    if trials is not None:
        return int(trials)
    total = 1
    try:
        for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
            if not override.is_sweep_override():
                continue
            value = override.value()
            if isinstance(value, IntervalSweep):
                return None
            if isinstance(value, Glob):
                total *= len(value.filter(options(override.get_key_element())))
            else:
                total *= len(list(override.sweep_string_iterator()))
    except Exception:  # a launcher's own syntax: progress without a total then
        return None
    return total


def progress_text(sweep_dir: Path, done: int, failed: int) -> str:
    """``5/8 jobs done, 1 failed, 0:00:42 left`` (from the mean job time so far, across parallel workers)."""
    try:
        total_text, started = (sweep_dir / TOTAL_FILE).read_text().split(" ")
        total = int(total_text) if total_text else None
        elapsed = time.time() - float(started)
    except (OSError, ValueError):
        total, elapsed = None, None
    text = f"{done}/{total} jobs done" if total else f"{done} jobs done"
    text += f", {failed} failed"
    if total and elapsed is not None and 0 < done < total:
        left = round(elapsed / done * (total - done))
        text += f", {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left"
    return text


def _resumable_parent(client: Any, sweep_dir: Path) -> str | None:
    """The parent run of an earlier sweep in this folder, if the tracking store still has it."""
    record = sweep_dir / PARENT_FILE
    if not record.is_file():
        return None
    try:
        return client.get_run(record.read_text().strip()).info.run_id
    except Exception:  # another tracking store, or the run was deleted: start a new parent
        return None


def _canonical(value: Any) -> Any:
    """A parsed override value as plain data: ``seed=0,1`` and ``seed=choice(0,1)`` give the same. Unlike
    ``_as_written``'s text it keeps each value's type (``'1'`` is not ``1``), which a digest must."""
    import dataclasses

    if dataclasses.is_dataclass(value):
        return {type(value).__name__: {field.name: _canonical(getattr(value, field.name))
                                       for field in dataclasses.fields(value) if field.name != "simple_form"}}
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in value.items()}
    return value


def _as_written(value: Any) -> str:
    """A parsed override value in one spelling of Hydra's grammar: ``a,b`` and ``choice(a, b)`` both give
    ``choice(a,b)``, ``tag(log, interval(0.0003, 0.03))`` gives ``tag(log,interval(0.0003,0.03))``."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, RangeSweep

    if isinstance(value, Glob):
        return f"glob(include=[{','.join(value.include)}],exclude=[{','.join(value.exclude)}])"
    if isinstance(value, ChoiceSweep):
        text = f"choice({','.join(_as_written(item) for item in value.list)})"
    elif isinstance(value, RangeSweep):
        text = f"range({value.start},{value.stop},{value.step})"
    elif isinstance(value, IntervalSweep):
        text = f"interval({float(value.start)},{float(value.end)})"
    elif isinstance(value, list):
        return f"[{','.join(_as_written(item) for item in value)}]"
    elif isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_as_written(item)}" for key, item in value.items()) + "}"
    else:
        return str(value)
    if getattr(value, "shuffle", False):
        text = f"shuffle({text})"
    return f"tag({','.join(sorted(value.tags))},{text})" if value.tags else text


def sweep_space(task_overrides: list[str]) -> str:
    """A digest of the sweep its task overrides run, as Hydra parses them: in any order, in either syntax of a
    sweep (``0,1``, ``choice(0,1)``). A plain value of a key that never changes what a job computes
    (``provenance.not_fingerprinted``: threads, logging) or says which devices a job runs on may change between
    attempts (a job's fingerprint holds how many, and reruns a job that ran on another number), and so may the
    launcher (a ``hydra/`` override, not a task override); a sweep over such a key is another sweep."""
    import hashlib
    import json

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from deepsweep.provenance import DEVICES, not_fingerprinted

    points = []
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override() or not (not_fingerprinted(key) or key == DEVICES):
            points.append([override.get_key_element(), override.type.name, _canonical(override.value())])
    return hashlib.sha256(json.dumps(sorted(points, key=json.dumps), default=str).encode()).hexdigest()[:16]


# Sweeper settings that say how far or how fast a search runs, not what it searches: a resume may change them
# (more Optuna trials, more parallel trials, another store for the study).
_RUN_CONTROL = ("n_trials", "n_jobs", "storage", "max_failure_rate", "max_batch_size")


def search_space(sweeper: Any) -> str:
    """The sweeper's settings (``hydra.sweeper``) that decide which jobs a sweep runs, as one line of JSON with
    passwords masked: its class, an Optuna sampler and its seed, the direction, and ``params`` (a search space,
    or a basic sweeper's sweeps from a config file) with each value as Hydra parses it (``interval(0.001, 0.1)``
    and ``interval(0.001,0.1)`` are one). Every field of the composed node counts, a sweeper plugin's defaults
    too: a plugin upgrade that adds one makes a folder's sweep another sweep (resume it with the old plugin)."""
    import hashlib
    import json

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from deepsweep.tracking.runs import redact

    settings = OmegaConf.to_container(sweeper, resolve=False) if isinstance(sweeper, DictConfig) else dict(sweeper or {})
    for key in _RUN_CONTROL:
        settings.pop(key, None)
    parser = OverridesParser.create()
    params = {}
    for key, value in (settings.get("params") or {}).items():
        try:
            params[key] = _as_written(parser.parse_override(f"{key}={value}").value())
        except Exception:  # a value Hydra's grammar does not read: compared as written
            params[key] = value
    settings["params"] = params
    text = redact(json.dumps(_canonical(settings), sort_keys=True, default=str))
    # A tag holds at most 8,000 characters (mlflow.utils.validation.MAX_TAG_VAL_LENGTH): a larger one, digested.
    return text if len(text) <= 8000 else "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _settings_differ(recorded: str, search: str) -> str:
    """The first sweeper setting two ``search_space`` texts disagree on, ``sampler.seed=1234 there, 1 here``, and
    how many more do."""
    import json

    def flat(text: str) -> dict[str, Any]:
        values: dict[str, Any] = {}

        def add(prefix: str, node: Any) -> None:
            if isinstance(node, dict) and node and not prefix.startswith("params."):
                for key, child in node.items():
                    add(f"{prefix}.{key}" if prefix else key, child)
            else:
                values[prefix] = node

        add("", json.loads(text))
        return values

    try:
        there, here = flat(recorded), flat(search)
    except ValueError:  # a digest (settings longer than a tag holds): nothing to show
        return "other settings"
    differ = sorted(key for key in there.keys() | here.keys() if there.get(key) != here.get(key))
    more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
    key = differ[0] if differ else "?"
    def shown(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    return f"{key}={shown(there.get(key))} there, {shown(here.get(key))} here{more}"


def _check_same_sweep(recorded: dict[str, str], overrides: str, space: str, search: str, sweep_dir: Path) -> None:
    """A sweep folder resumes the sweep it holds, never another: a different command's jobs would take the
    folders of its jobs by number, and its report would count both sweeps' jobs as one. ``recorded``: the
    parent run's tags; one without ``deepsweep.sweep_search`` (written before both digests) is compared by its
    overrides, token by token."""
    from deepsweep.errors import ConfigError

    before = recorded.get("deepsweep.overrides")
    masked = " (passwords shown as ***)" if "***@" in f"{before} {overrides} {search}" else ""
    if SEARCH_TAG in recorded:
        same_overrides = recorded.get(SPACE_TAG) == space
    else:
        same_overrides = before is None or sorted(before.split()) == sorted(overrides.split())
    if not same_overrides:
        raise ConfigError(f"{sweep_dir}: holds the sweep of `{before}`, not of `{overrides}`{masked}; run that "
                          f"command to resume it, or give this sweep another hydra.sweep.dir")
    if SEARCH_TAG in recorded and recorded[SEARCH_TAG] != search:
        raise ConfigError(f"{sweep_dir}: holds the sweep of `{before}` with other hydra.sweeper settings: "
                          f"{_settings_differ(recorded[SEARCH_TAG], search)}{masked}; run it with those settings to "
                          f"resume it, or give this sweep another hydra.sweep.dir")


def parent_run_id(sweep_dir: str | os.PathLike | None) -> str | None:
    if os.environ.get(PARENT_RUN_ENV):
        return os.environ[PARENT_RUN_ENV]
    if sweep_dir is not None and (Path(sweep_dir) / PARENT_FILE).is_file():
        return (Path(sweep_dir) / PARENT_FILE).read_text().strip()
    return None


_interrupted = False  # Ctrl-C ended this process (the command line says so): the parent run ends KILLED


def interrupted() -> None:
    """Called by the command line on Ctrl-C, before the exit handler below ends the sweep's parent run."""
    global _interrupted
    _interrupted = True


def _fail_if_running(run_id: str) -> None:
    """At the sweep process's exit: a parent run still RUNNING (the sweep did not reach its end) ends KILLED on
    Ctrl-C, else FAILED; so do the runs its launcher's workers left RUNNING as they died with it (this host's
    runs whose process is gone: ``runs.mark_dead_runs``), which the next process to open the store would
    otherwise mark. A worker still shutting down is left to that next process."""
    import mlflow

    from deepsweep.tracking.runs import INTERRUPTED, mark_dead_runs

    with contextlib.suppress(Exception):  # at exit: a store that is gone leaves the run for the next process to mark
        client = mlflow.MlflowClient()
        parent = client.get_run(run_id)
        if parent.info.status == "RUNNING":
            client.set_tag(run_id, "deepsweep.error",
                           INTERRUPTED if _interrupted else "the sweep process ended before the sweep finished")
            client.set_terminated(run_id, "KILLED" if _interrupted else "FAILED")
            mark_dead_runs(client, [parent.info.experiment_id])


def held_here(sweep_dir: str | os.PathLike) -> bool:
    """Whether this process runs the sweep in ``sweep_dir`` (holds its folder): a job that runs here, not in a
    launcher's worker process."""
    return Path(sweep_dir) in _HELD_SWEEPS


def stop_search(sweep_dir: str | os.PathLike, error: Exception):
    """An Optuna search that cannot go on (``errors.UnrankedMetric``): its parent run ends FAILED with the
    reason, and the returned ``Reported`` ends the command in one line (Hydra and the sweeper catch
    Exceptions only, so it passes through both)."""
    from deepsweep.errors import Reported
    from deepsweep.tracking.runs import first_line

    parent = parent_run_id(sweep_dir)
    if parent:
        fail_parent(parent, first_line(error))
    return Reported(error)


def fail_parent(run_id: str, reason: str) -> None:
    """End the sweep's parent run FAILED with ``reason`` as its ``deepsweep.error`` tag. The store itself may be
    what failed, and the command's one line matters more than the record: each write on its own, the status
    first."""
    import mlflow

    with contextlib.suppress(Exception):
        mlflow.MlflowClient().set_terminated(run_id, "FAILED")
    with contextlib.suppress(Exception):
        mlflow.MlflowClient().set_tag(run_id, "deepsweep.error", reason)


def stop_on_unranked(returns: Any, sweep_dir: str | os.PathLike) -> None:
    """After a batch of jobs, in the sweep's process (deepsweep's launchers call it): a job that ran in a
    worker process and found the search's optimized_metric missing stops the search here, once the batch's
    other jobs have finished (raised in the worker, a ``Reported`` would have made joblib kill them)."""
    from hydra.core.utils import JobStatus

    from deepsweep.errors import UnrankedMetric
    from deepsweep.internals import job_outcome

    for job in returns:
        if job.status == JobStatus.FAILED and isinstance(job_outcome(job), UnrankedMetric):
            raise stop_search(sweep_dir, job_outcome(job)) from None


def _check_ranked(rows: list[dict], metric: str, sweep_dir: Path, run_id: str) -> None:
    """A metric no finished job recorded ranked nothing: the report marks no best job, the command ends with one
    line naming the metrics the jobs did record (the up-front check knows the stages, not what each records), and
    the parent run ends FAILED with that line, as the exit code says (the jobs' own runs stay FINISHED)."""
    from deepsweep.errors import ConfigError, Reported

    finished = [r for r in rows if r["status"] == "FINISHED"]
    if finished and not any(metric in r["metrics"] for r in finished):
        recorded = sorted({k for r in finished for k in r["metrics"] if "." in k})
        error = ConfigError(f"optimized_metric: {metric!r} was recorded by no job of the sweep in {sweep_dir}, so "
                            f"its report ranks nothing; allowed: {', '.join(recorded)}")
        fail_parent(run_id, str(error))
        raise Reported(error)


def _check_some_finished(rows: list[dict], sweep_dir: Path) -> None:
    """A sweep whose every job failed ends in one line with exit code 1, as a run that fails does (its parent
    run ended FAILED in finish_sweep); one with some failed jobs exits 0, its report listing them."""
    from deepsweep.errors import Reported, SweepFailed

    if rows and not any(r["status"] == "FINISHED" for r in rows):
        first = next((r["error"].splitlines()[0] for r in rows if r["error"]), "no error recorded")
        raise Reported(SweepFailed(f"{sweep_dir}: all {len(rows)} of its jobs failed (the first: {first}); "
                                   "sweep_report.md lists each job's error"))


# sweep folder -> its lock, held by this process from the sweep's start to its end. Not on the callback: the
# joblib launcher pickles the callbacks into each job's task, and a held lock does not pickle.
_HELD_SWEEPS: dict[Path, contextlib.ExitStack] = {}


class MlflowSweepCallback(Callback):
    """``heatmap_axes``: the two params of the report's heatmap (default: the first two swept ones)."""

    def __init__(self, heatmap_axes: list[str] | None = None) -> None:
        self.heatmap_axes = list(heatmap_axes) if heatmap_axes else None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from deepsweep.errors import FolderInUse, Reported
        from deepsweep.tracking.runs import first_line, redact, tracking_uri
        from deepsweep.utils.io import folder_lock

        sweep_dir = Path(config.hydra.sweep.dir)
        # One sweep per folder: a second one would take over the parent run, clear the progress markers and
        # resume jobs the first is running. Held until the sweep ends (the OS drops it if this process dies).
        # Refused before the store is opened; a SystemExit, as Hydra turns a callback's Exception into a warning.
        held = contextlib.ExitStack()
        try:
            held.enter_context(folder_lock(sweep_dir))
        except FolderInUse as exc:
            raise Reported(exc) from None
        _HELD_SWEEPS[sweep_dir] = held
        try:
            self._start_parent(config, sweep_dir)
        except Exception as exc:  # no job may run without its parent run: the sweep stops here, in one line
            from deepsweep.errors import ConfigError, TrackingError

            _HELD_SWEEPS.pop(sweep_dir).close()
            raise Reported(exc if isinstance(exc, (ConfigError, TrackingError)) else TrackingError(
                f"the sweep's parent run could not be started in {redact(tracking_uri(config))}: "
                f"{type(exc).__name__}: {first_line(exc)}")) from None

    @staticmethod
    def _start_parent(config: DictConfig, sweep_dir: Path) -> None:
        import mlflow

        from deepsweep.tracking.report import METRIC_TAG
        from deepsweep.tracking.runs import git_tags, process_tags, redact, setup

        experiment_id = setup(config)
        client = mlflow.MlflowClient()
        run_id = _resumable_parent(client, sweep_dir)
        overrides = redact(" ".join(config.hydra.overrides.task))
        space, search = sweep_space(config.hydra.overrides.task), search_space(OmegaConf.select(config, "hydra.sweeper"))
        if run_id:
            _check_same_sweep(client.get_run(run_id).data.tags, overrides, space, search, sweep_dir)
            client.set_tag(run_id, SPACE_TAG, space)  # a parent from before the digests holds them from now on
            client.set_tag(run_id, SEARCH_TAG, search)
            # The same sweep folder again: the same parent run, whose finished jobs are skipped.
            for key, value in process_tags().items():  # this process holds it now: tagged before it is RUNNING,
                client.set_tag(run_id, key, value)     # so no other process takes it for a dead one's
            client.set_tag(run_id, "deepsweep.resumed", "true")
            if "deepsweep.error" in client.get_run(run_id).data.tags:  # why the last process ended it: past now
                client.delete_tag(run_id, "deepsweep.error")
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = client.create_run(
                experiment_id,
                run_name=f"sweep {sweep_dir.name}",
                tags={**git_tags(), **process_tags(), "deepsweep.stage": "sweep", "deepsweep.sweep_dir": str(sweep_dir.resolve()),
                      "deepsweep.overrides": overrides, SPACE_TAG: space, SEARCH_TAG: search, METRIC_TAG: str(config.optimized_metric)},
            ).info.run_id
        # If the sweep process dies (Ctrl-C, a launcher error, a failure below), the parent run must not stay RUNNING.
        atexit.register(_fail_if_running, run_id)
        (sweep_dir / PARENT_FILE).write_text(run_id)
        shutil.rmtree(sweep_dir / DONE_DIR, ignore_errors=True)
        (sweep_dir / DONE_DIR).mkdir()
        (sweep_dir / TOTAL_FILE).write_text(f"{total_jobs(config) or ''} {time.time()}")
        os.environ[PARENT_RUN_ENV] = run_id

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Progress while the sweep runs: jobs report from their own processes, so count marker files.
        import logging

        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:  # Hydra calls job hooks for a single run too
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        done_dir = sweep_dir / DONE_DIR
        done_dir.mkdir(parents=True, exist_ok=True)
        num = config.hydra.job.num
        from deepsweep.internals import job_outcome

        # A job that fails returns NaN (cli.run), so the sweep goes on; under an Optuna search it raises.
        value = job_outcome(job_return)
        failed = job_return.status != JobStatus.COMPLETED or value != value
        (done_dir / f"{num}{'.failed' if failed else ''}").touch()
        marks = [p.name for p in done_dir.iterdir()]
        logging.getLogger("deepsweep").info("sweep progress: %s (job %s %s)", progress_text(
            sweep_dir, len(marks), sum(m.endswith(".failed") for m in marks)), num, "FAILED" if failed else "finished")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from deepsweep.tracking.report import finish_sweep

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            run_id = os.environ.pop(PARENT_RUN_ENV, None) or parent_run_id(sweep_dir)
            if run_id:
                try:
                    rows = finish_sweep(run_id, sweep_dir, rank_metric=str(config.optimized_metric),
                                        axes=self.heatmap_axes)
                except Exception as exc:
                    # Hydra would make this a warning and exit 0, and the parent would be failed at exit as if
                    # the process had died: the parent run says what failed, the command says so in one line.
                    from deepsweep.errors import Reported, TrackingError
                    from deepsweep.tracking.runs import first_line

                    error = f"{REPORT_FAILED}: {type(exc).__name__}: {first_line(exc)}"
                    fail_parent(run_id, error)
                    raise Reported(TrackingError(f"{sweep_dir}: its jobs ran, but {error} (`deepsweep report "
                                                 f"{sweep_dir}` builds it again from their runs)")) from None
                _check_ranked(rows, str(config.optimized_metric), sweep_dir, run_id)
                _check_some_finished(rows, sweep_dir)
        finally:
            held = _HELD_SWEEPS.pop(sweep_dir, None)
            if held is not None:
                held.close()
