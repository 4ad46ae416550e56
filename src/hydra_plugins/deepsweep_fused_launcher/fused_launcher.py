"""``hydra/launcher=fused``: the jobs of a multirun that keep every parameter shape, trained as arrays.

Jobs are grouped by ``deepsweep.training.fused.shape_key`` (everything but seed, init, optimizer values,
L1/L2, early stopping, ...) into arrays of up to ``max_members``; jobs that change a shape (hidden sizes,
model, batch size, data) land in other arrays, and jobs an array cannot hold (``fused.unfusable``: GAN or
CD-k pretraining to fine-tune from, dropout, batch norm, schedules, ...) run as ordinary jobs, each with one
log line saying why. Every job, member or not, then runs in this process one after another through Hydra's
``run_job``, as Hydra's basic launcher runs them: each is an ordinary job with its own output folder,
MLflow run, resume and report row. Within an array, the first member's finetune stage trains the whole
array; the others replay their part (``fused.member_fit``).

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
    def __init__(self, max_members: int = 32) -> None:
        super().__init__()
        if int(max_members) < 1:
            raise ValueError(f"hydra.launcher.max_members: must be >= 1, got {max_members}")
        self.max_members = int(max_members)
        self.config: DictConfig | None = None
        self.task_function: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _sweep_config(self, overrides: Sequence[str], num: int) -> DictConfig:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = num
            sweep_config.hydra.job.num = num
        return sweep_config

    def _run(self, sweep_config: DictConfig) -> JobReturn:
        result = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                         job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return result

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from deepsweep.config import ConfigError, validate
        from deepsweep.training import fused

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        sweep_configs = [self._sweep_config(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        job_configs: list[DictConfig | None] = []
        for sweep_config in sweep_configs:
            job_config = copy.deepcopy(sweep_config)  # what run_job hands the task: the config without hydra
            with read_write(job_config), open_dict(job_config):
                del job_config["hydra"]
            try:
                job_configs.append(validate(job_config))
            except ConfigError:
                job_configs.append(None)  # its job fails with the reason, as in any sweep
        arrays, alone = fused.plan(job_configs, self.max_members)
        log.info("fused launcher: %d jobs, %d in %d arrays (%s), %d alone", len(sweep_configs),
                 sum(map(len, arrays)), len(arrays), ", ".join(str(len(a)) for a in arrays) or "none", len(alone))
        for position, reason in sorted(alone.items()):
            log.info("fused launcher: job %d (%s) runs alone: %s", initial_job_idx + position,
                     " ".join(filter_overrides(job_overrides[position])) or "defaults", reason)
        results: dict[int, JobReturn] = {}
        for array in arrays:
            with fused.active(fused.FusedArray([job_configs[p] for p in array])) as members:
                for index, position in enumerate(array):
                    members.current = index
                    results[position] = self._run(sweep_configs[position])
        for position in sorted(alone):
            results[position] = self._run(sweep_configs[position])
        return [results[p] for p in range(len(sweep_configs))]
