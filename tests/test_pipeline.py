"""The four stages end to end on digits, with what they record in MLflow and hand to each other."""

from __future__ import annotations

import json
import shutil

import mlflow
import pytest
import torch

from conftest import FAST, requires_shared
from deepsweep import training
from deepsweep.errors import ConfigError
from deepsweep.stages.pipeline import execute, run_all
from deepsweep.tasks.common import TaskSetup


@pytest.fixture
def fast_cfg(compose):
    return compose(*FAST)


def _runs(stage=None):
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r for r in runs if stage is None or r.data.tags.get("deepsweep.stage") == stage]


def test_stages_chain_and_record_everything(compose, tmp_path):
    fast_cfg = compose(*FAST, "logger.figures=true")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, fast_cfg, artifacts)

    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "f1_macro", "roc_auc", "loss", "ece", "probe_accuracy", "probe_f1_macro",
                            "probe_roc_auc", "test_reconstruction_error"}
    assert metrics["accuracy"] > 0.5 and metrics["roc_auc"] > 0.8
    assert metrics["probe_accuracy"] > 0.5 and 0 < metrics["test_reconstruction_error"] < 1
    for name in ("confusion.csv", "roc.csv", "rejection.csv", "predictions.pt", "confusion_matrix.png", "roc_curve.png",
                 "rejection_curve.png"):
        assert (artifacts / "evaluate" / name).stat().st_size > 0
    assert (artifacts / "evaluate" / "confusion.csv").read_text().startswith("actual,predicted\n")

    runs = {r.data.tags["deepsweep.stage"]: r for r in _runs()}
    assert set(runs) == {"prepare", "pretrain", "finetune", "evaluate"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert len({r.data.tags["deepsweep.pipeline_id"] for r in runs.values()}) == 1
    assert runs["finetune"].data.tags["deepsweep.upstream.pretrain"] == runs["pretrain"].info.run_id
    finetune = runs["finetune"]
    assert finetune.data.params["init.name"] == "he_normal"
    assert finetune.data.params["model.hidden_dims"] == "[128, 64]"
    history = mlflow.MlflowClient().get_metric_history(finetune.info.run_id, "val/loss")
    assert [m.step for m in history] == [0, 1]  # one point per epoch
    # One name per number: each stage run says <stage>.<metric>, as the pipeline run and sweep reports do.
    assert runs["evaluate"].data.metrics["evaluate.accuracy"] == pytest.approx(metrics["accuracy"])
    assert set(runs["prepare"].data.metrics) == {"prepare.n_train", "prepare.n_val", "prepare.n_test"}
    assert runs["pretrain"].data.metrics["pretrain.best_val_loss"] > 0
    assert finetune.data.metrics["finetune.best_val_acc"] > 0.5 and finetune.data.params["experiment_name"] == "none"
    # The data actually written, as MLflow dataset inputs: split, size and digest of the arrays.
    inputs = mlflow.get_run(runs["prepare"].info.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["digits-test", "digits-train", "digits-val"]
    assert {i.tags[0].value for i in inputs} == {"train", "val", "test"} and all(i.dataset.digest for i in inputs)
    # The learning curves DVC plots, in the stage output.
    curves = (artifacts / "finetune" / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("epoch,train_loss,val_loss,val_acc,") and len(curves) == 3
    artifacts_logged = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["evaluate"].info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/roc_curve.png", "evaluation/predictions.pt"} <= artifacts_logged
    ckpt = {a.path for a in mlflow.MlflowClient().list_artifacts(finetune.info.run_id, "checkpoints")}
    assert ckpt == {"checkpoints/model.pt"}
    # logger.figures=false: the same numbers and files, no PNG.
    execute("evaluate", compose(*FAST, "logger.figures=false"), artifacts)
    assert json.loads((artifacts / "evaluate" / "metrics.json").read_text()) == metrics
    assert not list((artifacts / "evaluate").glob("*.png")) and (artifacts / "evaluate" / "roc.csv").is_file()
    # evaluate=no_probe: the same numbers without the probe's.
    execute("evaluate", compose(*FAST, "logger.figures=false", "evaluate=no_probe"), artifacts)
    assert json.loads((artifacts / "evaluate" / "metrics.json").read_text()) == {
        k: v for k, v in metrics.items() if not k.startswith("probe_")}
    # A stage run by hand over an output made from other params: refused, naming one, before any run is recorded.
    kept, recorded = (artifacts / "evaluate" / "metrics.json").read_text(), len(_runs())
    with pytest.raises(ConfigError, match=r"finetune: stage 'finetune' made it with finetune.freeze_encoder_epochs=0, "
                                          r"this config says finetune.freeze_encoder_epochs=1; rerun 'finetune'"):
        execute("evaluate", compose(*FAST, "finetune.freeze_encoder_epochs=1"), artifacts)
    with pytest.raises(ConfigError, match=r"stage 'pretrain' made it with seed=0, this config says seed=3; rerun 'pretrain'"):
        execute("evaluate", compose(*FAST, "seed=3"), artifacts)
    assert (artifacts / "evaluate" / "metrics.json").read_text() == kept and len(_runs()) == recorded
    # Keys that never change what a stage computes are not compared: a rerun may draw layer statistics
    # (logger.*); of trainer.devices, only how many: a resumed GPU sweep job runs on its own GPU ([3]).
    assert execute("evaluate", compose(*FAST, "logger.figures=false", "trainer.devices=[3]",
                                       "logger.layer_stats=true"), artifacts) == metrics
    with pytest.raises(ConfigError, match=r"made it with trainer.devices=1, this config says trainer.devices=\[0, 1\]"):
        execute("evaluate", compose(*FAST, "trainer.devices=[0,1]"), artifacts)


def test_an_output_is_held_to_the_params_its_stage_recorded(compose, tmp_path):
    """An output written before its stage declared a param (here: optimizer), or holding one it no longer
    declares, is not refused over that param's values; one that recorded it is."""
    from deepsweep.stages.pipeline import _check_made_from, declared_values

    recorded = declared_values(compose(*FAST), "pretrain")
    older = {key: value for key, value in recorded.items() if not key.startswith("optimizer.")}
    assert "optimizer.lr" in recorded and "optimizer.lr" not in older
    other_lr = compose(*FAST, "optimizer.lr=0.5")
    _check_made_from(other_lr, "pretrain", tmp_path, older)
    _check_made_from(compose(*FAST), "pretrain", tmp_path, {**recorded, "dropped.param": 1})  # no longer declared
    with pytest.raises(ConfigError, match=r"made it with optimizer.lr=0.001, this config says optimizer.lr=0.5"):
        _check_made_from(other_lr, "pretrain", tmp_path, recorded)


def test_a_process_reads_the_same_data_once_and_links_it_for_every_job(compose, tmp_path, monkeypatch):
    """prepare remembers the last data it read: the next job on the same cfg.data (another seed) gets hard links
    to the same files and the same dataset inputs without reading the source again; other data is read
    afresh, and so is the same data once the files written before are gone."""
    from deepsweep.stages import prepare

    reads = []
    original = prepare.read
    monkeypatch.setattr(prepare, "read", lambda cfg, key: reads.append(cfg.data.split_seed) or original(cfg, key))
    jobs = {"first": compose(*FAST, "seed=0"), "second": compose(*FAST, "seed=1"),
            "other split": compose(*FAST, "seed=0", "data.split_seed=1"),
            "other split again": compose(*FAST, "seed=1", "data.split_seed=1")}
    for name, cfg in jobs.items():
        execute("prepare", cfg, tmp_path / name)
    assert reads == [0, 1]

    def written(name):
        return {f.name: f.read_bytes() for f in sorted((tmp_path / name / "prepare").iterdir()) if f.name != "run.json"}

    assert written("second") == written("first")
    assert set(written("first")) == {"train.pt", "val.pt", "test.pt", "meta.json"}
    assert written("other split")["train.pt"] != written("first")["train.pt"]
    digests = {}
    for name in jobs:
        run_id = json.loads((tmp_path / name / "prepare" / "run.json").read_text())["run_id"]
        inputs = mlflow.get_run(run_id).inputs.dataset_inputs
        digests[name] = sorted((i.tags[0].value, i.dataset.name, i.dataset.digest) for i in inputs)
        assert mlflow.get_run(run_id).data.metrics["prepare.n_train"] > 0
    assert digests["second"] == digests["first"] != digests["other split"] == digests["other split again"]
    assert [split for split, _, _ in digests["first"]] == ["test", "train", "val"]
    # The same files, linked: no second copy on disk, nothing else beside the outputs.
    inode = lambda name: (tmp_path / name / "prepare" / "train.pt").stat().st_ino  # noqa: E731
    assert inode("second") == inode("first") != inode("other split") == inode("other split again")
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == [".deepsweep.lock", "prepare"]
    # The files written before are gone (a user cleaning up): the next job reads and writes them again.
    shutil.rmtree(tmp_path / "other split")
    shutil.rmtree(tmp_path / "other split again")
    execute("prepare", jobs["other split"], tmp_path / "third")
    assert reads == [0, 1, 1]
    assert written("third")["train.pt"] != written("first")["train.pt"] and written("third")["val.pt"]


def test_the_data_key_changes_with_the_raw_files(compose, tmp_path):
    """A raw file edited or fetched again is new data to a process that prepared it before."""
    import os

    from deepsweep.stages.prepare import data_key

    root = tmp_path / "raw"
    root.mkdir()
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    cfg = compose("data=mnist", f"data.root={root}")
    before = data_key(cfg)
    assert data_key(cfg) == before and data_key(compose("data=mnist", f"data.root={root}", "seed=3")) == before
    stat = (root / "train-images-idx3-ubyte.gz").stat()
    os.utime(root / "train-images-idx3-ubyte.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert data_key(cfg) != before
    assert data_key(compose("data=mnist", f"data.root={root}", "data.split_seed=1")) != data_key(cfg)


@pytest.mark.parametrize("family", [
    [],
    # A 500-word vocabulary: the next- and masked-token heads' width, most of these fits' cost at 8,000 (35 s).
    pytest.param(["experiment=sms_spam_lstm", "data.max_len=16", "data.max_vocab=500"], marks=requires_shared("sms_spam")),
    pytest.param(["experiment=sms_spam_transformer", "data.max_len=16", "data.max_vocab=500", "model.num_layers=1"],
                 marks=requires_shared("sms_spam")),
    pytest.param(["experiment=cora_gcn", "pretrain=dgi"], marks=requires_shared("planetoid")),
    ["data=shapes", "model=unet", "data.num_samples=60", "data.size=16", "model.channels=[4,8]"],
])
def test_finetune_starts_from_the_pretrained_encoder(compose, tmp_path, monkeypatch, family):
    fast_cfg = compose(*family, *FAST)
    artifacts = tmp_path / "artifacts"
    execute("prepare", fast_cfg, artifacts)
    execute("pretrain", fast_cfg, artifacts)
    pretrained = torch.load(artifacts / "pretrain" / "encoder.pt", weights_only=True)["encoder"]

    seen = {}
    from deepsweep.tasks.classify import ClassifyTask

    original = ClassifyTask.__init__

    def spy(self, model, *args, **kwargs):
        seen.update({k: v.clone() for k, v in model.encoder.state_dict().items()})
        original(self, model, *args, **kwargs)

    monkeypatch.setattr(ClassifyTask, "__init__", spy)
    execute("finetune", fast_cfg, artifacts)
    assert seen.keys() == pretrained.keys()
    assert all(torch.equal(seen[k], pretrained[k]) for k in pretrained)


def test_pretrain_none_skips_loading(compose, tmp_path):
    cfg = compose(*FAST, "pretrain=none")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune"):
        execute(stage, cfg, artifacts)
    assert not (artifacts / "pretrain" / "encoder.pt").exists()
    assert _runs("finetune")[0].data.tags["deepsweep.pretrained_encoder"] == "false"


def test_a_stage_that_dies_is_marked_failed_and_keeps_old_outputs(fast_cfg, tmp_path, monkeypatch):

    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune"):
        execute(stage, fast_cfg, artifacts)
    before = (artifacts / "finetune" / "model.pt").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("loss is NaN")

    from deepsweep.tasks.classify import ClassifyTask

    monkeypatch.setattr(ClassifyTask, "training_step", boom)
    with pytest.raises(RuntimeError, match="loss is NaN"):
        execute("finetune", fast_cfg, artifacts)
    failed = [r for r in _runs("finetune") if r.info.status == "FAILED"]
    assert len(failed) == 1
    assert failed[0].data.tags["deepsweep.error"] == "RuntimeError: loss is NaN"
    assert (artifacts / "finetune" / "model.pt").read_bytes() == before
    # No temp folder left; only the folder's writer lock (which holds no output).
    assert [p.name for p in artifacts.iterdir() if p.name.startswith(".")] == [".deepsweep.lock"]


def test_missing_upstream_output_is_named(fast_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="output of stage 'prepare' is missing"):
        execute("pretrain", fast_cfg, tmp_path / "artifacts")


@pytest.mark.parametrize("overrides", [["model=lenet", "regularizer=batchnorm"],
                                       ["model=resnet", "model.channels=[8,8,8]", "pretrain=denoising_autoencoder"]])
def test_run_all_nests_stage_runs_under_one_pipeline_run(compose, tmp_path, overrides):
    cfg = compose(*FAST, *overrides)
    summary = run_all(cfg, tmp_path / "job")
    assert {"finetune.best_val_acc", "evaluate.accuracy", "evaluate.roc_auc"} <= set(summary)
    pipeline = _runs("pipeline")[0]
    children = [r for r in _runs() if r.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id]
    assert sorted(r.data.tags["deepsweep.stage"] for r in children) == ["evaluate", "finetune", "prepare", "pretrain"]
    assert pipeline.data.metrics["evaluate.accuracy"] == pytest.approx(summary["evaluate.accuracy"])


def test_linear_probe_scores_separable_features_and_tolerates_missing_classes():
    import torch

    from deepsweep.metrics import anomaly_roc_auc, linear_probe

    torch.manual_seed(0)
    y = torch.arange(3).repeat(30)
    x = torch.nn.functional.one_hot(y, 3).float() * 5 + 0.1 * torch.randn(90, 3)
    metrics = linear_probe((x, y), (x, y), 3)
    assert metrics == {"probe_accuracy": 1.0, "probe_f1_macro": 1.0, "probe_roc_auc": 1.0}
    # A class the probe never saw (label_fraction on tiny data) gets probability 0, not a crash.
    seen = y != 2
    assert linear_probe((x[seen], y[seen]), (x, y), 3)["probe_accuracy"] == pytest.approx(2 / 3)
    # Anomaly scores far outside [0, 1] keep their order (torchmetrics would squash them through a sigmoid).
    assert anomaly_roc_auc(torch.tensor([100.0, 200.0, 300.0, 400.0]), torch.tensor([0, 0, 1, 1])) == 1.0


@pytest.mark.parametrize("fail_at_epoch", [None, 3])
def test_buffered_epoch_metrics_all_reach_mlflow_when_fit_ends_or_fails(compose, fail_at_epoch):
    import lightning as L

    from deepsweep import factory
    from deepsweep.factory import build
    from deepsweep.data.loaders import InMemoryLoader, TensorSplit
    from deepsweep.tasks.classify import ClassifyTask
    from deepsweep.training.mlflow_logger import MlflowRunLogger

    cfg = compose()
    split = TensorSplit(torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,)))

    class Dies(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == fail_at_epoch:
                raise RuntimeError("killed")

    task = ClassifyTask(factory.build_model(cfg, (1, 8, 8), 10), TaskSetup(build(cfg.optimizer)))
    experiment = mlflow.set_experiment("buffered-logger")  # not whichever experiment an earlier test left active
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        # Nothing is written during fit after the first epoch: only the end (or the failure) flushes.
        logger = MlflowRunLogger(run.info.run_id, flush_seconds=1e9)
        trainer = training.build_trainer(cfg, 5, logger, [Dies()], "/tmp")
        try:
            trainer.fit(task, InMemoryLoader(split, 32), InMemoryLoader(split, 32))
        except RuntimeError:
            assert fail_at_epoch is not None
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val/loss")
    assert sorted(m.step for m in history) == list(range(fail_at_epoch or 5))


def test_an_interrupted_stage_resumes_from_its_last_checkpoint(compose, tmp_path, monkeypatch):
    from deepsweep.tasks.classify import ClassifyTask

    cfg = compose("pretrain=none", "trainer.max_epochs=6", "trainer.checkpoint_every_n_epochs=1")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain"):
        execute(stage, cfg, artifacts)
    started = []
    original = ClassifyTask.on_train_epoch_start

    def epoch_start(self):
        started.append(self.current_epoch)
        if self.current_epoch == 4 and len(started) == 5:  # the first attempt dies at the start of epoch 4
            raise RuntimeError("killed")
        original(self)

    monkeypatch.setattr(ClassifyTask, "on_train_epoch_start", epoch_start)
    with pytest.raises(RuntimeError, match="killed"):
        execute("finetune", cfg, artifacts)
    assert (artifacts / "finetune.resume" / "last.ckpt").is_file() and not (artifacts / "finetune").exists()

    metrics = execute("finetune", cfg, artifacts)
    assert started[5:] == [4, 5]  # epochs 0-3 were not trained again
    assert metrics["epochs_trained"] == 6 and 0 <= metrics["best_epoch"] <= 5
    assert not (artifacts / "finetune.resume").exists()  # a finished stage keeps its output, not the checkpoint
    curves = (artifacts / "finetune" / "curves.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in curves] == list(range(6))  # epochs of both attempts
    resumed = mlflow.search_runs(filter_string="tags.`deepsweep.stage` = 'finetune' and attributes.status = 'FINISHED'")
    assert resumed["tags.deepsweep.resumed_from"].str.endswith("last.ckpt").all()

    # Another config never resumes from a checkpoint of this one (one that changes a param of finetune alone:
    # the upstream outputs were made from the same values of theirs).
    started.clear()
    other = compose("pretrain=none", "trainer.max_epochs=2", "trainer.checkpoint_every_n_epochs=1")
    execute("finetune", other, artifacts)
    assert started == [0, 1]


def test_loader_shards_batches_evenly_across_ddp_ranks(monkeypatch):
    from deepsweep.data.loaders import InMemoryLoader, TensorSplit

    split = TensorSplit(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    seen = []
    for rank in (0, 1, 2):
        monkeypatch.setattr(InMemoryLoader, "_rank_and_world", staticmethod(lambda rank=rank: (rank, 3)))
        loader = InMemoryLoader(split, batch_size=2, shuffle=True, seed=0)
        ys = torch.cat([y for _, y in loader])
        assert len(ys) == 4 and len(loader) == 2  # equal shares (10 -> 3 x 4, two wrapped around)
        seen.append(ys)
    assert set(torch.cat(seen).tolist()) == set(range(10))


@pytest.mark.slow  # 20-45 s here: started first, so it does not leave a worker alone at the end
def test_data_parallel_fine_tuning_over_two_cpu_processes(compose, tmp_path):
    cfg = compose("pretrain=none", "trainer.max_epochs=3", "trainer.devices=2", "trainer.strategy=ddp_spawn",
                  "trainer.num_threads=1")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune"):
        summary = execute(stage, cfg, artifacts)
    assert summary["epochs_trained"] == 3 and 0 <= summary["best_epoch"] <= 2 and summary["best_val_acc"] > 0.5
    metrics = execute("evaluate", cfg, artifacts)
    assert metrics["accuracy"] > 0.5  # the weights trained in the spawned processes came back
    run = mlflow.search_runs(filter_string="tags.`deepsweep.stage` = 'finetune'", output_format="list")[0]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val/loss")
    assert sorted(m.step for m in history) == [0, 1, 2]  # rank 0 logged every epoch to this store


def test_a_relaunching_ddp_strategy_is_refused_by_name(compose, tmp_path):
    from deepsweep.config import ConfigError

    cfg = compose("pretrain=none", "trainer.strategy=ddp", "trainer.devices=2")
    for stage in ("prepare", "pretrain"):
        execute(stage, cfg, tmp_path / "artifacts")
    with pytest.raises(ConfigError, match="trainer.strategy=ddp: .* use trainer.strategy=ddp_spawn"):
        execute("finetune", cfg, tmp_path / "artifacts")
