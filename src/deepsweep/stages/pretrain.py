"""pretrain: unsupervised training of the model's encoder (no labels are read); writes encoder.pt."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from deepsweep import factory
from deepsweep.config import ConfigError, build
from deepsweep.data.loaders import PreparedData
from deepsweep.stages.checkpoints import Resume
from deepsweep.tasks.common import BestWeights, LossTask
from deepsweep.tracking.lightning import MlflowRunLogger
from deepsweep.tracking.runs import log_artifact

ENCODER_FILE = "encoder.pt"
SCORES_FILE = "test_scores.pt"


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run: Any) -> dict[str, float]:
    if cfg.pretrain.name == "none":
        return {}
    import lightning as L

    data = PreparedData.load(inputs["prepare"])
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    model = factory.create_model(cfg, data.input_shape, data.num_classes, data.meta.get("vocab_size"))
    epochs = int(cfg.pretrain.epochs)
    # One-loss objectives take several batches per call (LossTask); GANs and CD-k step by hand per batch.
    one_loss = issubclass(get_class(cfg.pretrain.task._target_), LossTask)
    if not one_loss and cfg.trainer.gradient_clip_val:
        raise ConfigError(f"trainer.gradient_clip_val: pretrain={cfg.pretrain.name} steps its optimizers by hand "
                          "and clips nothing; set it to null for this pretraining")
    loop = ({"steps_per_call": factory.steps_per_call(cfg), "gradient_clip_val": cfg.trainer.gradient_clip_val}
            if one_loss else {})
    try:
        task = build(
            cfg.pretrain.task,
            model=model,
            optimizer=factory.create_optimizer(cfg, stage="pretrain"),
            scheduler=factory.create_scheduler(cfg, epochs),
            regularization=build(cfg.regularizer),
            activation=build(cfg.activation),
            **loop,
        )
    except ValueError as exc:  # the task's own checks name the offending pretrain.* / optimizer key
        raise ConfigError(str(exc)) from exc
    anomaly_class = cfg.pretrain.get("anomaly_class")
    if anomaly_class is not None:
        if not hasattr(task, "anomaly_score"):
            raise ConfigError(f"pretrain.anomaly_class: pretrain={cfg.pretrain.name} gives no anomaly score; "
                              "the autoencoders, vae and dbn do")
        if not 0 <= int(anomaly_class) < data.num_classes:
            raise ConfigError(f"pretrain.anomaly_class: {anomaly_class} is not a class of data={cfg.data.name} "
                              f"(0..{data.num_classes - 1})")
    best = BestWeights()
    callbacks = [best] if getattr(task, "keep_best_weights", True) else []
    batch = int(cfg.data.batch_size)
    train_loader = data.loader("train", batch, shuffle=True, seed=cfg.seed, exclude_class=anomaly_class,
                               num_neighbors=cfg.data.get("num_neighbors"), all_nodes=True)
    val_loader = data.loader("val", batch, exclude_class=anomaly_class)
    resume = Resume(cfg, out.parent, "pretrain")
    callbacks += resume.callbacks(train_loader)
    trainer = factory.create_trainer(cfg, epochs, MlflowRunLogger(run.info.run_id), callbacks, str(out),
                                     manual_optimization=not task.automatic_optimization)
    if one_loss:
        train_loader, val_loader = task.batches(train_loader), task.batches(val_loader)
    train_loader, val_loader = factory.place_on_device(trainer, train_loader, val_loader)
    resume.fit(trainer, task, train_loader, val_loader)
    if hasattr(task, "anomaly_score"):
        # Per-input scores of the test split (reconstruction error, -ELBO, free energy) for the evaluate
        # stage, which alone reads the test labels.
        task.eval()
        with torch.inference_mode():
            scores = torch.cat([task.anomaly_score(x.to(task.device)).cpu() for x, _ in data.loader("test", 1024)])
        torch.save({"name": task.score_name, "scores": scores}, out / SCORES_FILE)
    torch.save({"model": cfg.model.name, "encoder": model.encoder.state_dict()}, out / ENCODER_FILE)
    if cfg.logger.log_checkpoints:
        log_artifact(out / ENCODER_FILE, "checkpoints")
    if hasattr(task, "save_figures"):  # e.g. VAE samples and latent interpolation
        x = next(iter(data.loader("val", 64)))[0]
        for path in task.save_figures(out, x):
            log_artifact(path, "figures")
    best_score, best_epoch = best.result(trainer)
    if best_score is None:  # tasks whose epochs no validation loss ranks: their last epoch's values
        last = {k.replace("/", "_"): float(v) for k, v in trainer.callback_metrics.items()}
        return {"epochs": float(trainer.current_epoch), **last}
    return {"best_val_loss": float(best_score), "best_epoch": float(best_epoch)}


def load_encoder(model: torch.nn.Module, path: Path) -> None:
    """Copy pretrained encoder weights into ``model.encoder``; a mismatch names the differing keys."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretrained encoder; run the pretrain stage (or set pretrain=none)")
    saved = torch.load(path, weights_only=True)
    missing, unexpected = [], []
    own = model.encoder.state_dict()
    missing = sorted(set(own) - set(saved["encoder"]))
    unexpected = sorted(set(saved["encoder"]) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(saved["encoder"]) if own[k].shape != saved["encoder"][k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path}: the pretrained encoder (model={saved['model']}) does not fit this model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}; "
            "pretrain and finetune must use the same model, activation and regularizer"
        )
    model.encoder.load_state_dict(saved["encoder"])
