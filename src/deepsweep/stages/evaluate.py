"""evaluate: accuracy, macro F1 and ROC-AUC of the fine-tuned model on the held-out test split;
metrics.json for DVC metrics, confusion.csv and roc.csv for DVC plots, PNGs for MLflow."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig

from deepsweep import factory, plots
from deepsweep.data.loaders import PreparedData
from deepsweep.metrics import classification_metrics, confusion_matrix, per_class_roc, roc_points
from deepsweep.stages.finetune import MODEL_FILE
from deepsweep.tasks.classify import task_for
from deepsweep.utils.io import write_json


def predict(task, loader) -> tuple[torch.Tensor, torch.Tensor]:
    task.eval()
    logits, targets = [], []
    with torch.inference_mode():
        for batch in loader:
            out, y = task.logits_and_targets(batch)
            logits.append(out)
            targets.append(y)
    return torch.cat(logits), torch.cat(targets)


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run: Any) -> dict[str, float]:
    import mlflow

    data = PreparedData.load(inputs["prepare"])
    checkpoint = inputs["finetune"] / MODEL_FILE
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no fine-tuned model; run the finetune stage first")
    model = factory.create_model(cfg, data.input_shape, data.num_classes, data.meta.get("vocab_size"))
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    task = task_for(data.kind)(model, optimizer=None)
    logits, target = predict(task, data.loader("test", 1024))
    k, names = data.num_classes, data.meta["class_names"]

    metrics = classification_metrics(logits, target, k)
    write_json(out / "metrics.json", metrics)

    preds = logits.argmax(dim=1)
    with open(out / "confusion.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "predicted"])
        writer.writerows((names[a], names[p]) for a, p in zip(target.tolist(), preds.tolist()))
    roc = roc_points(logits, target, k)
    with open(out / "roc.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["fpr", "tpr", "threshold"])
        writer.writerows(zip(roc["fpr"].tolist(), roc["tpr"].tolist(), roc["threshold"].tolist()))

    title = f"{cfg.model.name} on {cfg.data.name} (test)"
    plots.confusion_png(confusion_matrix(logits, target, k), names, out / "confusion_matrix.png", title)
    plots.roc_png(list(per_class_roc(logits, target, k)), names, roc if k > 2 else None, out / "roc_curve.png", title)

    figures = ["confusion_matrix.png", "roc_curve.png"]
    if data.kind == "graph" and cfg.logger.embedding_plot != "none":
        # Where the encoder puts every node, coloured by class: the picture of what the GNN learned.
        x, edge_index, y, _ = next(iter(data.loader("test")))
        with torch.inference_mode():
            embedding = model.encoder.eval()(x, edge_index)
        plots.embedding_png(embedding, y, names, out / "node_embedding.png",
                            f"{cfg.model.name} node embeddings", method=cfg.logger.embedding_plot)
        figures.append("node_embedding.png")

    mlflow.log_metrics({f"test/{name}": value for name, value in metrics.items()})
    for name in ("metrics.json", "confusion.csv", "roc.csv", *figures):
        mlflow.log_artifact(str(out / name), "evaluation")
    return metrics
