"""evaluate: the fine-tuned model on the held-out test split, by what the data labels.

Segmentation (a class per pixel, ``score_masks``): pixel accuracy, mean IoU and Dice; sequence to sequence
(``score_tokens``): token accuracy and exact match, by source length too. Classification (``score_classes``):
accuracy, macro F1 and ROC-AUC of the fine-tuned model on the held-out test split; the same
three for a linear probe of the pretrained encoder's frozen features (off with evaluate=no_probe); the pretraining task's test score
(reconstruction error, and anomaly ROC-AUC with pretrain.anomaly_class; a graph autoencoder's link
prediction ROC-AUC and average precision on the edges it held out); how the fine-tuned model labels the
inputs a GAN generated (the classes they cover); on a graph, how alike the encoder
makes the nodes' embeddings (embedding_mad, which over-smoothing drives to 0); calibration (ece) and, with
evaluate.mc_dropout_passes, the same scores for Monte Carlo dropout (mc_*). metrics.json for DVC metrics,
confusion.csv, roc.csv and rejection.csv for DVC plots, PNGs for MLflow, the test probabilities
(predictions.pt) for the sweep report's deep ensembles."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

import torch
from omegaconf import DictConfig

from deepsweep import factory, plots
from deepsweep.errors import ConfigError
from deepsweep.data.loaders import PreparedData
from deepsweep.metrics import (
    anomaly_roc_auc,
    class_coverage,
    classification_metrics,
    confusion_matrix,
    linear_probe,
    link_metrics,
    matched_accuracy,
    mean_average_distance,
    per_class_roc,
    roc_points,
    segmentation_metrics,
    sequence_metrics,
)
from deepsweep.calibration import probability_metrics, rejection_curve
from deepsweep.stages.finetune import MODEL_FILE
from deepsweep.stages.pretrain import (
    CATEGORIES_FILE,
    ENCODER_FILE,
    GENERATED_FILE,
    LINK_SCORES_FILE,
    SCORES_FILE,
    TRANSLATED_FILE,
)
from deepsweep.tasks.batches import outputs_and_targets
from deepsweep.utils.io import write_json


PREDICTIONS_FILE = "predictions.pt"  # test probabilities and labels: what an ensemble of runs averages


def collect(model, loader, features: bool = False, keep_mode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits (or, with ``features``, its encoder's features) and the targets over a loader, read
    as the classification tasks read batches (``tasks.classify.outputs_and_targets``); in evaluation mode
    unless ``keep_mode``."""
    if not keep_mode:
        model.eval()
    outputs, targets = [], []
    with torch.inference_mode():
        for batch in loader:
            out, y = outputs_and_targets(model.encoder if features else model, batch)
            outputs.append(out)
            targets.append(y)
    return torch.cat(outputs), torch.cat(targets)


def pretrained_encoder_model(cfg: DictConfig, data, pretrained: Path):
    """The model with the encoder as pretraining left it (or as initialized, for pretrain=none: the very
    init fine-tuning started from, since build_model seeds with cfg.seed)."""
    return factory.build_model(cfg, data.input_shape, data.num_classes, data.meta.get("vocab_size"),
                               encoder=pretrained / ENCODER_FILE if cfg.pretrain.name != "none" else None)


def probe_pretrained_encoder(cfg: DictConfig, data, model) -> dict[str, float]:
    """Linear probe of ``model``'s encoder (``pretrained_encoder_model``), trained on the labels fine-tuning saw
    (finetune.label_fraction) and scored on the test split."""
    train = collect(model, data.loader("train", 1024, seed=cfg.seed, label_fraction=float(cfg.finetune.label_fraction)),
                    features=True)
    test = collect(model, data.loader("test", 1024), features=True)
    return linear_probe(train, test, data.num_classes, seed=cfg.seed)


