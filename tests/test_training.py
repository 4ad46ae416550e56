"""Families, optimizers, schedules and early stopping, trained for real on a small slice of digits."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from deepsweep import factory, training
from deepsweep.config import options
from deepsweep.factory import build
from deepsweep.data.loaders import InMemoryLoader, TensorSplit, label_subset
from deepsweep.data.sources import Digits
from deepsweep.tasks.classify import ClassifyTask
from deepsweep.tasks.common import TaskSetup
from deepsweep.training.callbacks import BestWeights


@pytest.fixture(scope="module")
def digits():
    splits = Digits().load()
    as_tensors = lambda s: TensorSplit(torch.from_numpy(s.x), torch.from_numpy(s.y))  # noqa: E731
    return as_tensors(splits.train), as_tensors(splits.val)


def fit(cfg, train, val, epochs, steps_per_call=1):
    """The finetune stage's path (training.fit) on a digits slice; the fit's result and the task."""
    cfg.trainer.max_epochs, cfg.trainer.steps_per_call = epochs, steps_per_call
    task = factory.build_task(cfg, ClassifyTask, factory.build_model(cfg, (1, 8, 8), 10), "finetune")
    result = training.fit(cfg, task, InMemoryLoader(train, 64, shuffle=True), InMemoryLoader(val, 256),
                          Path(tempfile.mkdtemp()) / "finetune", stage="finetune", epochs=epochs,
                          early_stopping_patience=cfg.regularizer.early_stopping_patience)
    return result.trainer, task


def val_loss(task, val):
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(task.model.eval()(val.x), val.y).item()


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_learns(compose, digits, optimizer):
    train, val = digits
    cfg = compose(f"optimizer={optimizer}")
    torch.manual_seed(0)
    before = val_loss(type("T", (), {"model": factory.build_model(cfg, (1, 8, 8), 10)})(), val)
    trainer, task = fit(cfg, train, val, epochs=2)
    assert isinstance(trainer.optimizers[0], build(cfg.optimizer).func)
    assert val_loss(task, val) < 0.8 * before


@pytest.mark.parametrize("model", ["mlp", "lenet", "resnet", "vgg", "inception"])
def test_families_give_logits_on_digits_and_mnist_shapes(compose, model):
    cfg = compose(f"model={model}")
    for shape in [(1, 8, 8), (1, 28, 28)]:
        net = factory.build_model(cfg, shape, 10)
        assert net(torch.rand(3, *shape)).shape == (3, 10)
        assert net.encoder(torch.rand(3, *shape)).shape == (3, net.feature_dim)


def test_vgg_stacks_3x3_convs_per_stage_and_inception_concatenates_four_branches(compose):
    from torch import nn

    from deepsweep.config import ConfigError

    vgg = factory.build_model(compose("model=vgg", "model.channels=[8,16,32]", "model.convs_per_stage=3"), (1, 28, 28), 10)
    convs = [m for m in vgg.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 9 and [c.out_channels for c in convs] == [8] * 3 + [16] * 3 + [32] * 3
    assert vgg.encoder[:-2](torch.rand(2, 1, 28, 28)).shape == (2, 32, 3, 3)  # 28 -> 14 -> 7 -> 3, before the dense layer
    net = factory.build_model(compose("model=inception", "model.stem_channels=8", "model.channels=[16]"), (1, 8, 8), 10)
    block = net.encoder[1]
    x = torch.rand(2, 8, 8, 8)
    # each branch a quarter of the 16 channels, concatenated in order: 1x1, 3x3, 5x5, pool
    assert [b(x).shape[1] for b in block.branches] == [4, 4, 4, 4]
    assert torch.equal(block(x), torch.cat([b(x) for b in block.branches], dim=1))
    kernels = [m.kernel_size for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert kernels == [(1, 1), (1, 1), (3, 3), (1, 1), (5, 5), (1, 1)]
    with pytest.raises(ConfigError, match=r"model.channels: 18 is not divisible by 4"):
        factory.build_model(compose("model=inception", "model.channels=[18]"), (1, 8, 8), 10)


def test_cnn_on_flat_input_names_the_problem(compose):
    from deepsweep.config import ConfigError

    with pytest.raises(ConfigError, match=r"model=lenet needs image inputs .* shape \(64,\)"):
        factory.build_model(compose("model=lenet"), (64,), 10)


@pytest.mark.parametrize("scheduler", ["step", "exponential", "cosine", "plateau"])
def test_schedules_change_the_learning_rate(compose, digits, scheduler):
    train, val = digits
    cfg = compose(f"scheduler={scheduler}", "scheduler.step_size=1" if scheduler == "step" else "seed=0",
                  *(["scheduler.patience=0"] if scheduler == "plateau" else []))
    trainer, _ = fit(cfg, train, val, epochs=3)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    if scheduler == "plateau":
        assert lr <= cfg.optimizer.lr
    else:
        assert lr < cfg.optimizer.lr


@pytest.mark.parametrize("steps_per_call", [1, 16])
def test_the_learning_rate_is_recorded_on_its_own_epoch(compose, digits, tmp_path, steps_per_call):
    """Each epoch's learning rate lands on that epoch's row, in MLflow and curves.csv (Lightning's
    LearningRateMonitor stepped it by optimizer steps: epoch 1's rate on epoch 2's row, rows past the end)."""
    import csv

    import mlflow

    train, val = digits
    cfg = compose("scheduler=step", "scheduler.step_size=1", f"trainer.steps_per_call={steps_per_call}")
    task = factory.build_task(cfg, ClassifyTask, factory.build_model(cfg, (1, 8, 8), 10), "finetune")
    mlflow.set_experiment("learning-rates")
    with mlflow.start_run() as active:
        training.fit(cfg, task, InMemoryLoader(train, 64, shuffle=True), InMemoryLoader(val, 256), tmp_path,
                     stage="finetune", epochs=4, run_id=active.info.run_id)
    history = mlflow.MlflowClient().get_metric_history(active.info.run_id, "lr-Adam")
    rates = [cfg.optimizer.lr * 0.5 ** epoch for epoch in range(4)]
    history = sorted((m.step, m.value) for m in history)
    assert [step for step, _ in history] == [0, 1, 2, 3] and [v for _, v in history] == pytest.approx(rates)
    with open(tmp_path / "curves.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["lr-Adam"]) for r in rows] == pytest.approx(rates)


def test_early_stopping_stops_and_keeps_best_weights(compose, digits):
    train, val = digits
    cfg = compose("regularizer=early_stopping", "regularizer.early_stopping_patience=1", "optimizer=sgd",
                  "optimizer.lr=3.0")  # a learning rate this high makes val_loss bounce early
    trainer, task = fit(cfg, train, val, epochs=30)
    assert trainer.current_epoch < 30
    best = next(c for c in trainer.callbacks if isinstance(c, BestWeights))
    assert val_loss(task, val) == pytest.approx(best.best_score, rel=1e-4)


def test_freeze_encoder_epochs_trains_only_the_head_first(compose, digits):
    import lightning as L

    train, val = digits
    cfg = compose()
    model = factory.build_model(cfg, (1, 8, 8), 10)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    task = ClassifyTask(model, TaskSetup(factory.build_optimizer(cfg)), freeze_encoder_epochs=1)
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(task, InMemoryLoader(train, 64))
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(head_before, model.head.weight)


def test_label_fraction_is_stratified(digits):
    train, _ = digits
    few = label_subset(train, 0.1, seed=0)
    assert abs(len(few) - 0.1 * len(train)) <= 10
    assert set(few.y.tolist()) == set(range(10))


def test_in_memory_loader_covers_every_sample_once(digits):
    train, _ = digits
    loader = InMemoryLoader(train, 100, shuffle=True, seed=1)
    seen = torch.cat([y for _, y in loader])
    assert len(loader) == -(-len(train) // 100)
    assert sorted(seen.tolist()) == sorted(train.y.tolist())


def _fit_with_steps_per_call(cfg, train, val, epochs: int, steps: int):
    trainer, task = fit(cfg, train, val, epochs, steps_per_call=steps)
    return trainer, task.model


@pytest.mark.parametrize("overrides", [
    ["optimizer=momentum", "scheduler=step", "scheduler.step_size=1", "regularizer=dropout", "trainer.gradient_clip_val=0.05"],
    # mode=max on a falling val/loss: "no improvement" every epoch, so the plateau schedule must act.
    ["optimizer=adam", "scheduler=plateau", "scheduler.patience=0", "scheduler.mode=max", "regularizer=l2"],
])
def test_several_steps_per_call_make_the_same_updates(compose, digits, overrides):
    # Same batches, dropout masks, clipping and learning-rate schedule: the same weights, only fewer calls.
    train, val = digits
    cfg = compose(*overrides)
    one_trainer, one = _fit_with_steps_per_call(cfg, train, val, 3, 1)
    many_trainer, many = _fit_with_steps_per_call(cfg, train, val, 3, 5)
    assert many_trainer.global_step == one_trainer.global_step == 3 * -(-len(train) // 64)
    assert many_trainer.num_training_batches == -(-one_trainer.num_training_batches // 5)  # 5 batches a call
    for (name, a), b in zip(one.state_dict().items(), many.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    lr = lambda t: t.optimizers[0].param_groups[0]["lr"]  # noqa: E731
    assert lr(many_trainer) == lr(one_trainer) < cfg.optimizer.lr  # the schedule stepped in both


def test_steps_per_call_falls_back_where_automatic_optimization_is_needed(compose):
    from deepsweep.config import ConfigError

    assert factory.steps_per_call(compose("trainer.steps_per_call=4")) == 4
    assert factory.steps_per_call(compose("trainer.steps_per_call=4", "optimizer=lbfgs")) == 1
    assert factory.steps_per_call(compose("trainer.steps_per_call=4", "trainer.strategy=ddp_spawn")) == 1
    with pytest.raises(ConfigError, match="trainer.steps_per_call: must be >= 1, got 0"):
        factory.steps_per_call(compose("trainer.steps_per_call=0"))


def test_validation_scores_match_sklearn(compose, digits):
    from sklearn.metrics import accuracy_score, f1_score

    from deepsweep.data.loaders import Chunked

    train, val = digits
    trainer, model = _fit_with_steps_per_call(compose(), train, val, 1, 4)
    scores = trainer.validate(trainer.lightning_module, Chunked(InMemoryLoader(val, 100), 3), verbose=False)[0]
    model.eval()
    with torch.no_grad():
        predicted = model(val.x).argmax(-1).numpy()
    assert scores["val/acc"] == pytest.approx(accuracy_score(val.y.numpy(), predicted), abs=1e-6)
    assert scores["val/f1"] == pytest.approx(f1_score(val.y.numpy(), predicted, average="macro"), abs=1e-6)


@pytest.mark.parametrize("steps", [1, 4])
def test_direct_epoch_logging_records_what_self_log_would(compose, digits, monkeypatch, steps):
    """log_epoch's direct path (one fitting process) against Lightning's self.log: the same MLflow
    history, the same callback metrics, and early stopping, best weights and a plateau schedule that
    read them act the same. Turning the direct path into a no-op makes every assertion here fail."""
    import mlflow
    from lightning.pytorch.callbacks import EarlyStopping

    from deepsweep.tasks.common import EpochLoggingMixin
    from deepsweep.training.mlflow_logger import MlflowRunLogger

    train, val = digits
    cfg = compose("optimizer=adam", "scheduler=plateau", "scheduler.patience=0", "scheduler.mode=max")
    mlflow.set_experiment("logging")  # this test's own store holds no experiment an earlier test set

    def run(direct: bool):
        monkeypatch.setattr(EpochLoggingMixin, "direct_epoch_logging", direct)
        model = factory.build_model(cfg, (1, 8, 8), 10)
        task = ClassifyTask(model, TaskSetup(factory.build_optimizer(cfg), factory.build_scheduler(cfg, 6),
                                             build(cfg.regularizer), steps_per_call=steps))
        best = BestWeights()
        # mode=max on a falling loss: stops after 2 epochs without a rise, so stopping must read val/loss.
        stop = EarlyStopping("val/loss", patience=2, mode="max")
        with mlflow.start_run() as active:
            trainer = training.build_trainer(cfg, 6, MlflowRunLogger(active.info.run_id), [best, stop], "/tmp",
                                             manual_optimization=not task.automatic_optimization)
            trainer.fit(task, task.batches(InMemoryLoader(train, 64, shuffle=True)),
                        task.batches(InMemoryLoader(val, 256)))
        client = mlflow.MlflowClient()
        history = {key: [(m.step, round(m.value, 5)) for m in client.get_metric_history(active.info.run_id, key)]
                   for key in ("train/loss", "val/loss", "val/acc", "val/f1")}
        callback = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items()}
        return history, callback, best.result(trainer), trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]

    direct, lightning = run(True), run(False)
    assert direct == lightning
    history, _, _, epochs, lr = direct
    assert 0 < epochs < 6 and lr < cfg.optimizer.lr  # early stopping and the plateau schedule acted
    assert [step for step, _ in history["val/acc"]] == list(range(epochs))


def test_data_moves_to_the_trainers_gpu_once_and_stays_put_on_cpu(compose, digits):
    from deepsweep.data.loaders import Chunked

    train, _ = digits
    cpu_trainer = training.build_trainer(compose(), 1, None, [], "/tmp")
    loader = InMemoryLoader(train, 64, shuffle=True, seed=3)
    assert training.place_on_device(cpu_trainer, loader) == (loader,) and loader.split is train
    if not torch.cuda.is_available():
        pytest.skip("no GPU here; on one, the moved loader must give the same batches on the device")
    gpu_trainer = training.build_trainer(compose("trainer=gpu"), 1, None, [], "/tmp")
    (moved,) = training.place_on_device(gpu_trainer, Chunked(InMemoryLoader(train, 64, shuffle=True, seed=3), 4))
    assert moved.loader.split.x.is_cuda
    on_device = [b for chunk in moved for b in chunk]
    for (x, y), (gx, gy) in zip(InMemoryLoader(train, 64, shuffle=True, seed=3), on_device, strict=True):
        assert gx.is_cuda and torch.equal(x, gx.cpu()) and torch.equal(y, gy.cpu())


def test_layer_statistics_are_logged_before_training_and_after_the_first_epoch_and_change_nothing(compose, tmp_path):
    """logger.layer_stats: the input std and weight-gradient norm of every layer at steps 0 and 1 in the
    finetune run, recomputed here for the initial model; the trained weights equal those of a fit without it
    (dropout on: the measurement draws no random number the fit would have drawn)."""
    import json

    import mlflow

    from deepsweep.stages.pipeline import execute

    base = ("pretrain=none", "trainer.max_epochs=2", "regularizer=dropout", "model.hidden_dims=[32,32]")
    weights = {}
    for on in (False, True):
        artifacts = tmp_path / str(on)
        cfg = compose(*base, f"logger.layer_stats={str(on).lower()}")
        for stage in ("prepare", "pretrain", "finetune"):
            execute(stage, cfg, artifacts)
        weights[on] = torch.load(artifacts / "finetune" / "model.pt", weights_only=True)["state_dict"]
    assert weights[True].keys() == weights[False].keys()
    assert all(torch.equal(weights[True][k], weights[False][k]) for k in weights[True])

    client = mlflow.MlflowClient()
    run_id = json.loads((tmp_path / "True" / "finetune" / "run.json").read_text())["run_id"]
    names = sorted(client.get_run(run_id).data.metrics)
    layers = [n for n in names if n.startswith("layer/")]
    # Three layers with weights (two hidden, the head): inputs and gradients of each.
    assert layers == [f"layer/grad_norm/{i:02d}" for i in range(3)] + [f"layer/input_std/{i:02d}" for i in range(3)]
    history = {n: {m.step: m.value for m in client.get_metric_history(run_id, n)} for n in layers}
    assert all(sorted(h) == [0, 1] for h in history.values())
    # Step 0 is the initial model on the first validation batch: recompute it.
    from deepsweep.data.loaders import PreparedData

    cfg = compose(*base)
    data = PreparedData.load(tmp_path / "True" / "prepare")
    model = factory.build_model(cfg, data.input_shape, data.num_classes).eval()
    x, y = next(iter(data.loader("val", int(cfg.data.batch_size))))[:2]
    assert history["layer/input_std/00"][0] == pytest.approx(float(x.float().std()), rel=1e-6)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert history["layer/grad_norm/00"][0] == pytest.approx(float(first.weight.grad.norm()), rel=1e-5)
    assert not any(n.startswith("layer/") for n in client.get_run(
        json.loads((tmp_path / "False" / "finetune" / "run.json").read_text())["run_id"]).data.metrics)
