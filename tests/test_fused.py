"""Fused sweeps (hydra/launcher=fused): an array of members trains as its jobs would one by one.

Tolerance: a member's forward pass is one slice of a vmapped (batched) matrix product, which may add in
another order than the unfused job's matrix product: float32 rounding, ~1e-7 relative per operation.
Over 2 epochs of a few dozen Adam steps on digits that stays far below 1e-4 (measured: equal to 6 decimals),
so every per-epoch value and test metric is compared at rtol 1e-4; a member trained with another member's
learning rate, seed or data order differs by more than 1e-2. Dropout masks are not a float matter: each
member's are its job's bit for bit (drawn from the same generator state by the same draw), so the same
tolerance holds with dropout."""

from __future__ import annotations

import shutil

import mlflow
import pytest

from conftest import deepsweep_cli

SWEEP = ["pretrain=none", "trainer.max_epochs=2", "logger.log_model=false", "logger.figures=false",
         "logger.log_checkpoints=false", "regularizer=dropout", "seed=0,1", "optimizer.lr=0.001,0.003"]


def _finetune_runs(sweep_dir):
    """Per finished job's (seed, lr): its finetune stage run, the job's run and its curves per epoch."""
    client = mlflow.MlflowClient()
    (parent,) = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list",
                                               filter_string="tags.`deepsweep.stage` = 'sweep'")
                 if r.data.tags["deepsweep.sweep_dir"] == str(sweep_dir.resolve())]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    jobs = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
            and r.info.status == "FINISHED"}
    found = {}
    for r in runs:
        job = jobs.get(r.data.tags.get("mlflow.parentRunId"))
        if job is not None and r.data.tags.get("deepsweep.stage") == "finetune" and r.info.status == "FINISHED":
            curves = {name: [m.value for m in sorted(client.get_metric_history(r.info.run_id, name), key=lambda m: m.step)]
                      for name in ("val/loss", "train/loss", "val/acc")}
            found[(job.data.params["seed"], job.data.params["optimizer.lr"])] = (r, job, curves)
    return found


