"""finetune: supervised training of encoder + head, starting from the pretrained encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig

from deepsweep import factory
from deepsweep.config import build
from deepsweep.data.loaders import PreparedData
from deepsweep.stages.checkpoints import Resume
from deepsweep.stages.pretrain import ENCODER_FILE, load_encoder
from deepsweep.tasks.classify import task_for
from deepsweep.tasks.common import BestWeights
from deepsweep.tracking.lightning import MlflowRunLogger
from deepsweep.tracking.runs import log_artifact

MODEL_FILE = "model.pt"


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run: Any) -> dict[str, float]:
    import lightning as L
    import mlflow
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor

    data = PreparedData.load(inputs["prepare"])
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    model = factory.create_model(cfg, data.input_shape, data.num_classes, data.meta.get("vocab_size"))
    pretrained = cfg.pretrain.name != "none" and cfg.finetune.load_pretrained
    if pretrained:
        load_encoder(model, inputs["pretrain"] / ENCODER_FILE)
    mlflow.set_tag("deepsweep.pretrained_encoder", str(pretrained).lower())

    epochs = int(cfg.trainer.max_epochs)
    regularization = build(cfg.regularizer)
    task = task_for(data.kind)(
        model,
        optimizer=factory.create_optimizer(cfg),
        scheduler=factory.create_scheduler(cfg, epochs),
        regularization=regularization,
        freeze_encoder_epochs=int(cfg.finetune.freeze_encoder_epochs),
        steps_per_call=factory.steps_per_call(cfg),
        gradient_clip_val=cfg.trainer.gradient_clip_val,
    )
    best = BestWeights()
    callbacks: list = [best]
    if regularization.early_stopping_patience is not None:
        callbacks.append(EarlyStopping("val/loss", patience=regularization.early_stopping_patience, mode="min"))
    if cfg.scheduler.name != "none":
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    batch = int(cfg.data.batch_size)
    train_loader = data.loader("train", batch, shuffle=True, seed=cfg.seed,
                               label_fraction=float(cfg.finetune.label_fraction),
                               num_neighbors=cfg.data.get("num_neighbors"))
    resume = Resume(cfg, out.parent, "finetune")
    callbacks += resume.callbacks(train_loader)
    logger = MlflowRunLogger(run.info.run_id)
    trainer = factory.create_trainer(cfg, epochs, logger, callbacks, str(out),
                                     manual_optimization=not task.automatic_optimization)
    train_loader, val_loader = factory.place_on_device(trainer, task.batches(train_loader),
                                                       task.batches(data.loader("val", batch)))
    resume.fit(trainer, task, train_loader, val_loader)

    torch.save({"model": cfg.model.name, "state_dict": model.state_dict()}, out / MODEL_FILE)
    if cfg.logger.log_checkpoints:
        log_artifact(out / MODEL_FILE, "checkpoints")
    # Validation metrics of the kept (best) weights, the number a sweep should rank on.
    trainer.logger = None
    best_val = trainer.validate(task, val_loader, verbose=False)[0]
    summary = {f"best_{k.replace('/', '_')}": float(v) for k, v in best_val.items()}
    summary.update(best_epoch=float(best.result(trainer)[1]), epochs_trained=float(best.epochs(trainer)), n_train_labels=float(train_loader.num_labels))
    mlflow.log_metrics(summary)
    return summary
