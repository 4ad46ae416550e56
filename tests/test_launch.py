"""Sweeps beyond the default launcher: threads and GPUs per job, job fingerprints, Optuna search,
Ray (a local instance on loopback) and submitit (its local executor, the SLURM code path without SLURM)."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest
from omegaconf import OmegaConf

from conftest import FAST, deepsweep_cli
from deepsweep.config import ConfigError, validate
from deepsweep.launch import fingerprint, gpu_slot, job_threads


def test_job_threads_follow_the_launchers_resource_request():
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
    assert job_threads(OmegaConf.merge(joblib, {"n_jobs": -1}), cpu_count=8) == 1
    assert job_threads(OmegaConf.merge(joblib, {"n_jobs": 2}), cpu_count=8) == 4
    assert job_threads(OmegaConf.merge(joblib, {"n_jobs": 16}), cpu_count=8) == 1
    ray = OmegaConf.create({"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
                            "ray": {"remote": {"num_cpus": 3}}})
    assert job_threads(ray, cpu_count=8) == 3
    slurm = OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                              "cpus_per_task": 6})
    assert job_threads(slurm, cpu_count=64) == 6


def test_torch_threads_are_the_configured_count_else_the_jobs_share_capped_by_omp_num_threads(monkeypatch):
    import os

    import torch

    from deepsweep.factory import set_threads

    cfg = OmegaConf.create({"trainer": {"num_threads": None}})
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert set_threads(cfg) == torch.get_num_threads() == (os.cpu_count() or 1)
        assert set_threads(cfg, job_threads=1) == 1
        # OMP_NUM_THREADS caps the share, as it caps torch's own default; an explicit trainer.num_threads wins.
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads(cfg) == torch.get_num_threads() == 1
        assert set_threads(cfg, job_threads=4) == 1
        assert set_threads(OmegaConf.create({"trainer": {"num_threads": 3}})) == torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "four")  # not a count: OpenMP ignores it, so do we
        assert set_threads(cfg, job_threads=2) == 2
    finally:
        torch.set_num_threads(before)


def test_gpu_slots_never_overbook_a_gpu(tmp_path):
    """Two GPUs, one job each: the third job waits until a GPU is released, then gets that one."""
    held, got = [], []
    first, second = gpu_slot(2, lock_dir=tmp_path), gpu_slot(2, lock_dir=tmp_path)
    held += [first.__enter__(), second.__enter__()]
    assert sorted(held) == [0, 1]

    def third_job():
        with gpu_slot(2, lock_dir=tmp_path, poll_s=0.05) as gpu:
            got.append(gpu)

    waiter = threading.Thread(target=third_job)
    waiter.start()
    time.sleep(0.3)
    assert got == []  # both GPUs busy
    second.__exit__(None, None, None)
    waiter.join(timeout=5)
    assert got == [held[1]]
    first.__exit__(None, None, None)
    with gpu_slot(1, jobs_per_gpu=2, lock_dir=tmp_path) as a, gpu_slot(1, jobs_per_gpu=2, lock_dir=tmp_path) as b:
        assert a == b == 0  # two jobs may share the one GPU when asked to


def test_fingerprint_ignores_where_results_go_but_not_what_is_computed(compose):
    base = fingerprint(compose())
    assert fingerprint(compose("logger.tracking_uri=sqlite:////elsewhere.db", "trainer.num_threads=1")) == base
    assert fingerprint(compose("seed=1")) != base
    assert fingerprint(compose("optimizer.lr=0.5")) != base


def test_optimized_metric_must_name_a_stage_metric(compose):
    with pytest.raises(ConfigError, match="optimized_metric: 'accuracy'.*evaluate.roc_auc"):
        validate(compose("optimized_metric=accuracy"))


def _sweep_jobs() -> tuple[list, list]:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("deepsweep.stage") == "sweep"]
    ids = {p.info.run_id for p in parents}
    return parents, [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]


@pytest.mark.slow
def test_optuna_search_runs_trials_as_child_runs(tmp_path, isolated_tracking):
    # n_jobs=1: joblib runs both trials in the sweep's process (the parallel launcher's workers are tested in
    # tests/test_sweep.py); two workers would each cost a start-up (torch, Lightning, MLflow) on 2 cores.
    result = deepsweep_cli("run", "hparams_search=digits_optuna", "hydra.sweeper.n_trials=2", *FAST,
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.launcher.n_jobs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best value" in result.stdout + result.stderr
    parents, jobs = _sweep_jobs()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(jobs) == 2 and all(r.info.status == "FINISHED" for r in jobs), [r.data.tags.get("deepsweep.error") for r in jobs]
    assert (tmp_path / "sweep" / "optimization_results.yaml").is_file()


@pytest.mark.parametrize("n_jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_optuna_search_for_a_metric_its_jobs_do_not_record_stops_in_one_line(tmp_path, isolated_tracking, n_jobs):
    """optimized_metric names a stage (so it passes the up-front check) but no metric the job records: the
    search stops after its first batch with one line naming what the job did record, and its parent run ends
    FAILED with that reason; it used to end in the Optuna sweeper's traceback (a NaN return, study.tell called
    twice). With two trials at a time in the parallel launcher's workers, both finish their jobs first."""
    result = deepsweep_cli("run", "hparams_search=digits_optuna", f"hydra.sweeper.n_trials={2 * n_jobs}",
                           f"hydra.sweeper.n_jobs={n_jobs}", *FAST, "pretrain=none", "optimized_metric=evaluate.acc",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.launcher.n_jobs={n_jobs}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = [line for line in result.stderr.splitlines() if "is not among this job's metrics" in line]
    assert len(line) == 1 and line[0].startswith("deepsweep: error: optimized_metric=evaluate.acc"), result.stderr[-2000:]
    assert "allowed:" in line[0] and "evaluate.accuracy" in line[0]
    parents, jobs = _sweep_jobs()
    assert len(jobs) == n_jobs and all(r.info.status == "FINISHED" for r in jobs)  # the jobs themselves are complete
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert parents[0].data.tags["deepsweep.error"].startswith("optimized_metric=evaluate.acc is not among")


@pytest.mark.slow
def test_ray_launcher_on_a_local_ray_instance(tmp_path, isolated_tracking, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = deepsweep_cli("run", "-m", "hydra/launcher=ray_cluster", "seed=0,1", *FAST,
                           "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", env={"RAY_AUTH_MODE": "disabled"})
    assert result.returncode == 0, result.stderr[-3000:]
    parents, jobs = _sweep_jobs()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.params["seed"] for r in jobs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and "evaluate.roc_auc" in r.data.metrics for r in jobs)


@pytest.mark.slow
def test_submitit_launcher_runs_jobs_through_its_local_executor(tmp_path, isolated_tracking):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = deepsweep_cli("run", "-m", "hydra/launcher=submitit_local", "seed=0", *FAST,
                           "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 0, result.stderr[-3000:]
    parents, jobs = _sweep_jobs()
    assert len(jobs) == 1 and jobs[0].info.status == "FINISHED"
    assert (tmp_path / "sweep" / ".submitit").is_dir()


def test_parallel_gpu_jobs_get_a_device_each(compose, monkeypatch, tmp_path):
    """What cli.run does for joblib jobs with trainer=gpu: trainer.devices becomes the job's own GPU."""
    import torch

    from deepsweep.cli.run import _own_gpu

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
    first, second = compose("trainer=gpu"), compose("trainer=gpu")
    with _own_gpu(first, joblib), _own_gpu(second, joblib):
        assert sorted([list(first.trainer.devices), list(second.trainer.devices)]) == [[0], [1]]
    cpu = compose()
    with _own_gpu(cpu, joblib):
        assert cpu.trainer.devices == 1  # CPU jobs are left alone