@pytest.mark.slow
def test_a_fused_array_trains_each_member_as_its_own_job_and_resumes(tmp_path, isolated_tracking):
    fused_dir, plain_dir = tmp_path / "fused", tmp_path / "plain"
    # Two arrays of two, trained in two worker processes at once (the rerun below: one process).
    result = deepsweep_cli("run", "-m", "hydra/launcher=fused", *SWEEP, "hydra.launcher.max_members=2",
                           "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={fused_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 jobs, 4 in 2 arrays (2, 2), 0 alone" in result.stdout + result.stderr
    # The same jobs unfused, seed 0's two (the two of seed 1 are checked against the fused rerun below).
    plain_sweep = [arg if not arg.startswith("seed=") else "seed=0" for arg in SWEEP]
    assert deepsweep_cli("run", "-m", "hydra/launcher=basic", *plain_sweep, f"hydra.sweep.dir={plain_dir}").returncode == 0

    fused, plain = _finetune_runs(fused_dir), _finetune_runs(plain_dir)
    assert len(fused) == 4 and sorted(plain) == [("0", "0.001"), ("0", "0.003")]
    assert len({r.data.tags["deepsweep.fused_array"] for r, _, _ in fused.values()}) == 2
    assert len({r.data.tags["deepsweep.pid"] for r, _, _ in fused.values()}) == 2  # one process per array
    assert {r.data.tags["deepsweep.fused_members"] for r, _, _ in fused.values()} == {"2"}
    assert not any("deepsweep.fused_array" in r.data.tags for r, _, _ in plain.values())
    for key, (run, job, curves) in fused.items():
        assert (fused_dir / job.data.tags["deepsweep.job"] / "finetune" / "curves.csv").is_file()
        if key not in plain:
            continue
        plain_run, plain_job, plain_curves = plain[key]
        for name, values in curves.items():
            assert len(values) == 2 and values == pytest.approx(plain_curves[name], rel=1e-4), (key, name)
        for metric in ("finetune.best_val_acc", "finetune.best_val_loss", "evaluate.accuracy", "evaluate.roc_auc"):
            assert job.data.metrics[metric] == pytest.approx(plain_job.data.metrics[metric], rel=1e-4), (key, metric)
    # Per-member values really are per member: the two learning rates (and the two seeds) part early.
    first = {key: curves["val/loss"][0] for key, (_, _, curves) in fused.items()}
    assert len({round(v, 2) for v in first.values()}) == 4

    # An interrupted fused sweep, run again (in one process this time): the finished members are skipped and
    # kept out of the arrays, so no array trains a member nobody replays; the two lost ones (seed 1) train
    # again as one array, to the same numbers.
    client = mlflow.MlflowClient()
    lost = {key: fused[key] for key in (("1", "0.001"), ("1", "0.003"))}
    for run, job, _ in lost.values():
        client.update_run(job.info.run_id, status="RUNNING")
        for stage in ("finetune", "evaluate"):
            shutil.rmtree(fused_dir / job.data.tags["deepsweep.job"] / stage)
    result = deepsweep_cli("run", "-m", "hydra/launcher=fused", *SWEEP, "hydra.launcher.max_members=2",
                           f"hydra.sweep.dir={fused_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("already finished in this sweep: skipped") == 2
    assert "runs alone" not in log
    assert "4 jobs, 2 in 1 arrays (2), 0 alone, 2 finished before" in log
    again = _finetune_runs(fused_dir)
    for key, (run, job, curves) in lost.items():
        rerun, rerun_job, rerun_curves = again[key]
        assert rerun.info.run_id != run.info.run_id and rerun.data.tags["deepsweep.fused_members"] == "2"
        assert rerun_curves["val/loss"] == pytest.approx(curves["val/loss"], rel=1e-4)
        assert rerun_job.data.metrics["evaluate.accuracy"] == pytest.approx(job.data.metrics["evaluate.accuracy"],
                                                                            rel=1e-4)


def test_arrays_group_jobs_by_shape_and_name_why_a_job_runs_alone(compose):
    from deepsweep.training.fused import plan

    cfgs = [compose("pretrain=none", f"seed={s}", f"optimizer.lr={lr}", "regularizer=l2")
            for s in (0, 1) for lr in (0.001, 0.01)]
    cfgs.append(compose("pretrain=none", "model.hidden_dims=[32]"))  # another shape: another array
    cfgs.append(compose("pretrain=none", "model.hidden_dims=[32]", "seed=3", "init=xavier_uniform"))
    cfgs.append(compose("pretrain=none", "regularizer=gaussian_dropout"))
    cfgs.append(compose())  # fine-tunes a pretrained encoder of its own
    cfgs.append(compose("pretrain=none", "model.hidden_dims=[16,16]"))  # alone in its shape
    cfgs.append(None)  # invalid: its own job says why
    cfgs.append(compose("pretrain=none", "regularizer=dropout", "seed=5"))  # a dropout probability is per member
    cfgs += [compose("experiment=cora_gcn", f"seed={s}") for s in (0, 1)]  # a full-batch graph: one array
    cfgs.append(compose("experiment=cora_gcn", "data.batch_size=64"))  # sampled neighbourhoods
    cfgs.append(compose("experiment=cora_gat"))  # attention dropout inside torch-geometric
    cfgs.append(compose("experiment=sms_spam_transformer", "pretrain=none"))  # dropout drawn inside torch
    # Recurrent layers: fused on a GPU; on a CPU each job runs its own (a Python loop of vmapped steps is no faster).
    cfgs += [compose("experiment=vanishing_gradients", "model=gru", "trainer=gpu", f"seed={s}") for s in (0, 1)]
    cfgs.append(compose("experiment=vanishing_gradients", "model.tbptt_steps=5"))  # a state carried between chunks
    # Convolutions: fused on a GPU; on a CPU each job runs its own (a grouped convolution is slower there).
    cfgs += [compose("pretrain=none", "model=lenet", "data=digits", f"seed={s}") for s in (0, 1)]
    cfgs += [compose("pretrain=none", "model=lenet", "data=digits", "trainer=gpu", f"seed={s}") for s in (0, 1)]
    cfgs += [compose("experiment=vanishing_gradients", "model=gru", f"seed={s}") for s in (0, 1)]
    arrays, alone = plan(cfgs, max_members=3)
    assert arrays == [[0, 1, 2], [3, 10], [4, 5], [11, 12], [16, 17], [21, 22]]  # 3 and 10: the first shape, past 3
    assert sorted(alone) == [6, 7, 8, 9, 13, 14, 15, 18, 19, 20, 23, 24]
    assert alone[19].startswith("model=lenet on a CPU: stacked convolutions run as one grouped convolution")
    assert alone[23].startswith("model=gru on a CPU: a stacked recurrent layer steps through time in a Python loop")
    assert "regularizer.dropout_kind=gaussian" in alone[6] and "pretrain=autoencoder" in alone[7]
    assert alone[8] == "no other job of the sweep has its shapes" and alone[9] == "its config is invalid"
    assert "data.batch_size=64" in alone[13] and "model.attention_dropout=0.6" in alone[14]
    assert "only the recurrent families" in alone[15] and "model.tbptt_steps=5" in alone[18]
    assert plan(cfgs[:4], max_members=32)[0] == [[0, 1, 2, 3]]


def _unfused(cfg, member, out):
    """What the member's job alone gives: ``training.fit`` on a fresh build, as the finetune stage fits, into
    an MLflow run; the fit's result and the learning rates and epoch values the run recorded per epoch."""
    import mlflow

    from deepsweep.training.fit import fit

    task, train_loader, val_loader = member
    out.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run() as run:
        result = fit(cfg, task, train_loader, val_loader, out, stage="finetune", epochs=int(cfg.trainer.max_epochs),
                     run_id=run.info.run_id, early_stopping_patience=task.regularization.early_stopping_patience)
    client = mlflow.MlflowClient()
    curves = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
              for key in client.get_run(run.info.run_id).data.metrics}
    return result, {key: curve for key, curve in curves.items() if key.startswith("lr-")}, curves


@pytest.mark.parametrize("base,axes", [
    # Dropout probability per member (0 for one: it draws nothing), digits MLP.
    (["pretrain=none", "data=digits", "trainer.max_epochs=3"],
     [["seed=0", "regularizer=dropout"], ["seed=1", "regularizer=dropout"], ["seed=0"],
      ["seed=1", "regularizer=dropout", "regularizer.dropout=0.5"]]),
    # A schedule per member; two plateau schedules, each cut when its own member's validation loss rises.
    (["pretrain=none", "data=digits", "trainer.max_epochs=6"],
     [["seed=0", "scheduler=step", "scheduler.step_size=1"], ["seed=1", "scheduler=step", "scheduler.step_size=1"],
      ["seed=0", "scheduler=plateau", "scheduler.patience=0", "optimizer.lr=0.03"],
      ["seed=1", "scheduler=plateau", "scheduler.patience=0", "optimizer.lr=0.03"], ["seed=1", "scheduler=cosine"]]),
    # What each member adds to its own loss and gradient: an L1 and an L2 penalty, a gradient clip, linear probing
    # (the encoder frozen for its first epoch: its weights' optimizer state starts later; an L2 penalty
    # (penalized only where it trains: not its frozen encoder), early stopping (its validation loss rises at
    # its third epoch); AdamW and SGD with momentum members, whose stacked weights are joined with the Adam
    # members' in member order.
    (["pretrain=none", "data=digits", "trainer.max_epochs=4"],
     [["seed=0", "regularizer=l1"], ["seed=1", "optimizer=adamw"], ["seed=1", "regularizer=l2"],
      ["seed=0", "trainer.gradient_clip_val=0.05"], ["seed=1", "finetune.freeze_encoder_epochs=1", "regularizer=l2"],
      ["seed=2", "optimizer=momentum", "optimizer.lr=0.2", "regularizer=early_stopping",
       "regularizer.early_stopping_patience=1"]]),
    # Batch norm: each member's running statistics, stacked, updated in training and read in validation. SGD:
    # a linear bias before batch norm has a zero gradient in exact arithmetic, and Adam divides that rounding
    # noise by its own size, so under Adam those biases (and the running means holding them) wander by up to
    # the learning rate a step, differently for any other summation order (measured: val/loss 2e-4 apart).
    (["pretrain=none", "data=digits", "trainer.max_epochs=3", "regularizer=batchnorm", "optimizer=sgd",
      "optimizer.lr=0.05"],
     [["seed=0"], ["seed=1"], ["seed=0", "optimizer.lr=0.003"], ["seed=1", "regularizer.dropout=0.3"]]),
    # Convolutions (vmapped conv2d and pooling): LeNet with dropout in its fully connected layers, and a ResNet
    # whose blocks' batch norm keeps stacked running statistics (SGD, as above).
    (["pretrain=none", "data=digits", "trainer.max_epochs=2", "model=lenet", "model.channels=[4,8]",
      "model.kernel_size=3", "model.fc_dims=[32]", "regularizer=dropout"],
     [["seed=0"], ["seed=1"], ["seed=0", "optimizer.lr=0.003"]]),
    (["pretrain=none", "data=digits", "trainer.max_epochs=2", "model=resnet", "model.channels=[4,8]",
      "model.blocks_per_stage=[1,1]", "optimizer=sgd", "optimizer.lr=0.05"],
     [["seed=0"], ["seed=1"], ["seed=0", "optimizer.lr=0.02"]]),
    # A full-batch graph shared by every member: Kipf & Welling's GCN (dropout 0.5) on the karate club.
    (["experiment=cora_gcn", "data=karate", "trainer.max_epochs=25"],
     [["seed=0"], ["seed=1"], ["seed=0", "optimizer.lr=0.05"], ["seed=2", "regularizer.dropout=0"]]),
    # GraphSAGE (mean) and GAT (without attention dropout, which torch-geometric draws inside) alike.
    (["experiment=cora_gcn", "data=karate", "trainer.max_epochs=10", "model=sage"],
     [["seed=0"], ["seed=1"], ["seed=0", "optimizer.lr=0.05"]]),
    (["experiment=cora_gcn", "data=karate", "trainer.max_epochs=10", "model=gat", "model.attention_dropout=0"],
     [["seed=0"], ["seed=1"], ["seed=0", "optimizer.lr=0.05"]]),
    # Recurrent layers, stepped in vmappable ops (StackableRecurrent): a GRU with a learning rate per member, and
    # a 2-layer LSTM with variational dropout (one mask per sequence, LockedDropout) and a probability per member.
    (["experiment=vanishing_gradients", "data.num_samples=300", "data.length=12", "trainer.max_epochs=2", "model=gru"],
     [["seed=0"], ["seed=1"], ["seed=0", "optimizer.lr=0.003"]]),
    (["experiment=vanishing_gradients", "data.num_samples=300", "data.length=12", "trainer.max_epochs=2", "model=lstm",
      "model.num_layers=2", "regularizer=dropout"],
     [["seed=0"], ["seed=1"], ["seed=0", "regularizer.dropout=0.5"]]),
    # On a GPU the masks come from the CUDA generator, through the fused dropout kernel its jobs use.
    pytest.param(["pretrain=none", "data=digits", "trainer.max_epochs=3", "trainer=gpu"],
                 [["seed=0", "regularizer=dropout"], ["seed=1", "regularizer=dropout"], ["seed=0"]],
                 marks=pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no GPU here")),
], ids=["mlp-dropout", "mlp-schedules", "mlp-penalties-clip-probe", "mlp-batch-norm", "lenet-dropout", "resnet-batch-norm", "gcn-full-batch",
        "sage-full-batch", "gat-full-batch", "gru-sequences", "lstm-variational-dropout", "mlp-dropout-gpu"])
def test_each_member_trains_as_its_job_alone_with_its_own_dropout_masks(compose, tmp_path, base, axes):
    import torch

    from deepsweep.data.loaders import PreparedData
    from deepsweep.stages import finetune
    from deepsweep.stages.pipeline import execute
    from deepsweep.training.fused import build_members, train_members

    execute("prepare", compose(*base), tmp_path)
    data = PreparedData.load(tmp_path / "prepare")
    cfgs = [compose(*base, *a, "trainer.progress=none") for a in axes]
    build = lambda cfg: finetune.build(cfg, data, {"pretrain": tmp_path / "pretrain"})  # noqa: E731
    members = build_members(cfgs, build)
    outer = torch.get_rng_state(), (torch.cuda.get_rng_state() if torch.cuda.is_available() else None)
    results = train_members(cfgs, members)
    # The members' draws leave the process's own streams alone.
    assert torch.equal(torch.get_rng_state(), outer[0])
    assert outer[1] is None or torch.equal(torch.cuda.get_rng_state(), outer[1])
    rel = 1e-4 if "trainer=gpu" in base else 1e-5  # a GPU's batched and single matmuls are other kernels
    for cfg, fused in zip(cfgs, results):
        member = build(cfg)
        alone, rates, curves = _unfused(cfg, member, tmp_path / "fit")
        # Each epoch's learning rate, as the member's own run records it (none without a schedule).
        assert {key: {e: h[key] for e, h in fused.history.items() if key in h}
                for key in {k for h in fused.history.values() for k in h if k.startswith("lr-")}} == rates
        # The kept weights' running statistics (batch norm) are the member's own, as its fit kept them.
        for name, buffer in member[0].model.named_buffers():
            assert fused.state[name].double().numpy() == pytest.approx(buffer.double().numpy(), rel=1e-4, abs=1e-6), name
        last = fused.history[max(fused.history)]
        assert fused.epochs == alone.epochs and fused.best_epoch == alone.best_epoch, cfg.seed
        assert fused.best_score == pytest.approx(alone.best_score, rel=rel)
        for key in ("val/loss", "train/loss", "val/acc"):
            assert last[key] == pytest.approx(float(alone.last_metrics[key]), rel=rel), (cfg.seed, key)
            # Every epoch's, as the member's own run records it (a value that differs for one epoch only, as the
            # penalty of a frozen encoder's weights in the first, shows here).
            assert {e: h[key] for e, h in fused.history.items()} == pytest.approx(curves[key], rel=rel), (cfg.seed, key)
    if any("regularizer=early_stopping" in a for a in axes):  # the early stop is exercised, not only allowed
        assert any(r.epochs < int(cfgs[0].trainer.max_epochs) for r in results)
    # The members part: another seed, learning rate, dropout probability or schedule is another curve.
    assert len({tuple(round(h["val/loss"], 4) for h in r.history.values()) for r in results}) == len(results)


def test_a_member_whose_loss_goes_non_finite_fails_alone(compose, tmp_path):
    from deepsweep.data.loaders import PreparedData
    from deepsweep.stages import finetune
    from deepsweep.stages.pipeline import execute
    from deepsweep.training.fused import build_members, train_members

    base = ["pretrain=none", "trainer.max_epochs=3", "optimizer=sgd"]
    execute("prepare", compose(*base), tmp_path)
    data = PreparedData.load(tmp_path / "prepare")
    good = [compose(*base, "seed=0", "optimizer.lr=0.05"), compose(*base, "seed=1", "optimizer.lr=0.05",
                                                                    "regularizer=early_stopping", "regularizer.early_stopping_patience=1")]
    bad = compose(*base, "seed=2", "optimizer.lr=1e30")
    build = lambda cfg: finetune.build(cfg, data, {"pretrain": tmp_path / "pretrain"})  # noqa: E731
    results = train_members([good[0], bad, good[1]], build_members([good[0], bad, good[1]], build))
    assert results[1].error.startswith("non-finite value at epoch 0") and results[1].epochs == 0
    assert results[0].error is None and results[0].epochs == 3 and results[0].best_epoch is not None
    # The others' numbers are those of an array without it: nothing of the failing member reaches them.
    alone = train_members(good, build_members(good, build))
    for fused, single in ((results[0], alone[0]), (results[2], alone[1])):
        assert sorted(fused.history) == sorted(single.history) and fused.epochs == single.epochs
        for epoch, values in fused.history.items():
            assert values == pytest.approx(single.history[epoch], rel=1e-5)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no GPU here; on one, an array on the GPU must "
                    "train as on the CPU")
def test_an_array_on_the_gpu_trains_as_on_the_cpu(compose, tmp_path):
    from deepsweep.data.loaders import PreparedData
    from deepsweep.stages import finetune
    from deepsweep.stages.pipeline import execute
    from deepsweep.training.fused import build_members, train_members

    execute("prepare", compose("pretrain=none"), tmp_path)
    data = PreparedData.load(tmp_path / "prepare")
    results = {}
    for trainer in ("cpu", "gpu"):
        cfgs = [compose("pretrain=none", f"trainer={trainer}", "trainer.max_epochs=3", f"seed={s}",
                        f"optimizer.lr={lr}") for s in (0, 1) for lr in (0.001, 0.003)]
        results[trainer] = train_members(cfgs, build_members(cfgs, lambda c: finetune.build(c, data, {"pretrain": tmp_path})))
    for cpu, gpu in zip(results["cpu"], results["gpu"]):
        assert cpu.best_epoch == gpu.best_epoch and sorted(cpu.history) == sorted(gpu.history)
        for epoch, values in cpu.history.items():  # other kernels, other summation order: float32 noise only
            assert gpu.history[epoch] == pytest.approx(values, rel=1e-3)
        assert all(v.device.type == "cpu" for v in gpu.state.values())  # kept weights come back to the host


@pytest.mark.parametrize("setting,allowed", [("max_members=0", "an integer >= 1"),
                                             ("n_jobs=two", "an integer >= 1 (or -1, one process per core)")])
def test_a_bad_launcher_setting_is_one_line_before_any_job(tmp_path, setting, allowed):
    result = deepsweep_cli("run", "-m", "hydra/launcher=fused", f"hydra.launcher.{setting}", "pretrain=none", "seed=0,1",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}")
    key, value = setting.split("=")
    assert result.returncode == 2 and result.stderr.strip() == (
        f"deepsweep: error: hydra.launcher.{key}: {int(value) if value.isdigit() else repr(value)}; allowed: {allowed}")
    # Refused before the sweep starts: no sweep folder, no store opened, no parent run to mark failed.
    assert not (tmp_path / "sweep").exists() and "mlflow" not in result.stdout + result.stderr


def test_a_deepsweep_launchers_own_check_and_a_swept_hydra_key_are_refused_before_the_sweep():
    """``deepsweep run -m`` finds the launcher's ``check_settings`` through the target conf/hydra/launcher/fused.yaml
    names (the class Hydra instantiates), and refuses a swept ``hydra.*`` key, which Hydra refuses only after
    the sweep's start."""
    from deepsweep.cli.main import check_run_args
    from deepsweep.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^hydra\.launcher\.max_members: -3; allowed: an integer >= 1$"):
        check_run_args(["-m", "hydra/launcher=fused", "hydra.launcher.max_members=-3", "pretrain=none", "seed=0"])
    with pytest.raises(ConfigError, match=r"^hydra\.launcher\.max_members: 0,4; allowed: one value \(Hydra's own"):
        check_run_args(["-m", "hydra/launcher=fused", "hydra.launcher.max_members=0,4", "pretrain=none", "seed=0,1"])
    check_run_args(["-m", "hydra/launcher=fused", "hydra.launcher.max_members=4", "pretrain=none", "seed=0,1"])


def test_an_array_that_breaks_leaves_the_training_stage_its_own_random_state(compose, tmp_path, monkeypatch):
    """Building the members seeds every generator anew; when the array then breaks, the stage that was training
    it fits alone and must draw its dropout masks from its own state, not the last member's."""
    import os
    import random

    import numpy as np
    import torch

    from deepsweep.data.loaders import PreparedData
    from deepsweep.stages import finetune
    from deepsweep.stages.pipeline import execute
    from deepsweep.training import fused

    base = ["pretrain=none", "data=digits", "regularizer=dropout"]
    execute("prepare", compose(*base), tmp_path)
    data = PreparedData.load(tmp_path / "prepare")
    cfgs = [compose(*base, f"seed={s}") for s in (0, 1)]

    def breaks(*_):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(fused, "train_members", breaks)
    finetune.build(cfgs[0], data, {"pretrain": tmp_path})  # what the stage did before its array trained
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(), os.environ["PL_GLOBAL_SEED"]
    array = fused.FusedArray(cfgs)
    array.train(lambda cfg: finetune.build(cfg, data, {"pretrain": tmp_path}))
    assert array.broken == "RuntimeError: out of memory"
    assert torch.equal(torch.get_rng_state(), before[0]) and (np.random.get_state()[1] == before[1]).all()
    assert random.getstate() == before[2] and os.environ["PL_GLOBAL_SEED"] == before[3] == "0"


def test_no_dvc_stage_runs_the_fused_training_code():
    """A stage DVC runs is one job, never a member of an array: the finetune stage reaches an array only
    through ``training.arrays``, so an edit to ``training/fused.py`` stales no pipeline (dvc.yaml's code deps
    are the modules each stage can import: tests/faults/test_provenance.py)."""
    import yaml

    from conftest import ROOT

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    deps = {dep for stage in stages.values() for dep in stage.get("deps", [])}
    assert not {"src/deepsweep/training", "src/deepsweep/training/fused.py"} & deps
    assert "src/deepsweep/training/arrays.py" in stages["finetune"]["deps"]


@pytest.mark.parametrize("cell,options", [
    ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"num_layers": 2, "bidirectional": True, "bias": False}),
    ("RNN", {"num_layers": 2, "nonlinearity": "relu"}),
    ("RNN", {"bidirectional": True}),
])
def test_a_stackable_recurrent_layer_is_torchs_layer_under_vmap(cell, options):
    """What the equivalence cases above do not build (layers of one module, both directions, relu, no bias):
    each member's outputs and final states under vmap are those of torch's own layer with its weights."""
    import torch
    from torch.func import functional_call, stack_module_state, vmap

    from deepsweep.training.fused import StackableRecurrent

    torch.manual_seed(0)
    layers = [getattr(torch.nn, cell)(5, 7, batch_first=True, **options) for _ in range(3)]
    inputs = torch.randn(3, 4, 6, 5)  # members x batch x steps x features
    params, _ = stack_module_state(layers)
    stackable = StackableRecurrent(layers[0])
    outputs, states = vmap(lambda p, x: functional_call(stackable, p, (x,)))(params, inputs)
    for i, layer in enumerate(layers):
        expected, expected_states = layer(inputs[i])
        assert torch.allclose(outputs[i], expected, rtol=1e-5, atol=1e-6)
        for got, want in zip(*(s if isinstance(s, tuple) else (s,) for s in (states, expected_states))):
            assert got[i].shape == want.shape and torch.allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_an_installed_array_hook_restores_the_one_before_it():
    """A stage asks ``training.arrays.member_fit``: None outside an array, the innermost array's answer inside,
    and after a block ends the enclosing one's again (not None while an outer array is still training)."""
    from deepsweep.training import arrays

    assert arrays.member_fit(None, None, None, None, None) is None
    with arrays.installed(lambda *args: "outer"):
        with arrays.installed(lambda *args: "inner"):
            assert arrays.member_fit(None, None, None, None, None) == "inner"
        assert arrays.member_fit(None, None, None, None, None) == "outer"
    assert arrays.member_fit(None, None, None, None, None) is None


