"""``deepsweep results``: rerun what the README's result tables quote and rewrite those tables from the outputs.

Each table sits in README.md between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` and is written
only here, with the commit, the machine and the wall time of what produced it: no README number is typed by
hand. Ready-made pipelines run through ``dvc repro -f`` (which also rewrites their committed ``dvc.lock`` and
``metrics.json``), baselines through ``deepsweep run``, sweeps through their ``make`` targets.

``--quick`` reruns the rows marked quick (a few minutes; their outputs and ``dvc.lock`` are rewritten, as by any
``dvc repro``) and checks them against the README instead of rewriting it: exit code 1 names every cell that
differs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deepsweep import paths

README = "README.md"
TRIPLE = ("accuracy", "f1_macro", "roc_auc")


def _root() -> Path:
    return paths.project_root()


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _run(cmd: list[str]) -> float:
    """Run a command from the project root (its output shown); return its wall time in seconds."""
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.monotonic()
    subprocess.run(cmd, cwd=_root(), env=env, check=True)
    return time.monotonic() - start


def _metrics(folder: Path) -> dict[str, float]:
    return json.loads((folder / "evaluate" / "metrics.json").read_text())


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


# --- rows of single runs ---------------------------------------------------------------------------------

@dataclass
class Pipeline:
    """A ready-made pipeline (``pipelines/<name>/``; "" for the root one), rerun with ``dvc repro -f``."""

    label: str
    name: str
    quick: bool = False

    @property
    def command(self) -> str:
        return "make run" if not self.name else f"dvc --cd pipelines/{self.name} repro"

    def run(self) -> tuple[dict[str, float], float]:
        where = [] if not self.name else ["--cd", f"pipelines/{self.name}"]  # its own DVC project
        seconds = _run([_bin("dvc"), *where, "repro", "-f"])
        folder = _root() / ("artifacts" if not self.name else f"pipelines/{self.name}/artifacts")
        return _metrics(folder), seconds


@dataclass
class Baseline:
    """``deepsweep run experiment=<name> <overrides>``: a variant of a pipeline (e.g. without pretraining)."""

    label: str
    name: str
    overrides: tuple[str, ...] = ("pretrain=none",)
    quick: bool = False

    @property
    def command(self) -> str:
        return f"deepsweep run experiment={self.name} {' '.join(self.overrides)}"

    def run(self) -> tuple[dict[str, float], float]:
        folder = _root() / "outputs" / "results" / "_".join([self.name, *self.overrides]).replace("=", "-")
        shutil.rmtree(folder, ignore_errors=True)
        seconds = _run([_bin("deepsweep"), "run", f"experiment={self.name}", *self.overrides,
                        f"hydra.run.dir={folder}"])
        return _metrics(folder), seconds


def _triple(m: dict[str, float]) -> list[str]:
    return [f"{m[k]:.4f}" for k in TRIPLE]


# --- rows of sweeps: mean +/- std over seeds ------------------------------------------------------------

@dataclass
class Sweep:
    """A sweep the README quotes: its ``make`` target (or a deepsweep run -m) writing into ``outputs/sweeps/``."""

    folder: str  # outputs/sweeps/<folder>
    command: list[str]

    def run(self) -> float:
        shutil.rmtree(_root() / "outputs" / "sweeps" / self.folder, ignore_errors=True)  # a fresh sweep, not a resume
        return _run(self.command)

    def parent_run_id(self) -> str:
        """The sweep's MLflow parent run, with the project's store as the tracking URI from here on."""
        import mlflow

        from deepsweep.tracking.runs import tracking_uri
        from deepsweep.tracking.sweep import PARENT_FILE
        from omegaconf import OmegaConf

        mlflow.set_tracking_uri(tracking_uri(OmegaConf.create({"logger": {"tracking_uri": None}})))
        return (_root() / "outputs" / "sweeps" / self.folder / PARENT_FILE).read_text().strip()

    def rows(self) -> list[dict]:
        from deepsweep.tracking.report import sweep_rows

        rows = [r for r in sweep_rows(self.parent_run_id()) if r["status"] == "FINISHED"]
        if not rows:
            raise RuntimeError(f"sweep {self.folder}: no finished job")
        return rows


def _stat(rows: list[dict], metric: str, digits: int) -> str:
    values = [r["metrics"][metric] for r in rows if metric in r["metrics"]]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +/- {spread:.{digits}f}"


def _triple_stats(rows: list[dict]) -> list[str]:
    """``_triple``'s cells over a sweep's jobs: mean +/- std of each."""
    return [_stat(rows, f"evaluate.{k}", 4) for k in TRIPLE]


def _where(rows: list[dict], **params: str) -> list[dict]:
    return [r for r in rows if all(r["params"].get(k) == v for k, v in params.items())]


# --- tables --------------------------------------------------------------------------------------------

@dataclass
class Table:
    name: str
    header: list[str]
    build: Callable[[bool], tuple[list[list[str]], str]]  # quick -> (rows, caption)
    quick_rows: int = 0  # how many leading rows --quick reruns (their metric cells are checked)
    note: str = ""
    sweeps: list[Sweep] = field(default_factory=list)


def _single_rows(items: list, quick: bool, cells: Callable[[object, dict[str, float]], list[str]]) -> list[list[str]]:
    rows = []
    for item in items:
        if quick and not item.quick:
            continue
        metrics, seconds = item.run()
        rows.append([item.label, *cells(item, metrics), _seconds(seconds), f"`{item.command}`"])
    return rows


PIPELINES = [
    Pipeline("digits, MLP, autoencoder pretraining (default)", "", quick=True),
    Pipeline("ECG200, GRU, next-value pretraining", "ecg_gru", quick=True),
    Baseline("ECG200, GRU, no pretraining", "ecg_gru", quick=True),
    Pipeline("MNIST (20k train), LeNet, autoencoder pretraining", "mnist_lenet"),
    Pipeline("SMS Spam, LSTM, next-token pretraining", "sms_spam_lstm"),
    Pipeline("SMS Spam, Transformer, masked-token pretraining", "sms_spam_transformer"),
    Pipeline("Cora, 2-layer GCN", "cora_gcn"),
    Pipeline("Cora, GAT (8 heads, patience 100)", "cora_gat"),
    Pipeline("Cora, GraphSAGE-mean, DGI pretraining", "cora_sage_pretrained"),
    Pipeline("Cora inductive, GraphSAGE, random-walk pretraining", "cora_sage_inductive"),
    Pipeline("Cora, GCN, graph autoencoder pretraining (10% of edges held out)", "cora_gae"),
    Pipeline("Fashion-MNIST (10k train), VGG-style CNN, batch norm", "fashion_vgg"),
    Pipeline("Fashion-MNIST (10k train), Inception-style CNN, batch norm", "fashion_inception"),
]

PRETRAINED = [
    ("digits, DAE, 10% labels", "digits_dae", True),
    ("MNIST 20k, sigmoid MLP, DBN, 1% labels", "mnist_dbn", False),
    ("MNIST 20k, DCGAN discriminator, 1% labels", "mnist_dcgan", False),
    ("MNIST 20k, InfoGAN discriminator, 1% labels", "mnist_infogan", False),
]


def _pipelines(quick: bool) -> tuple[list[list[str]], str]:
    return _single_rows(PIPELINES, quick, lambda item, m: _triple(m)), ""


def _pretrained(quick: bool) -> tuple[list[list[str]], str]:
    rows = []
    for label, name, is_quick in PRETRAINED:
        if quick and not is_quick:
            continue
        with_pretraining, seconds = Pipeline(label, name).run()
        without, _ = Baseline(label, name).run()
        rows.append([label, " / ".join(_triple(with_pretraining)), f"{with_pretraining['probe_accuracy']:.4f}",
                     " / ".join(_triple(without)), f"{without['probe_accuracy']:.4f}", _seconds(seconds),
                     f"`dvc --cd pipelines/{name} repro`"])
    return rows, ""


PUBLISHED = {"cora_gcn": "81.5 +/- 0.6 (Kipf & Welling; PyG)", "cora_gat": "83.0 +/- 0.7 (Velickovic et al.)",
             "cora_sage_pretrained": "-"}
CORA = [Sweep(e, [_bin("deepsweep"), "run", "-m", f"experiment={e}", "seed=range(0,10)",
                  f"hydra.sweep.dir=outputs/sweeps/{e}"]) for e in PUBLISHED]
CORA_INDUCTIVE = Sweep("cora_sage_inductive", [
    _bin("deepsweep"), "run", "-m", "experiment=cora_sage_inductive", "pretrain=random_walk,dgi,none",
    "seed=range(0,10)", "hydra.sweep.dir=outputs/sweeps/cora_sage_inductive"])


def _cora(quick: bool) -> tuple[list[list[str]], str]:
    seconds = sum(sweep.run() for sweep in CORA)
    table = []
    for sweep in CORA:
        rows = sweep.rows()
        table.append([f"`{sweep.folder}`", *_triple_stats(rows), PUBLISHED[sweep.folder]])
    return table, f"`make cora-seeds` (first three sweeps): {_seconds(seconds)}"


CITESEER = Sweep("citeseer_gcn", ["make", "citeseer-seeds"])
CITESEER_PIPELINE = Pipeline("citeseer_gcn", "citeseer_gcn")
CITESEER_PUBLISHED = "70.3 (Kipf & Welling)"


def _citeseer(quick: bool) -> tuple[list[list[str]], str]:
    single, pipeline_seconds = CITESEER_PIPELINE.run()
    seconds = CITESEER.run()
    rows = CITESEER.rows()
    table = [[f"`{CITESEER_PIPELINE.command}` (seed 0)", *_triple(single), CITESEER_PUBLISHED],
             [f"`make citeseer-seeds` ({len(rows)} seeds)", *_triple_stats(rows), CITESEER_PUBLISHED]]
    return table, f"pipeline {_seconds(pipeline_seconds)}, `make citeseer-seeds` {_seconds(seconds)}"


def _by_pretraining(rows: list[dict], methods: tuple[str, ...], probe_digits: int) -> list[list[str]]:
    """A row per pretraining method: test accuracy, macro F1, ROC-AUC and the linear probe's accuracy."""
    table = []
    for method in methods:
        chosen = _where(rows, **{"pretrain.name": method})
        table.append([f"`{method}`", *_triple_stats(chosen),
                      _stat(chosen, "evaluate.probe_accuracy", probe_digits)])
    return table


