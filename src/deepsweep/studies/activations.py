"""Activations by depth: which ones keep a deep MLP trainable."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import (
    Finding,
    Study,
    clearly_below,
    group,
    hidden_layers,
    mean_curve,
    mean_std,
    pyplot,
    save_figure,
    spread,
    widths,
)

SATURATING = ("sigmoid", "tanh")
RECTIFIERS = ("relu", "leaky_relu", "elu", "gelu", "silu", "maxout")  # maxout: piecewise linear, 2 pieces
ACTIVATIONS = SATURATING + RECTIFIERS
WIDTH = 64
DEPTHS = {"full": (2, 8, 16), "small": (2, 8)}


def hidden_dims(depth: int) -> str:
    return widths(WIDTH, depth)


def final_train_loss(row: dict) -> float | None:
    curve = mean_curve([row], "train/loss")
    return curve[-1][1] if curve else None


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    by_activation = group(rows, "activation.name")
    order = [name for name in ACTIVATIONS if name in by_activation]
    depths = sorted({hidden_layers(r) for r in rows})
    accuracy = {(a, d): [r["metrics"]["evaluate.accuracy"] for r in by_activation[a] if hidden_layers(r) == d]
                for a in order for d in depths}
    loss = {(a, d): [v for r in by_activation[a] if hidden_layers(r) == d for v in [final_train_loss(r)] if v is not None]
            for a in order for d in depths}

    plt = pyplot()
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name in order:
        style = "--" if name in SATURATING else "-"
        for ax, values in ((acc_ax, accuracy), (loss_ax, loss)):
            shown = [d for d in depths if values[(name, d)]]
            ax.errorbar(shown, [statistics.mean(values[(name, d)]) for d in shown],
                        yerr=[spread(values[(name, d)]) for d in shown],
                        linestyle=style, marker="o", capsize=3, label=name)
    acc_ax.set_ylabel("test accuracy (mean +/- std over seeds)")
    loss_ax.set_ylabel("training loss at the last epoch")
    loss_ax.set_yscale("log")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel(f"hidden layers (width {WIDTH})")
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7)
    fig.suptitle("Activations by depth: digits MLP, Glorot-uniform init, no pretraining (dashed: saturating)")
    figure = save_figure(fig, folder / "activations_depth.png")

    lines = ["| activation | " + " | ".join(f"test accuracy, {d} layers" for d in depths)
             + f" | training loss, {depths[-1]} layers |", "| --- |" + " --- |" * (len(depths) + 1)]
    for name in order:
        cells = [mean_std(accuracy[(name, d)]) for d in depths]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {mean_std(loss[(name, depths[-1])])} |")
    deep, shallow = depths[-1], depths[0]
    saturating = [a for a in SATURATING if a in order and accuracy[(a, deep)]]
    rectifiers = [a for a in RECTIFIERS if a in order and accuracy[(a, deep)]]
    if len(depths) < 2 or not saturating or not rectifiers:
        return Finding("\n".join(lines), "This budget has no saturating and rectifier pair to compare by depth.",
                       "not tested", [figure])
    # Held for a saturating activation when, at the greatest depth, it is below every rectifier beyond the
    # spread over seeds.
    fell = [a for a in saturating
            if all(clearly_below(accuracy[(a, deep)], accuracy[(r, deep)]) for r in rectifiers)]
    held = "yes" if len(fell) == len(saturating) else ("in part" if fell else "no")

    def drop(name: str) -> str:
        return f"{name} {statistics.mean(accuracy[(name, shallow)]):.3f} -> {statistics.mean(accuracy[(name, deep)]):.3f}"

    measured = (f"Test accuracy from {shallow} to {deep} hidden layers (means over seeds): "
                + "; ".join(drop(a) for a in saturating + rectifiers) + ". "
                + f"At {deep} layers, below every rectifier by more than the spread over seeds: "
                + (", ".join(fell) or "no saturating activation") + ".")
    return Finding("\n".join(lines), measured, held, [figure])


STUDY = Study(
    name="activations",
    title="activations and depth",
    claim=("Saturating activations (sigmoid, tanh) make deep networks hard to train, their gradients vanishing "
           "through the layers; rectifiers (ReLU and its successors: leaky ReLU, ELU, GELU, SiLU; and maxout, "
           "piecewise linear like them) keep deep networks trainable."),
    setup=(f"scikit-learn digits, MLPs of {', '.join(map(str, DEPTHS['full']))} hidden layers of width {WIDTH}, "
           "Glorot-uniform init for every activation (the init Glorot & Bengio derived for saturating units), "
           "Adam (lr 0.001), no pretraining, 20 epochs (the best validation epoch's weights kept), 2 seeds."),
    sweeps={
        "full": [f"activation={','.join(ACTIVATIONS)}",
                 "model.hidden_dims=" + ",".join(hidden_dims(d) for d in DEPTHS["full"]),
                 "init=xavier_uniform", "pretrain=none", "trainer.max_epochs=20", "seed=0,1"],
        "small": ["activation=sigmoid,relu", "model.hidden_dims=" + ",".join(hidden_dims(d) for d in DEPTHS["small"]),
                  "init=xavier_uniform", "pretrain=none", "trainer.max_epochs=2", "seed=0"],
    },
    analyze=analyze,
)
