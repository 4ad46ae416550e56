"""``hydra/launcher=fused``: the jobs of a multirun that keep every parameter shape, trained as arrays.

Jobs are grouped by ``deepsweep.training.fused.shape_key`` (everything but seed, init, optimizer values,
schedule, dropout probability, L1/L2, early stopping, ...) into arrays of up to ``max_members``; jobs that
change a shape (hidden sizes, model, batch size, data) land in other arrays, and jobs an array cannot hold
(``fused.unfusable``: a pretrained encoder to fine-tune, a Transformer, sampled graph mini-batches, L-BFGS,
...) run as ordinary jobs, each with one log line saying why. Every job, member or not, then runs through
Hydra's ``run_job``, as Hydra's own launchers run them: each is an ordinary job with its own output folder,
MLflow run, resume and report row.
Within an array, the first member's finetune stage trains the whole array; the others replay their part
(``fused.member_fit``, which the stage reaches through ``training.arrays``). With ``n_jobs`` 1 (the default)
everything runs in this process, one job after another; with more, each array (or lone job) is one unit of
work in a joblib process pool of ``n_jobs`` workers, so the members' own stages (prepare, evaluate,
records), which are not fused, run in parallel too: on one H200, 32 MNIST MLPs as one array in one process
spent 2 minutes in those stages one after another (docs/benchmarks_gpu.md). Unlike ``hydra/launcher=parallel``, a worker that dies ends the sweep.

Hydra imports every module of ``hydra_plugins`` at each start, so this one imports deepsweep only in ``launch``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger("deepsweep")


class FusedLauncher(Launcher):
    def __init__(self, max_members: int = 32, n_jobs: int = 1) -> None:
        super().__init__()
        # `deepsweep run` checked these before the sweep started; Hydra's own entry points reach this first.
        # A bad one: one line and exit code 2 (a SystemExit passes through Hydra's instantiation and error
        # report, as cli.run's known failures do), before any job starts.
        from deepsweep.errors import ConfigError, Reported

        try:
            self.check_settings(max_members=max_members, n_jobs=n_jobs)
        except ConfigError as exc:
            raise Reported(exc) from None
        self.max_members = int(max_members)
        self.n_jobs = int(n_jobs)
        self.config: DictConfig | None = None
        self.task_function: Any = None
        self.hydra_context: Any = None

    @staticmethod
    def check_settings(**settings: Any) -> None:
        """This launcher's ``max_members`` and ``n_jobs`` (as ``hydra.launcher`` holds them): a ConfigError naming
        the key, the value and what is allowed. ``deepsweep run -m`` calls it before the sweep opens the store
        (cli.main.check_run_args), as it calls any deepsweep launcher's ``check_settings``."""
        from deepsweep.errors import ConfigError

        for key, least in (("max_members", 1), ("n_jobs", -1)):
            value = settings.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < least or value == 0:
                raise ConfigError(f"hydra.launcher.{key}: {value!r}; allowed: an integer >= 1"
                                  + (" (or -1, one process per core)" if key == "n_jobs" else ""))

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        # The sweeper composes every job's config to check its batch (Sweeper.validate_batch_is_legal), and this
        # launcher would compose each again: the wrapped loader keeps the sweeper's composition for the launcher.
        if not isinstance(hydra_context.config_loader, ComposedOnce):
            hydra_context.config_loader = ComposedOnce(hydra_context.config_loader)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _sweep_config(self, overrides: Sequence[str], num: int) -> DictConfig:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = num
            sweep_config.hydra.job.num = num
        return sweep_config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from deepsweep.config import ConfigError, validate
        from deepsweep.training import fused

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        sweep_configs = [self._sweep_config(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        self.hydra_context.config_loader.forget()  # a batch's configs are used once; none is kept past it
        job_configs: list[DictConfig | None] = []
        for sweep_config in sweep_configs:
            job_config = copy.deepcopy(sweep_config)  # what run_job hands the task: the config without hydra
            with read_write(job_config), open_dict(job_config):
                del job_config["hydra"]
            try:
                job_configs.append(validate(job_config))
            except ConfigError:
                job_configs.append(None)  # its job fails with the reason, as in any sweep
        # A rerun of an interrupted sweep: jobs that finished before are skipped by the job itself (cli.run);
        # they stay out of the arrays, so no array trains a member nobody will replay.
        finished = _finished_jobs(str(self.config.hydra.sweep.dir), job_configs)
        todo = [p for p in range(len(job_configs)) if p not in finished]
        arrays, alone = fused.plan([job_configs[p] for p in todo], self.max_members)
        arrays = [[todo[i] for i in array] for array in arrays]
        alone = {todo[i]: reason for i, reason in alone.items()}
        log.info("fused launcher: %d jobs, %d in %d arrays (%s), %d alone, %d finished before", len(sweep_configs),
                 sum(map(len, arrays)), len(arrays), ", ".join(str(len(a)) for a in arrays) or "none", len(alone),
                 len(finished))
        for position, reason in sorted(alone.items()):
            log.info("fused launcher: job %d (%s) runs alone: %s", initial_job_idx + position,
                     " ".join(filter_overrides(job_overrides[position])) or "defaults", reason)
        # A job that finished in an earlier run of this sweep runs on its own, and skips itself (its own log line).
        units = [*arrays, *([p] for p in sorted({*alone, *finished}))]
        results: dict[int, JobReturn] = {}
        if self.n_jobs == 1:
            for unit in units:
                results.update(zip(unit, _run_unit(self.hydra_context, self.task_function,
                                                   [sweep_configs[p] for p in unit], [job_configs[p] for p in unit])))
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        else:
            from hydra.core.singleton import Singleton
            from joblib import Parallel, delayed

            state = Singleton.get_state()
            done = Parallel(n_jobs=self.n_jobs, backend="loky")(
                delayed(_run_unit)(self.hydra_context, self.task_function, [sweep_configs[p] for p in unit],
                                   [job_configs[p] for p in unit], state) for unit in units)
            for unit, returns in zip(units, done):
                results.update(zip(unit, returns))
        from deepsweep.tracking.sweep import stop_on_unranked

        returns = [results[p] for p in range(len(sweep_configs))]
        stop_on_unranked(returns, str(self.config.hydra.sweep.dir))  # an Optuna search with nothing to optimize
        return returns


class ComposedOnce:
    """A Hydra config loader that hands each job's sweep config out twice for one composition: the sweeper's
    check of a batch composes every job and drops the result, then the launcher asks for the same config.
    The first request gets a copy, the second the composed object itself, which the loader then keeps no
    longer. Composing a job's config is 132 ms here, copying it 4.7 ms (``python tools/compose_cost.py`` on AMD
    EPYC): one of the few costs of a sweep member that are not its own stages. Every other call goes to Hydra's
    loader."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.composed: dict[tuple, DictConfig] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        if key in self.composed:
            return self.composed.pop(key)
        config = self.loader.load_sweep_config(master_config, list(sweep_overrides))
        self.composed[key] = config
        return copy.deepcopy(config)  # the first caller may change its copy

    def forget(self) -> None:
        self.composed.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)

    def __getstate__(self) -> dict:  # to a pool worker: the loader, not the configs it holds
        return {"loader": self.loader, "composed": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def _finished_jobs(sweep_dir: str, job_configs: list[DictConfig | None]) -> set[int]:
    """Positions of the jobs that have a FINISHED run with the same fingerprint in this sweep's parent run: one
    query for the parent's finished children (none, in a sweep's first run), not one per job."""
    import mlflow

    from deepsweep.launch import FINGERPRINT_TAG, fingerprint
    from deepsweep.tracking.sweep import parent_run_id

    parent = parent_run_id(sweep_dir)
    if not parent:
        return set()
    client = mlflow.MlflowClient()
    finished = {run.data.tags.get(FINGERPRINT_TAG) for run in client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'FINISHED'", max_results=50000)}
    if not finished:
        return set()
    return {position for position, cfg in enumerate(job_configs) if cfg is not None and fingerprint(cfg) in finished}


def _run_unit(hydra_context: Any, task_function: Any, sweep_configs: list[DictConfig],
              job_configs: list[DictConfig | None], singleton_state: dict | None = None) -> list[JobReturn]:
    """One array's jobs (or one lone job), one after another in this process; in a pool worker, after
    taking over the launcher process's Hydra state (as Hydra's joblib launcher does)."""
    from hydra.core.hydra_config import HydraConfig

    from deepsweep.training import fused

    if singleton_state is not None:
        from hydra.core.singleton import Singleton

        setup_globals()
        Singleton.set_state(singleton_state)

    def run(sweep_config: DictConfig) -> JobReturn:
        HydraConfig.instance().set_config(sweep_config)
        return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    if len(sweep_configs) == 1:
        return [run(sweep_configs[0])]
    returns = []
    with fused.active(fused.FusedArray(job_configs)) as members:
        for index, sweep_config in enumerate(sweep_configs):
            members.current = index
            returns.append(run(sweep_config))
    return returns
