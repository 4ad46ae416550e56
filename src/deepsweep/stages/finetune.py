"""finetune: supervised training of encoder + head, starting from the pretrained encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from omegaconf import DictConfig

from deepsweep import factory
from deepsweep.config import fine_tunes_pretrained_encoder
from deepsweep.training import fit
from deepsweep.data.augment import augmentation
from deepsweep.data.loaders import PreparedData
from deepsweep.stages.pretrain import ENCODER_FILE
from deepsweep.tracking.runs import log_artifact

MODEL_FILE = "model.pt"


def build(cfg: DictConfig, data: PreparedData, inputs: Mapping[str, Path]):
    """The task this stage fits (encoder + head, from the pretrained encoder where one is loaded) and its
    training and validation loaders; a fused array builds each of its members with it."""
    from deepsweep.tasks.supervised import task_for

    pretrained = fine_tunes_pretrained_encoder(cfg)
    model = factory.build_model(cfg, data.input_shape, data.num_classes, data.meta.get("vocab_size"),
                                encoder=inputs["pretrain"] / ENCODER_FILE if pretrained else None)
    task = factory.build_task(cfg, task_for(data.kind, data.target), model, "finetune",
                              freeze_encoder_epochs=int(cfg.finetune.freeze_encoder_epochs))
    batch = int(cfg.data.batch_size)
    train_loader = data.loader("train", batch, shuffle=True, seed=cfg.seed,
                               label_fraction=float(cfg.finetune.label_fraction),
                               num_neighbors=cfg.data.get("num_neighbors"), augment=augmentation(cfg.data))
    return task, train_loader, data.loader("val", batch)


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run_id: str) -> dict[str, float]:
    import mlflow

    from deepsweep.training import arrays

    data = PreparedData.load(inputs["prepare"])
    mlflow.set_tag("deepsweep.pretrained_encoder", str(fine_tunes_pretrained_encoder(cfg)).lower())
    task, train_loader, val_loader = build(cfg, data, inputs)
    model = task.model
    # A member of a fused sweep (hydra/launcher=fused) replays its part of the array's fit instead.
    result = arrays.member_fit(cfg, task, out, run_id, build=lambda member: build(member, data, inputs))
    if result is None:
        result = fit(cfg, task, train_loader, val_loader, out, stage="finetune", epochs=int(cfg.trainer.max_epochs),
                     run_id=run_id, validate=True, early_stopping_patience=task.regularization.early_stopping_patience)

    torch.save({"model": cfg.model.name, "state_dict": model.state_dict()}, out / MODEL_FILE)
    if cfg.logger.log_checkpoints:
        log_artifact(out / MODEL_FILE, "checkpoints")
    if cfg.logger.log_model:
        from deepsweep.tracking.models import log_model

        log_model(cfg, model, data, out / MODEL_FILE)
    summary = {f"best_{k.replace('/', '_')}": v for k, v in result.val_metrics.items()}
    summary.update(best_epoch=float(result.best_epoch), epochs_trained=float(result.epochs),
                   n_train_labels=float(train_loader.num_labels))
    return summary