def _cora_inductive(quick: bool) -> tuple[list[list[str]], str]:
    seconds = CORA_INDUCTIVE.run()
    rows = CORA_INDUCTIVE.rows()
    table = _by_pretraining(rows, ("random_walk", "dgi", "none"), 3)
    return table, f"`make cora-seeds` (the inductive sweep): {len(rows)} jobs, {_seconds(seconds)}"


LINK_PUBLISHED = {"gae": ("91.0 +/- 0.02", "92.0 +/- 0.03"), "vgae": ("91.4 +/- 0.01", "92.6 +/- 0.01")}
LINKS = Sweep("cora_gae", [_bin("deepsweep"), "run", "-m", "experiment=cora_gae", "pretrain=gae,vgae",
                           "seed=range(0,10)", "hydra.sweep.dir=outputs/sweeps/cora_gae"])


def _links(quick: bool) -> tuple[list[list[str]], str]:
    seconds = LINKS.run()
    rows = LINKS.rows()
    table = []
    for method, (auc, ap) in LINK_PUBLISHED.items():
        chosen = _where(rows, **{"pretrain.name": method})
        table.append([f"`{method}`", _stat(chosen, "evaluate.link_roc_auc", 4), auc,
                      _stat(chosen, "evaluate.link_average_precision", 4), ap, str(len(chosen))])
    return table, f"`make link-seeds`: {len(rows)} jobs, {_seconds(seconds)}"