def anomaly_metrics(cfg: DictConfig, pretrained: Path, target: torch.Tensor | None) -> dict[str, float]:
    """The pretraining task's mean per-input test score (test_reconstruction_error, test_negative_elbo,
    test_free_energy), and with pretrain.anomaly_class its ROC-AUC as a detector of that class, which
    pretraining never saw."""
    path = pretrained / SCORES_FILE
    if not path.is_file():
        return {}
    saved = torch.load(path, weights_only=True)
    scores, name = saved["scores"], f"test_{saved['name']}"
    anomaly_class = cfg.pretrain.get("anomaly_class")
    if anomaly_class is None:
        return {name: float(scores.mean())}
    is_anomaly = target == int(anomaly_class)  # the mean is over the classes pretraining saw
    return {name: float(scores[~is_anomaly].mean()), "anomaly_roc_auc": anomaly_roc_auc(scores, is_anomaly)}


def mc_dropout_probabilities(model, loader, passes: int, seed: int) -> torch.Tensor:
    """Monte Carlo dropout (Gal & Ghahramani 2016): the mean softmax of ``passes`` forward passes with the
    model's dropout sampling (``nn.modes.sampling_mode``: batch norm keeps its running statistics), drawn
    from ``seed`` without touching the global random stream."""
    from deepsweep.nn.modes import sampling_mode

    total = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sampling_mode(model)
        for _ in range(passes):
            probs = collect(model, loader, keep_mode=True)[0].softmax(dim=1)
            total = probs if total is None else total + probs
    model.eval()
    return total / passes


def neighbour_probes(cfg: DictConfig, prepared: Path) -> tuple[list[str], list[str]] | None:
    """Text data: its vocabulary and the words whose nearest neighbours evaluate lists
    (``evaluate.neighbour_words``, else the 10 most frequent words of four letters or more), checked against
    the vocabulary before any scoring. None for data without a vocabulary."""
    from deepsweep.data.sequences import SPECIALS
    from deepsweep.utils.io import read_json

    if not (prepared / "vocab.json").is_file():
        return None
    vocab = read_json(prepared / "vocab.json")
    probes = list(cfg.evaluate.get("neighbour_words") or
                  [w for w in vocab[len(SPECIALS):] if len(w) >= 4 and w.isalpha()][:10])
    known = set(vocab)
    unknown = [w for w in probes if w not in known]
    if unknown:
        raise ConfigError(f"evaluate.neighbour_words: {', '.join(unknown)} not in the vocabulary of data={cfg.data.name}")
    return vocab, probes


def word_neighbours(cfg: DictConfig, model, words: tuple[list[str], list[str]] | None, out: Path) -> list[str]:
    """Text data with a pretrained token embedding (``model``: ``pretrained_encoder_model``): each probe word's
    nearest words by cosine similarity (``embedding_neighbours.json``) and the most frequent words laid out by
    PCA (``word_embedding.png``): what pretraining (word2vec, next-token, masked-token) put into the embedding
    fine-tuning starts from. ``words``: ``neighbour_probes``."""
    table = getattr(getattr(model.encoder, "inputs", None), "embedding", None)
    if cfg.pretrain.name == "none" or words is None or table is None:
        return []
    from deepsweep.data.sequences import SPECIALS

    vocab, probes = words
    vectors = torch.nn.functional.normalize(table.weight.detach().double(), dim=1)
    index = {word: i for i, word in enumerate(vocab)}
    neighbours = {}
    for word in probes:
        similarity = vectors @ vectors[index[word]]
        similarity[: len(SPECIALS)] = -2  # never <pad>, <mask>, <unk>
        similarity[index[word]] = -2
        top = similarity.topk(5)
        neighbours[word] = [[vocab[i], round(float(v), 3)] for v, i in zip(top.values, top.indices)]
    write_json(out / "embedding_neighbours.json", neighbours)
    files = ["embedding_neighbours.json"]
    if cfg.logger.get("figures", True):
        frequent = torch.arange(len(SPECIALS), min(len(vocab), len(SPECIALS) + 150))
        points = vectors[frequent] - vectors[frequent].mean(0)
        plane = torch.linalg.svd(points, full_matrices=False).Vh[:2]  # PCA: the two main directions
        plots.words_png((points @ plane.T).float(), [vocab[i] for i in frequent.tolist()], out / "word_embedding.png",
                        f"pretrain={cfg.pretrain.name}: the 150 most frequent words (PCA of the embedding)")
        files.append("word_embedding.png")
    return files


