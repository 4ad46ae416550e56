"""A Hydra multirun over init x regularizer: parallel jobs, one MLflow parent run, a child per job,
a report; a failing job is isolated."""

from __future__ import annotations

import json
import shutil

import mlflow
import pytest

from conftest import FAST, deepsweep_cli

pytestmark = pytest.mark.slow


def test_init_by_regularizer_sweep_and_its_report(tmp_path, isolated_tracking):
    sweep_dir = tmp_path / "sweep"
    result = deepsweep_cli("run", "-m", "init=xavier_uniform,he_normal", "regularizer=dropout,l2",
                           "optimizer=sgd", "optimizer.lr=0.05,10000", *FAST, f"hydra.sweep.dir={sweep_dir}", "hydra.launcher.n_jobs=2")
    assert result.returncode == 0, result.stderr[-3000:]

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("deepsweep.stage") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(jobs) == 8
    combos = {(r.data.params["init.name"], r.data.params["regularizer.name"], r.data.params["optimizer.lr"]) for r in jobs}
    assert len(combos) == 8
    finished = [r for r in jobs if r.info.status == "FINISHED"]
    failed = [r for r in jobs if r.info.status == "FAILED"]
    assert len(finished) == 4 and all(r.data.params["optimizer.lr"] == "0.05" for r in finished), \
        [(r.data.params.get("optimizer.lr"), r.data.tags.get("deepsweep.error")) for r in failed]
    # lr=10000 diverges: each such job stops at its first non-finite epoch, the others go on.
    assert len(failed) == 4 and all("non-finite value" in r.data.tags["deepsweep.error"] for r in failed)
    assert all("evaluate.accuracy" in r.data.metrics for r in finished)
    # Each job's stages are nested runs under the job.
    stage_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == finished[0].info.run_id]
    assert {r.data.tags["deepsweep.stage"] for r in stage_runs} == {"prepare", "pretrain", "finetune", "evaluate"}

    # The jobs run two at a time and their summary lines interleave: each names its job.
    summary = [line for line in result.stdout.splitlines() if "evaluate.accuracy = " in line]
    assert len(summary) == 4 and all(line.startswith("job ") for line in summary), summary
    report = (sweep_dir / "sweep_report.md").read_text()
    assert "8 jobs, 4 failed" in report and "| best |" in report
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(parent_id)}
    assert {"sweep_report.md", "sweep_report.csv"} <= logged
    assert {"sweep_report.html", "sweep_heatmap.png", "sweep_curves.png"} <= logged
    assert "## Failed jobs" in report and "non-finite value" in report

    # `deepsweep report` rebuilds the report from the runs, ranked and laid out as asked (one sweep serves both
    # tests: a sweep costs 40-60 s of the suite).
    (sweep_dir / "sweep_report.md").unlink()
    result = deepsweep_cli("report", str(sweep_dir), "--metric", "evaluate.roc_auc",
                           "--axes", "regularizer.name", "init.name")
    assert result.returncode == 0, result.stderr[-3000:]
    text = (sweep_dir / "sweep_report.md").read_text()
    assert "ranked by evaluate.roc_auc" in text and "over regularizer.name x init.name" in text
    assert "8 jobs, 4 failed" in text
    # A metric or an axis no job recorded is refused in one line; the report stays as it was.
    for args, named in ((["--metric", "evaluate.nope"], "--metric: 'evaluate.nope' was recorded by no job"),
                        (["--axes", "foo.name", "init.name"], "--axes: 'foo.name' is no param of the sweep's jobs")):
        refused = deepsweep_cli("report", str(sweep_dir), *args)
        assert refused.returncode == 2 and named in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        assert (sweep_dir / "sweep_report.md").read_text() == text
    bad = deepsweep_cli("report", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "nowhere" in bad.stderr
    # Without --tracking-uri, the store the sweep recorded to (its multirun.yaml's logger.tracking_uri), not the
    # default one; a store that lacks the sweep is one line naming it, not MLflow's traceback.
    import os

    from omegaconf import OmegaConf

    recorded = OmegaConf.load(sweep_dir / "multirun.yaml")
    recorded.logger.tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    OmegaConf.save(recorded, sweep_dir / "multirun.yaml")
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    again = deepsweep_cli("report", str(sweep_dir), env={"MLFLOW_TRACKING_URI": elsewhere})
    assert again.returncode == 0, again.stderr[-3000:]
    wrong = deepsweep_cli("report", str(sweep_dir), "--tracking-uri", elsewhere)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr[-3000:]
    assert "is not in the MLflow store" in wrong.stderr and "elsewhere.db" in wrong.stderr


def test_rerun_of_an_interrupted_sweep_skips_finished_jobs_and_resumes_the_rest(tmp_path, isolated_tracking):
    sweep_dir = tmp_path / "sweep"
    # The skip is each job's own (cli/run.py), whatever launches it: Hydra's basic launcher runs both jobs in the
    # sweep's process, which saves two worker start-ups a sweep (the parallel launcher is tested above).
    args = ["run", "-m", "seed=0,1", *FAST, f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=basic"]
    assert deepsweep_cli(*args).returncode == 0
    client = mlflow.MlflowClient()
    (parent,) = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                 if r.data.tags.get("deepsweep.stage") == "sweep"]
    jobs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    # Interrupt job 1 after its pretrain stage: its run left RUNNING, its later outputs gone.
    job1 = next(r for r in jobs if r.data.params["seed"] == "1")
    client.update_run(job1.info.run_id, status="RUNNING")
    # Its pretrain stage had committed its output but not yet ended its run when the process died.
    pretrain1 = json.loads((sweep_dir / "1" / "pretrain" / "run.json").read_text())["run_id"]
    client.update_run(pretrain1, status="RUNNING")
    for stage in ("finetune", "evaluate"):
        shutil.rmtree(sweep_dir / "1" / stage)
    # What the interrupted sweep's process left on its parent as it died (tracking.sweep._fail_if_running).
    client.set_tag(parent.info.run_id, "deepsweep.error", "the sweep process ended before the sweep finished")
    client.set_terminated(parent.info.run_id, "FAILED")

    result = deepsweep_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already finished in this sweep: skipped" in result.stderr + result.stdout
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.run_id for r in runs if r.data.tags.get("deepsweep.stage") == "sweep"] == [parent.info.run_id]
    jobs = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    # The interrupted attempt: its process is gone, so the first process to open the store marks it KILLED.
    assert client.get_run(job1.info.run_id).info.status in ("FAILED", "KILLED")
    (rerun,) = [r for r in jobs.values() if r.data.params["seed"] == "1" and r.info.run_id != job1.info.run_id]
    assert rerun.info.status == "FINISHED" and "evaluate.accuracy" in rerun.data.metrics
    # Stages that had finished are kept; the lost ones ran again.
    assert {"deepsweep.resumed.prepare", "deepsweep.resumed.pretrain"} <= set(rerun.data.tags)
    assert "deepsweep.resumed.finetune" not in rerun.data.tags
    # A kept stage finished: its run is closed as such, not left failed as interrupted.
    assert rerun.data.tags["deepsweep.resumed.pretrain"] == pretrain1
    kept = client.get_run(pretrain1)
    assert kept.info.status == "FINISHED" and "deepsweep.error" not in kept.data.tags
    assert "deepsweep.closed_on_resume" in kept.data.tags
    finished = client.get_run(parent.info.run_id)
    assert len(jobs) == 3 and finished.info.status == "FINISHED" and "deepsweep.error" not in finished.data.tags
    # Two jobs, both finished: the interrupted attempt is in MLflow, but not a job of the report or of load_sweep.
    report = (sweep_dir / "sweep_report.md").read_text()
    assert "2 jobs, 0 failed" in report and "1 earlier attempt of resumed jobs" in report, report[:500]
    import deepsweep

    assert sorted(deepsweep.load_sweep(sweep_dir)["run_id"]) == sorted(set(jobs) - {job1.info.run_id})
    assert len(deepsweep.load_sweep(sweep_dir, all_attempts=True)) == 3
    # The two seeds' test probabilities averaged: a deep ensemble, scored on the parent run.
    import torch

    from deepsweep.calibration import probability_metrics

    saved = [torch.load(sweep_dir / str(seed) / "evaluate" / "predictions.pt", weights_only=True) for seed in (0, 1)]
    ensemble = probability_metrics((saved[0]["probs"] + saved[1]["probs"]) / 2, saved[0]["target"])
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert "## Deep ensembles of the seeds" in report
    assert {k: metrics[f"ensemble.{k}"] for k in ensemble} == pytest.approx(ensemble)

    # Another sweep in this folder is refused in one line, before any job: it would take these jobs' folders by
    # number and its report would count both sweeps' jobs. The parent run and its jobs stay as they were.
    other = deepsweep_cli("run", "-m", "seed=0,2", *FAST, f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=basic")
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1] == (
        f"deepsweep: error: {sweep_dir}: holds the sweep of `{' '.join(args[2:-2])}`, not of "
        f"`seed=0,2 {' '.join(FAST)}`; run that command to resume it, or give this sweep another hydra.sweep.dir")
    assert "Traceback" not in other.stderr
    after = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(after) == len(runs) and client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_a_sweep_is_the_same_sweep_in_any_order_and_syntax_and_another_over_other_values_or_search_space(tmp_path):
    """What a resumed sweep is compared on: its overrides as Hydra parses them (threads and devices may change,
    unless they are swept) and its sweeper's settings (an Optuna search space set by hydra.sweeper.params.*,
    which is not a task override; its n_trials may grow)."""
    from deepsweep.errors import ConfigError
    from deepsweep.tracking.sweep import SEARCH_TAG, SPACE_TAG, _check_same_sweep, search_space, sweep_space

    first = sweep_space(["seed=0,1", "model=mlp", "optimizer.lr=0.1"])
    assert sweep_space(["optimizer.lr=0.1", "model=mlp", "seed=choice(0,1)"]) == first
    assert sweep_space(["seed=0,1", "model=mlp", "optimizer.lr=0.1", "trainer.num_threads=2"]) == first
    assert sweep_space(["seed=0,1", "model=mlp", "optimizer.lr=0.1", "trainer.num_threads=1,2"]) != first
    assert sweep_space(["seed=0,2", "model=mlp", "optimizer.lr=0.1"]) != first
    optuna = {"direction": "maximize", "n_trials": 20, "sampler": {"seed": 1234},
              "params": {"optimizer.lr": "tag(log, interval(0.0003, 0.03))", "init": "he_normal,orthogonal"}}
    searched = search_space(optuna)
    assert search_space({**optuna, "n_trials": 50, "params": {"optimizer.lr": "tag(log,interval(0.0003,0.03))",
                                                               "init": "choice(he_normal, orthogonal)"}}) == searched
    wider = search_space({**optuna, "params": {**optuna["params"], "optimizer.lr": "interval(0.0003, 0.3)"}})
    assert wider != searched and search_space({**optuna, "sampler": {"seed": 1}}) != searched
    tags = {"deepsweep.overrides": "seed=0", SPACE_TAG: sweep_space(["seed=0"]), SEARCH_TAG: searched}
    _check_same_sweep(tags, "seed=0", sweep_space(["seed=0"]), searched, tmp_path)
    with pytest.raises(ConfigError, match=r"holds the sweep of `seed=0` with other hydra.sweeper settings: "
                                          r"params.optimizer.lr=tag\(log,interval\(0.0003,0.03\)\) there, "
                                          r"interval\(0.0003,0.3\) here; run it with those settings"):
        _check_same_sweep(tags, "seed=0", sweep_space(["seed=0"]), wider, tmp_path)
    with pytest.raises(ConfigError, match=r"settings: sampler.seed=1234 there, 1 here; run it"):
        _check_same_sweep(tags, "seed=0", sweep_space(["seed=0"]), search_space({**optuna, "sampler": {"seed": 1}}),
                          tmp_path)
    # A parent run from before the digests: its overrides, token by token.
    _check_same_sweep({"deepsweep.overrides": "model=mlp seed=0,1"}, "seed=0,1 model=mlp", first, searched, tmp_path)
    with pytest.raises(ConfigError, match=r"holds the sweep of `model=mlp seed=0,1`, not of `seed=0,2 model=mlp`"):
        _check_same_sweep({"deepsweep.overrides": "model=mlp seed=0,1"}, "seed=0,2 model=mlp", first, searched, tmp_path)