UNCERTAINTY = Sweep("uncertainty", ["make", "uncertainty"])


def _uncertainty(quick: bool) -> tuple[list[list[str]], str]:
    import mlflow

    seconds = UNCERTAINTY.run()
    rows = UNCERTAINTY.rows()
    ensemble = mlflow.MlflowClient().get_run(UNCERTAINTY.parent_run_id()).data.metrics
    table = [["one model (mean +/- std over the seeds)",
              *(_stat(rows, f"evaluate.{k}", 4) for k in ("accuracy", "loss", "ece"))],
             ["MC dropout, 20 passes (mean +/- std over the seeds)",
              *(_stat(rows, f"evaluate.mc_{k}", 4) for k in ("accuracy", "loss", "ece"))],
             [f"deep ensemble of the {len(rows)} seeds", *(f"{ensemble[f'ensemble.{k}']:.4f}" for k in ("accuracy", "loss", "ece"))]]
    return table, f"`make uncertainty`: {len(rows)} jobs, {_seconds(seconds)}"


AUGMENT = Sweep("augment", ["make", "augment"])


def _augment(quick: bool) -> tuple[list[list[str]], str]:
    seconds = AUGMENT.run()
    rows = AUGMENT.rows()
    table = []
    for shift in ("0", "2"):
        for hflip in ("False", "True"):
            for cutout in ("0", "8"):
                chosen = _where(rows, **{"data.augment.shift": shift, "data.augment.hflip": hflip,
                                         "data.augment.cutout": cutout})
                table.append([shift, hflip.lower(), cutout, *_triple_stats(chosen),
                              _stat(chosen, "finetune.best_val_acc", 4)])
    return table, f"`make augment`: {len(rows)} jobs, {_seconds(seconds)}"