def test_an_optimizer_not_known_to_step_each_weight_on_its_own_is_not_stacked(compose, tmp_path):
    """Members share stacked weights only under torch optimizers that update each element from its own gradient
    and state; another (L-BFGS's line search mixes every weight) makes the array fall back to separate fits."""
    from deepsweep.data.loaders import PreparedData
    from deepsweep.stages import finetune
    from deepsweep.stages.pipeline import execute
    from deepsweep.training.fused import Unfusable, build_members, train_members

    base = ["pretrain=none", "data=digits", "trainer.max_epochs=1", "optimizer=lbfgs"]
    execute("prepare", compose(*base), tmp_path)
    data = PreparedData.load(tmp_path / "prepare")
    cfgs = [compose(*base, f"seed={seed}") for seed in (0, 1)]
    members = build_members(cfgs, lambda cfg: finetune.build(cfg, data, {"pretrain": tmp_path / "pretrain"}))
    with pytest.raises(Unfusable, match=r"torch\.optim\.lbfgs\.LBFGS: not known to update each weight on its own"):
        train_members(cfgs, members)


class CountingLoader:
    """Hydra's config loader as the fused launcher sees it, counting the sweep configs it composes."""

    def __init__(self):
        self.composed: list[list[str]] = []

    def load_sweep_config(self, master_config, sweep_overrides):
        from omegaconf import OmegaConf

        self.composed.append(list(sweep_overrides))
        return OmegaConf.create({"hydra": {"job": {"id": None, "num": None}}, "seed": sweep_overrides[0]})

    def get_search_path(self):
        return "search path"