def test_a_sweep_folder_refuses_another_search_space_when_the_sweep_starts(tmp_path):
    """The sweep callback reads the search space where Hydra puts it: an Optuna sweep started again in its
    folder with more trials resumes, one over other hydra.sweeper.params is refused before any job."""
    import mlflow
    from hydra import compose as hydra_compose

    from deepsweep.config import _hydra_context
    from deepsweep.errors import Reported
    from deepsweep.tracking.sweep import _HELD_SWEEPS, PARENT_FILE, MlflowSweepCallback

    sweep_dir = tmp_path / "sweep"

    def start(*overrides: str, **params: str) -> None:
        with _hydra_context():
            config = hydra_compose(config_name="config", overrides=["hparams_search=digits_optuna", *overrides],
                                   return_hydra_config=True)
        config.hydra.sweeper.params.update(params)  # as `-m hydra.sweeper.params.optimizer=choice(...)` sets them
        config.hydra.sweep.dir = str(sweep_dir)
        config.hydra.overrides.task = ["hparams_search=digits_optuna"]
        try:
            MlflowSweepCallback().on_multirun_start(config)
        finally:
            if sweep_dir in _HELD_SWEEPS:
                _HELD_SWEEPS.pop(sweep_dir).close()

    start()
    parent = (sweep_dir / PARENT_FILE).read_text()
    start("hydra.sweeper.n_trials=50")
    with pytest.raises(Reported) as refused:
        start(optimizer="choice(adam, sgd)")
    assert str(refused.value) == (f"{sweep_dir}: holds the sweep of `hparams_search=digits_optuna` with other "
                                  "hydra.sweeper settings: params.optimizer=choice(adam,adamw,rmsprop) there, "
                                  "choice(adam,sgd) here; run it with those settings to resume it, or give this sweep "
                                  "another hydra.sweep.dir")
    assert (sweep_dir / PARENT_FILE).read_text() == parent
    mlflow.MlflowClient().set_terminated(parent)