WORD2VEC = Sweep("word2vec", ["make", "word2vec"])


def _word2vec(quick: bool) -> tuple[list[list[str]], str]:
    seconds = WORD2VEC.run()
    rows = WORD2VEC.rows()
    table = _by_pretraining(rows, ("word2vec", "next_step", "none"), 4)
    return table, f"`make word2vec`: {len(rows)} jobs, {_seconds(seconds)}"


INFOGAN = Sweep("infogan", ["make", "infogan"])


def _infogan(quick: bool) -> tuple[list[list[str]], str]:
    seconds = INFOGAN.run()
    rows = INFOGAN.rows()
    table = [[f"`{m}`", _stat(_where(rows, **{"pretrain.name": m}), "evaluate.code_accuracy", 4),
              *(_stat(_where(rows, **{"pretrain.name": m}), f"evaluate.{k}", 4) for k in ("accuracy", "probe_accuracy")),
              _stat(_where(rows, **{"pretrain.name": m}), "evaluate.generated_classes_covered", 1)]
             for m in ("infogan",)]
    return table, f"`make infogan`: {len(rows)} jobs, {_seconds(seconds)}"


LOSS_OPTIONS = ("cross_entropy", "label_smoothing", "focal", "multi_margin", "mse")
LOSSES = Sweep("losses", ["make", "losses"])


def _losses(quick: bool) -> tuple[list[list[str]], str]:
    seconds = LOSSES.run()
    rows = LOSSES.rows()
    metrics = (*TRIPLE, "loss")
    table = [[f"`{name}`", *(_stat(_where(rows, **{"loss.name": name}), f"evaluate.{k}", 4) for k in metrics),
              _stat(_where(rows, **{"loss.name": name}), "finetune.epochs_trained", 1)]
             for name in LOSS_OPTIONS]
    return table, f"`make losses`: {len(rows)} jobs, {_seconds(seconds)}"


