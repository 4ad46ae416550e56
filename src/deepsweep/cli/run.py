"""``deepsweep run``: the Hydra app. One job = the whole pipeline in-process, in the job's output folder.

    deepsweep run model=lenet init=xavier_uniform
    deepsweep run -m init=xavier_uniform,he_normal regularizer=dropout,l2   # parallel sweep
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from deepsweep import paths


@hydra.main(version_base="1.3", config_path=str(paths.conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from deepsweep.config import validate

    cfg = validate(cfg)  # before any heavy import or work
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    parallel_jobs = 1
    if multirun:
        import os

        n_jobs = hydra_cfg.launcher.get("n_jobs", 1) or 1
        parallel_jobs = os.cpu_count() or 1 if n_jobs < 0 else n_jobs

    from deepsweep.factory import set_threads
    from deepsweep.stages.pipeline import run_all
    from deepsweep.tracking.sweep import parent_run_id

    set_threads(cfg, parallel_jobs)
    overrides = " ".join(hydra_cfg.overrides.task) or "defaults"
    tags = {"deepsweep.overrides": overrides}
    parent = None
    if multirun:
        parent = parent_run_id(hydra_cfg.sweep.dir)
        tags["deepsweep.job"] = str(hydra_cfg.job.num)
    try:
        summary = run_all(cfg, Path(hydra_cfg.runtime.output_dir), run_name=overrides, tags=tags, parent_run_id=parent)
    except Exception as exc:
        if not multirun:
            raise
        # One failing sweep job must not stop the others: its MLflow run is already marked FAILED
        # with the error, and the sweep report lists it.
        import logging

        logging.getLogger("deepsweep").error("sweep job %s failed: %s: %s", hydra_cfg.job.num, type(exc).__name__, exc)
        return float("nan")
    for key, value in summary.items():
        print(f"{key} = {value:.4f}")
    # The value an Optuna sweeper maximizes.
    return summary.get("finetune.best_val_acc", float("nan"))


if __name__ == "__main__":
    main()