def test_report_columns_leave_out_params_that_follow_another():
    from deepsweep.tracking.report import aggregate_over_seeds, render, sweep_axes

    def row(i, name, loss, seed, acc):
        params = {"pretrain.name": name, "seed": str(seed), "optimizer.lr": "0.001"}
        if loss is not None:  # only the GAN options have the key at all
            params["pretrain.task.loss"] = loss
        return {"run_id": str(i), "run_name": f"job{i}", "status": "FINISHED", "params": params,
                "metrics": {"finetune.best_val_acc": acc}, "error": "", "stage_runs": {}}

    rows = [row(0, "gan", "vanilla", 0, 0.8), row(1, "gan", "vanilla", 1, 0.9), row(2, "wgan", "wasserstein", 0, 0.7),
            row(3, "wgan", "wasserstein", 1, 0.75), row(4, "none", None, 0, 0.6), row(5, "none", None, 1, 0.65)]
    table = aggregate_over_seeds(rows)
    assert table.splitlines()[0].startswith("|  | pretrain.name | seeds |")
    assert "pretrain.task.loss" not in table and "0.8500 +/- 0.0707" in table
    assert "pretrain.task.loss" not in render(rows)[0] and "| seed |" in render(rows)[0]
    assert sweep_axes("pretrain=gan,wgan,none seed=0,1", rows) == ["pretrain.name"]
    # Two trials of a search differ in every param it searches: each is a column, though any one of them tells
    # the two apart; a field of a chosen option (regularizer.dropout of regularizer=dropout) follows its name.
    trial = lambda i, init, reg, p, lr, dims: {  # noqa: E731
        "run_id": str(i), "run_name": f"trial{i}", "status": "FINISHED", "error": "", "stage_runs": {},
        "metrics": {"finetune.best_val_acc": 0.5 + i / 10}, "params": {
            "init.name": init, "regularizer.name": reg, "regularizer.dropout": p, "optimizer.lr": lr,
            "model.hidden_dims": dims, "seed": "0"}}
    trials = [trial(0, "he_normal", "none", "0.0", "0.001", "[64]"), trial(1, "xavier_uniform", "dropout", "0.5",
                                                                     "0.01", "[128, 64]")]
    header = render(trials)[0].splitlines()[0]
    for key in ("init.name", "regularizer.name", "optimizer.lr", "model.hidden_dims"):
        assert f" {key} |" in header, key
    assert "regularizer.dropout" not in header