STRUCTURED = [  # pipelines whose labels are more than a class per input
    (Pipeline("Shapes (3,000 images, 32x32), U-Net, per-pixel cross-entropy", "shapes_unet"),
     ("pixel_accuracy", "mean_iou", "dice")),
    (Pipeline("MNIST digits over stripes (6,000 images, 11 classes per pixel), U-Net, conv autoencoder pretraining",
              "mnist_unet"), ("pixel_accuracy", "mean_iou", "dice")),
    (Pipeline("Dates in five formats to ISO 8601, GRU seq2seq, additive attention", "translation_dates"),
     ("token_accuracy", "exact_match")),
    (Pipeline("The same dates, Transformer encoder-decoder (2 + 2 layers, width 64)", "translation_dates_transformer"),
     ("token_accuracy", "exact_match")),
    (Pipeline("MNIST (10k train) and its colour-inverted copy, CycleGAN, then a DCGAN-discriminator classifier",
              "mnist_cyclegan"), ("accuracy", "untranslated_accuracy", "translated_accuracy", "cycle_error")),
]


def scores_cell(metrics: dict[str, float], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {metrics[k]:.4f}" for k in keys)


def _structured(quick: bool) -> tuple[list[list[str]], str]:
    keys = {item.name: keys for item, keys in STRUCTURED}
    return _single_rows([item for item, _ in STRUCTURED], quick,
                        lambda item, m: [scores_cell(m, keys[item.name])]), ""


COURSE = [  # a pipeline for what the tables below measure as sweeps
    Pipeline("SMS Spam, LSTM, word2vec pretraining, 10% labels", "sms_spam_word2vec"),
    Pipeline("digits, MLP, dropout 0.5, Monte Carlo dropout at test (20 passes)", "digits_mc_dropout"),
    Pipeline("Fashion-MNIST (1,000 train), LeNet, hflip + cutout augmentation", "fashion_augment"),
]


def _course(quick: bool) -> tuple[list[list[str]], str]:
    return _single_rows(COURSE, quick, lambda item, m: _triple(m)), ""


ATTENTION = Sweep("attention", ["make", "attention"])
LENGTHS = ("1-10", "11-20", "21-30", "31-40")


def _attention(quick: bool) -> tuple[list[list[str]], str]:
    seconds = ATTENTION.run()
    rows = ATTENTION.rows()
    table = []
    for how in ("none", "bahdanau", "luong"):
        chosen = _where(rows, **{"model.attention": how})
        table.append([f"`{how}`", *(_stat(chosen, f"evaluate.exact_match_length_{b}", 3) for b in LENGTHS),
                      _stat(chosen, "evaluate.exact_match", 3), _stat(chosen, "evaluate.token_accuracy", 3)])
    return table, f"`make attention`: {len(rows)} jobs, {_seconds(seconds)}"


SEGMENTATION_LOSSES = Sweep("segmentation_losses", ["make", "segmentation-losses"])


def _segmentation_losses(quick: bool) -> tuple[list[list[str]], str]:
    seconds = SEGMENTATION_LOSSES.run()
    rows = SEGMENTATION_LOSSES.rows()
    classes = ("background", "circle", "square", "triangle")
    table = [[f"`{name}`", *(_stat(_where(rows, **{"loss.name": name}), f"evaluate.{k}", 4)
                             for k in ("pixel_accuracy", "mean_iou", "dice", *(f"iou_{c}" for c in classes)))]
             for name in ("cross_entropy", "dice", "focal")]
    return table, f"`make segmentation-losses`: {len(rows)} jobs, {_seconds(seconds)}"


TABLES = [
    Table("pipelines", ["pipeline", "accuracy", "macro F1", "ROC-AUC", "wall time", "command"], _pipelines,
          quick_rows=3),
    Table("pretrained", ["pipeline", "pretrained: accuracy / F1 / ROC-AUC", "probe accuracy",
                         "no pretraining (`pretrain=none`): accuracy / F1 / ROC-AUC", "probe accuracy",
                         "wall time", "command"], _pretrained, quick_rows=1),
    Table("cora", ["experiment", "test accuracy", "macro F1", "ROC-AUC (OvR)", "published accuracy"], _cora),
    Table("citeseer", ["run", "test accuracy", "macro F1", "ROC-AUC (OvR)", "published accuracy"], _citeseer),
    Table("cora_inductive", ["pretrain (50 epochs)", "test accuracy", "macro F1", "ROC-AUC (OvR)",
                             "linear probe accuracy"], _cora_inductive),
    Table("links", ["pretrain", "test ROC-AUC", "published ROC-AUC (%)", "test average precision",
                    "published AP (%)", "seeds"], _links),
    Table("uncertainty", ["predictor", "test accuracy", "test NLL", "ECE (15 bins)"], _uncertainty),
    Table("augment", ["shift", "hflip", "cutout", "test accuracy", "macro F1", "ROC-AUC", "best val accuracy"],
          _augment),
    Table("word2vec", ["pretrain", "test accuracy", "macro F1", "ROC-AUC", "linear probe accuracy"], _word2vec),
    Table("infogan", ["pretrain", "code accuracy (best matching)", "fine-tuned accuracy (1% labels)",
                      "linear probe accuracy", "digits among 1,000 samples"], _infogan),
    Table("losses", ["loss", "test accuracy", "macro F1", "ROC-AUC", "test cross-entropy", "epochs trained"], _losses),
    Table("structured", ["pipeline", "test scores", "wall time", "command"], _structured),
    Table("course", ["pipeline", "accuracy", "macro F1", "ROC-AUC", "wall time", "command"], _course),
    Table("attention", ["attention", *(f"exact match, sources of {b}" for b in LENGTHS), "exact match (all)",
                        "token accuracy (all)"], _attention),
    Table("segmentation_losses", ["loss", "pixel accuracy", "mean IoU", "Dice", "IoU background", "IoU circle",
                                  "IoU square", "IoU triangle"], _segmentation_losses),
]


# --- README --------------------------------------------------------------------------------------------

def machine() -> str:
    from deepsweep.utils.machine import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, CPU"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=_root(), capture_output=True, text=True).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + ("+changes" if git("status", "--porcelain", "--untracked-files=no", "--", "src", "conf") else "")


def render(table: Table, rows: list[list[str]], caption: str) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "|" + " --- |" * len(table.header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    stamp = f"Generated by `deepsweep results` at commit {commit()} on {machine()}, {time.strftime('%Y-%m-%d')}"
    return "\n".join(lines) + f"\n\n({stamp}{'; ' + caption if caption else ''}.)"


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- results:{name} -->\n)(.*?)(\n<!-- /results:{name} -->)", re.S)


def table_rows(text: str, name: str) -> list[list[str]]:
    """The rows of a generated table in README text (cells stripped)."""
    match = _block(name).search(text)
    if not match:
        raise KeyError(f"{README}: no block <!-- results:{name} -->")
    lines = [line for line in match.group(2).splitlines()
             if line.startswith("|") and not re.fullmatch(r"\|( *-+ *\|)+", line.strip())][1:]
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines]