def inferred_category_metrics(pretrained: Path, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """``code_accuracy``: how well the categories pretraining inferred without labels (InfoGAN's categorical
    code, on the test inputs) match the classes, after the best one-to-one matching."""
    path = pretrained / CATEGORIES_FILE
    if not path.is_file():
        return {}
    saved = torch.load(path, weights_only=True)
    return {"code_accuracy": matched_accuracy(saved["categories"], target, int(saved["count"]), num_classes)}


def held_out_link_metrics(pretrained: Path) -> dict[str, float]:
    """``link_roc_auc`` and ``link_average_precision`` of the edges pretraining held out (pretrain=gae or vgae
    with ``link_test_fraction``), scored by the pretrain stage against as many non-edges."""
    path = pretrained / LINK_SCORES_FILE
    if not path.is_file():
        return {}
    scores = torch.load(path, weights_only=True)
    return link_metrics(scores["pos"], scores["neg"])


def generated_metrics(model, pretrained: Path, num_classes: int) -> dict[str, float]:
    """The fine-tuned classifier's labels of the inputs pretraining generated (``generates_inputs``: the GANs):
    ``generated_classes_covered`` and ``generated_class_kl`` (``metrics.class_coverage``), which mode collapse
    lowers and raises. With ``finetune.load_pretrained=false`` every pretraining method is judged by the same
    classifier (same seed, same labels, no pretrained weights)."""
    path = pretrained / GENERATED_FILE
    if not path.is_file():
        return {}
    samples = torch.load(path, weights_only=True)["samples"]
    model.eval()
    with torch.inference_mode():
        predicted = model(samples).argmax(dim=1)
    return {f"generated_{k}": v for k, v in class_coverage(predicted, num_classes).items()}


def fine_tuned_model(cfg: DictConfig, data, finetuned: Path):
    checkpoint = finetuned / MODEL_FILE
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no fine-tuned model; run the finetune stage first")
    model = factory.build_model(cfg, data.input_shape, data.num_classes, data.meta.get("vocab_size"))
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    return model


def translation_metrics(model, pretrained: Path, target: torch.Tensor) -> dict[str, float]:
    """A domain translation's test scores (pretraining that ``translates_domains``: CycleGAN): the fine-tuned
    classifier's accuracy on the first test images as the other domain shows them (``untranslated_accuracy``)
    and translated back (``translated_accuracy``), and the mean cycle error of the round trips."""
    path = pretrained / TRANSLATED_FILE
    if not path.is_file():
        return {}
    saved = torch.load(path, weights_only=True)
    model.eval()
    with torch.inference_mode():
        labels = {name: model(saved[name].float()).argmax(dim=1) for name in ("untranslated", "translated")}
    truth = target[: len(labels["translated"])]
    return {"cycle_error": float(saved["cycle_error"]),
            **{f"{name}_accuracy": float((labels[name] == truth).double().mean()) for name in labels}}


def run(cfg: DictConfig, out: Path, inputs: Mapping[str, Path], run_id: str) -> dict[str, float]:
    import mlflow

    data = PreparedData.load(inputs["prepare"])
    words = neighbour_probes(cfg, inputs["prepare"])
    model = fine_tuned_model(cfg, data, inputs["finetune"])
    encoder_model = pretrained_encoder_model(cfg, data, inputs["pretrain"])
    if data.target == "mask":
        metrics, files = score_masks(cfg, data, model, out)
    elif data.target == "tokens":
        metrics, files = score_tokens(cfg, data, model, out)
    else:
        metrics, files = score_classes(cfg, data, model, encoder_model, inputs["pretrain"], out)
    if data.target != "class":
        metrics.update(anomaly_metrics(cfg, inputs["pretrain"], None))
    write_json(out / "metrics.json", metrics)
    files += word_neighbours(cfg, encoder_model, words, out)
    for name in ("metrics.json", *files):
        mlflow.log_artifact(str(out / name), "evaluation")
    return metrics


def score_masks(cfg: DictConfig, data, model, out: Path) -> tuple[dict[str, float], list[str]]:
    """Segmentation (a class per pixel): pixel accuracy, mean IoU, mean Dice and each class's IoU over every
    test pixel (``metrics.segmentation_metrics``); a PNG of eight test images, their masks and predictions."""
    logits, masks = collect(model, data.loader("test", 256))
    predicted = logits.argmax(dim=1)
    names = data.meta["class_names"]
    scores = segmentation_metrics(predicted, masks, data.num_classes)
    metrics = {key: value for key, value in scores.items() if not key.startswith("iou/")}
    metrics.update({f"iou/{names[c]}": scores[f"iou/{c}"] for c in range(data.num_classes)})
    files = []
    if cfg.logger.get("figures", True):
        images = data.test.x[:8]
        plots.segmentation_png(images, masks[:8], predicted[:8], data.num_classes, out / "segmentation.png",
                               f"{cfg.model.name} on {cfg.data.name} (test)")
        files.append("segmentation.png")
    return metrics, files


LENGTH_BUCKET = 10  # evaluate scores sources of 1-10, 11-20, ... tokens apart: how a model copes as they grow


def score_tokens(cfg: DictConfig, data, model, out: Path) -> tuple[dict[str, float], list[str]]:
    """Sequence to sequence: greedy decoding of every test source; ``token_accuracy`` and ``exact_match``
    (``metrics.sequence_metrics``), also by source length (``exact_match/length_11-20``, ...: what attention
    changes as sources grow; length.csv for a DVC plot); ``translations.csv`` of the first 50 test pairs and a
    heatmap of the first one's attention."""
    from deepsweep.data.sequences import EOS_ID

    model.eval()
    x, y = data.test.x, data.test.y
    with torch.inference_mode():
        decoded = [model.generate(x[i : i + 512], steps=y.shape[1]) for i in range(0, len(x), 512)]
    steps = max(tokens.shape[1] for tokens, _ in decoded)
    predicted = torch.cat([torch.nn.functional.pad(t, (0, steps - t.shape[1])) for t, _ in decoded])
    metrics = sequence_metrics(predicted, y)
    lengths = (x != 0).sum(dim=1)
    rows = []
    for low in range(1, int(lengths.max()) + 1, LENGTH_BUCKET):
        high = low + LENGTH_BUCKET - 1
        chosen = (lengths >= low) & (lengths <= high)
        if chosen.any():
            scores = sequence_metrics(predicted[chosen], y[chosen])
            metrics[f"exact_match/length_{low}-{high}"] = scores["exact_match"]
            rows.append((f"{low}-{high}", int(chosen.sum()), scores["exact_match"], scores["token_accuracy"]))
    with open(out / "length.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source_length", "sequences", "exact_match", "token_accuracy"])
        writer.writerows(rows)
    vocab = data.meta["class_names"]  # the output classes of a translation are its vocabulary

    def text(ids: torch.Tensor) -> list[str]:
        words = []
        for i in ids.tolist():
            if i in (0, EOS_ID):
                words.append("<eos>") if i == EOS_ID else None
                break
            words.append(vocab[i])
        return words

    with open(out / "translations.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "target", "predicted", "exact"])
        for i in range(min(50, len(x))):
            target, guess = text(y[i]), text(predicted[i])
            writer.writerow(["".join(text(x[i])), "".join(target[:-1]), "".join(guess).replace("<eos>", ""),
                             int(target == guess)])
    files = ["length.csv", "translations.csv"]
    attention = decoded[0][1]
    if cfg.logger.get("figures", True) and model.attends:
        source, output = text(x[0]), text(predicted[0])
        plots.attention_png(attention[0, : len(output), : len(source)].float(), source, output, out / "attention.png",
                            f"{cfg.model.name}, attention={cfg.model.get('attention', 'last block, mean over heads')}: "
                            "test sequence 1")
        files.append("attention.png")
    return metrics, files


def score_classes(cfg: DictConfig, data, model, encoder_model, pretrained: Path,
                  out: Path) -> tuple[dict[str, float], list[str]]:
    """Classification: the fine-tuned model's test scores, the probe of the pretrained encoder, the pretraining
    task's own test scores, calibration (and Monte Carlo dropout), confusion, ROC and rejection data."""
    logits, target = collect(model, data.loader("test", 1024))
    k, names = data.num_classes, data.meta["class_names"]

    metrics = classification_metrics(logits, target, k)
    if cfg.evaluate.get("linear_probe", True):
        metrics.update(probe_pretrained_encoder(cfg, data, encoder_model))
    metrics.update(anomaly_metrics(cfg, pretrained, target))
    metrics.update(held_out_link_metrics(pretrained))
    metrics.update(inferred_category_metrics(pretrained, target, k))
    metrics.update(generated_metrics(model, pretrained, k))
    metrics.update(translation_metrics(model, pretrained, target))
    embedding = None
    if data.kind == "graph":
        # Where the encoder puts every node: how alike (over-smoothing) and, below, the picture of it.
        x, edge_index, y, _ = next(iter(data.loader("test")))
        with torch.inference_mode():
            embedding = model.encoder.eval()(x, edge_index)
        metrics["embedding_mad"] = mean_average_distance(embedding)
    probs = logits.softmax(dim=1)
    bins = int(cfg.evaluate.calibration_bins)
    metrics["ece"] = probability_metrics(probs, target, bins)["ece"]
    rejection = {"fine-tuned model": rejection_curve(probs, target)}
    saved = {"probs": probs, "target": target}
    passes = int(cfg.evaluate.mc_dropout_passes)
    if passes:
        mc_probs = mc_dropout_probabilities(model, data.loader("test", 1024), passes, cfg.seed)
        metrics.update({f"mc_{k}": v for k, v in probability_metrics(mc_probs, target, bins).items()})
        rejection[f"MC dropout, {passes} passes"] = rejection_curve(mc_probs, target)
        saved["mc_probs"] = mc_probs
    torch.save(saved, out / PREDICTIONS_FILE)

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

    with open(out / "rejection.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["predictor", "fraction_rejected", "accuracy"])
        writer.writerows((label, f, a) for label, points in rejection.items() for f, a in points)

    files = ["confusion.csv", "roc.csv", "rejection.csv", PREDICTIONS_FILE]
    if cfg.logger.get("figures", True):  # 0.32 s of a tiny job's 0.93 s (make bench: a job in a warm worker)
        title = f"{cfg.model.name} on {cfg.data.name} (test)"
        plots.confusion_png(confusion_matrix(logits, target, k), names, out / "confusion_matrix.png", title)
        plots.roc_png(list(per_class_roc(logits, target, k)), names, roc if k > 2 else None, out / "roc_curve.png",
                      title)
        plots.rejection_png(rejection, out / "rejection_curve.png", title)
        files += ["confusion_matrix.png", "roc_curve.png", "rejection_curve.png"]
    if embedding is not None and cfg.logger.get("figures", True) and cfg.logger.embedding_plot != "none":
        # Every node, coloured by class: the picture of what the GNN learned.
        plots.embedding_png(embedding, y, names, out / "node_embedding.png",
                            f"{cfg.model.name} node embeddings", method=cfg.logger.embedding_plot)
        files.append("node_embedding.png")
    return metrics, files