def test_the_launcher_takes_each_jobs_config_from_the_sweepers_check_of_the_batch():
    """Hydra's sweeper composes every job of a batch to check it (Sweeper.validate_batch_is_legal), then the
    launcher asks for each again: one composition serves both, the sweeper's copy is its own, and a pool worker
    receives the loader without the configs it held."""
    import pickle

    from hydra.types import HydraContext
    from omegaconf import OmegaConf

    from hydra_plugins.deepsweep_fused_launcher.fused_launcher import ComposedOnce, FusedLauncher

    loader = CountingLoader()
    context, master = HydraContext(config_loader=loader, callbacks=None), OmegaConf.create({})
    launcher = FusedLauncher()
    launcher.setup(hydra_context=context, task_function=None, config=master)
    batch = [["seed=0"], ["seed=1"]]
    checked = [context.config_loader.load_sweep_config(master, overrides) for overrides in batch]  # the sweeper
    checked[0].seed = "changed by the sweeper"
    launched = [launcher._sweep_config(overrides, num) for num, overrides in enumerate(batch)]
    assert loader.composed == batch  # once each, not twice
    assert [c.seed for c in launched] == ["seed=0", "seed=1"] and [c.hydra.job.num for c in launched] == [0, 1]
    assert context.config_loader.get_search_path() == "search path"  # everything else is Hydra's loader
    context.config_loader.load_sweep_config(master, ["seed=2"])
    assert pickle.loads(pickle.dumps(context.config_loader)).composed == {}
    launcher.setup(hydra_context=context, task_function=None, config=master)  # a second sweep: not wrapped twice
    assert context.config_loader.loader is loader
    assert isinstance(context.config_loader, ComposedOnce)