def write(name: str, markdown: str) -> None:
    path = _root() / README
    text = path.read_text()
    if not _block(name).search(text):
        raise KeyError(f"{README}: no block <!-- results:{name} -->")
    path.write_text(_block(name).sub(lambda m: m.group(1) + markdown + m.group(3), text))


def main(names: list[str], quick: bool) -> int:
    chosen = [t for t in TABLES if not names or t.name in names]
    unknown = set(names) - {t.name for t in TABLES}
    if unknown:
        from deepsweep.config import ConfigError

        raise ConfigError(f"unknown results table(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(t.name for t in TABLES)}")
    differences = []
    for table in chosen:
        if quick and not table.quick_rows:
            continue
        rows, caption = table.build(quick)
        if not quick:
            write(table.name, render(table, rows, caption))
            print(f"{README}: table {table.name} rewritten ({len(rows)} rows)")
            continue
        committed = {row[0]: row for row in table_rows((_root() / README).read_text(), table.name)}
        for row in rows:
            old = committed.get(row[0])
            # Every cell but the wall time (the second to last) must repeat.
            if old is None or old[:-2] != row[:-2]:
                differences.append(f"{table.name}: {row[0]}: README {old[1:-2] if old else 'no row'}, now {row[1:-2]}")
            else:
                print(f"{table.name}: {row[0]}: reproduced {row[1:-2]}")
    for line in differences:
        print(f"DIFFERS {line}", file=sys.stderr)
    return 1 if differences else 0