def test_a_metric_no_job_recorded_ranks_nothing_and_ends_the_sweep_with_one_line(compose, tmp_path, monkeypatch):
    """The up-front check knows each stage's name, not what each records: `optimized_metric=evaluate.acc` ran its
    jobs, and the report marked as best the job it sorted first by a column that was empty."""
    from omegaconf import OmegaConf

    from deepsweep.config import ConfigError
    from deepsweep.errors import Reported
    from deepsweep.tracking import report, sweep

    rows = [{"run_name": f"seed={seed}", "status": "FINISHED", "params": {"seed": str(seed)}, "error": "",
             "metrics": {"evaluate.accuracy": acc, "finetune.best_val_acc": acc}, "stage_runs": {}, "attempts": 1}
            for seed, acc in ((0, 0.64), (1, 0.69))]
    md, _ = report.render(rows, "evaluate.acc")
    assert "| best |" not in md
    md, _ = report.render(rows, "evaluate.accuracy")
    assert md.splitlines()[2].startswith("| best | seed=1 |")

    import mlflow

    monkeypatch.setattr(report, "finish_sweep", lambda *args, **kwargs: rows)
    client = mlflow.MlflowClient()
    parent = client.create_run(client.create_experiment("sweeps")).info.run_id
    client.set_terminated(parent, "FINISHED")  # as finish_sweep leaves it
    monkeypatch.setenv("DEEPSWEEP_PARENT_RUN_ID", parent)
    config = OmegaConf.merge(compose("optimized_metric=evaluate.acc"), {"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(Reported) as ended:
        sweep.MlflowSweepCallback().on_multirun_end(config)
    assert isinstance(ended.value.error, ConfigError)
    assert str(ended.value.error) == (f"optimized_metric: 'evaluate.acc' was recorded by no job of the sweep in {tmp_path}, "
                                      "so its report ranks nothing; allowed: evaluate.accuracy, finetune.best_val_acc")
    # The command exits 2: the parent run says why, as a failed sweep's does (a FINISHED parent hid it).
    assert client.get_run(parent).info.status == "FAILED"
    assert client.get_run(parent).data.tags["deepsweep.error"] == str(ended.value.error)
    monkeypatch.setenv("DEEPSWEEP_PARENT_RUN_ID", "0" * 32)  # the callback takes it: set it for the next sweep
    sweep.MlflowSweepCallback().on_multirun_end(OmegaConf.merge(config, {"optimized_metric": "evaluate.accuracy"}))


def test_a_job_that_finished_without_the_optimized_metric_counts_as_finished(tmp_path, caplog):
    """Such a job returns None (cli.run._objective), a failed one NaN: the progress line counted both as failed
    while the report, reading the runs, counted 0 failed."""
    import logging
    import math

    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from deepsweep.cli import run
    from deepsweep.tracking import sweep

    hydra_cfg = OmegaConf.create({"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}})
    cfg = OmegaConf.create({"optimized_metric": "evaluate.probe_accuracy"})
    unranked = run._objective(cfg, {"evaluate.accuracy": 0.9}, hydra_cfg)
    assert unranked is None
    callback = sweep.MlflowSweepCallback()
    for num, value in enumerate((unranked, math.nan)):
        config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}, "job": {"num": num}}})
        job = JobReturn(status=JobStatus.COMPLETED)
        job.return_value = value  # Hydra's public setter (the field itself is private)
        with caplog.at_level(logging.INFO, logger="deepsweep"):
            callback.on_job_end(config, job)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep progress")]
    assert progress[0].endswith("(job 0 finished)") and progress[1].endswith("(job 1 FAILED)"), progress
    assert sorted(p.name for p in (tmp_path / sweep.DONE_DIR).iterdir()) == ["0", "1.failed"]
