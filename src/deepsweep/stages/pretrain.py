"""pretrain: unsupervised training of the model's encoder (no labels are read); writes encoder.pt."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from omegaconf import DictConfig

from deepsweep import factory
from deepsweep.training import fit
from deepsweep.training.fit import CURVES_FILE, write_curves
from deepsweep.data.augment import augmentation
from deepsweep.data.loaders import PreparedData
from deepsweep.tracking.runs import log_artifact

ENCODER_FILE = "encoder.pt"
SCORES_FILE = "test_scores.pt"
CATEGORIES_FILE = "test_categories.pt"  # a category per test input, inferred without labels (InfoGAN)
LINK_SCORES_FILE = "link_scores.pt"  # held-out test edges and non-edges, scored: evaluate's link metrics
GENERATED_FILE = "generated.pt"  # samples of a task that generates inputs, which evaluate labels
GENERATED_SAMPLES = 1000
TRANSLATED_FILE = "translated.pt"  # test images through a domain translation (CycleGAN), which evaluate labels
TRANSLATED_SAMPLES = 1000


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run_id: str) -> dict[str, float]:
    if cfg.pretrain.name == "none":
        write_curves(out / CURVES_FILE, {})  # no epochs: the DVC plot of pretraining is empty, not missing
        return {}
    data = PreparedData.load(inputs["prepare"])
    model = factory.build_model(cfg, data.input_shape, data.num_classes, data.meta.get("vocab_size"))
    task = factory.build_task(cfg, cfg.pretrain.task, model, "pretrain")
    anomaly_class = cfg.pretrain.get("anomaly_class")
    if anomaly_class is not None:  # the rest was checked before prepare (factory.check_anomaly_class)
        factory.check_class_of(cfg, int(anomaly_class), data.num_classes)
    batch = int(cfg.data.batch_size)
    coverage = None
    if task.generates_inputs and data.meta.get("modes") is not None:
        from deepsweep.training.callbacks import ModeCoverage

        coverage = ModeCoverage(data.meta["modes"], data.meta["mode_std"])
    result = fit(
        cfg, task,
        data.loader("train", batch, shuffle=True, seed=cfg.seed, exclude_class=anomaly_class,
                    num_neighbors=cfg.data.get("num_neighbors"), all_nodes=True, augment=augmentation(cfg.data)),
        data.loader("val", batch, exclude_class=anomaly_class),
        out, stage="pretrain", epochs=int(cfg.pretrain.epochs), run_id=run_id,
        callbacks=[coverage] if coverage is not None else [])

    if task.scores_anomalies:
        # Per-input scores of the test split (reconstruction error, -ELBO, free energy) for the evaluate
        # stage, which alone reads the test labels.
        task.eval()
        with torch.inference_mode():
            scores = torch.cat([task.anomaly_score(x.to(task.device)).cpu() for x, _ in data.loader("test", 1024)])
        torch.save({"name": task.score_name, "scores": scores}, out / SCORES_FILE)
    if task.infers_categories:
        task.eval()
        with torch.no_grad():
            categories = torch.cat([task.categories_of(x.to(task.device)).cpu() for x, _ in data.loader("test", 1024)])
        torch.save({"categories": categories, "count": task.categories}, out / CATEGORIES_FILE)
    if task.predicts_links:
        task.eval()
        torch.save(task.link_scores(next(iter(data.loader("test")))), out / LINK_SCORES_FILE)
    if task.translates_domains:
        task.eval()
        with torch.no_grad():
            x = next(iter(data.loader("test", TRANSLATED_SAMPLES)))[0]
            torch.save(task.translation_scores(x.to(task.device)), out / TRANSLATED_FILE)
    if task.generates_inputs:
        task.eval()
        with torch.no_grad():  # codes from a fixed stream: the same samples for the same weights
            samples = task.generate(GENERATED_SAMPLES, generator=torch.Generator().manual_seed(cfg.seed)).cpu()
        torch.save({"samples": samples}, out / GENERATED_FILE)
    torch.save({"model": cfg.model.name, "encoder": model.encoder.state_dict()}, out / ENCODER_FILE)
    # e.g. VAE samples and latent interpolation, GAN samples and loss curves
    figures = task.save_figures(out, next(iter(data.loader("val", 64)))[0]) if task.draws_figures else []
    if coverage is not None and coverage.snapshots and cfg.logger.get("figures", True):
        from deepsweep.plots import scatter_snapshots_png

        figures.append(out / "samples_over_training.png")
        scatter_snapshots_png(coverage.snapshots, coverage.centers, figures[-1],
                              f"pretrain={cfg.pretrain.name}: generated samples (dots) and the modes (x)")
    for path in figures:
        log_artifact(path, "figures")
    if cfg.logger.log_checkpoints:
        log_artifact(out / ENCODER_FILE, "checkpoints")
    if result.best_score is None:  # tasks whose epochs no validation loss ranks: their last epoch's values
        return {"epochs": float(result.epochs), **{k.replace("/", "_"): v for k, v in result.last_metrics.items()}}
    return {"best_val_loss": result.best_score, "best_epoch": float(result.best_epoch)}
