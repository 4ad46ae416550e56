"""Regularization on small data: how much each regularizer curbs overfitting, and its test accuracy."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import Finding, Study, clearly_below, group, mean_curve, mean_std, pyplot, save_figure

REGULARIZERS = ("none", "l1", "l2", "dropout", "dropconnect", "gaussian_dropout", "batchnorm", "early_stopping")


def rise(row: dict) -> float | None:
    """How far the validation loss rose above its minimum by the last epoch trained: overfitting, measured on
    held-out data alone. (Not validation minus training loss: the logged training loss comes from
    training-mode passes, with dropout's noise and the L1/L2 penalty in it, so that gap would shrink under
    those regularizers by construction.)"""
    val = mean_curve([row], "val/loss")
    return val[-1][1] - min(p[1] for p in val) if val else None


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    by_name = group(rows, "regularizer.name")
    order = [name for name in REGULARIZERS if name in by_name]

    plt = pyplot()
    columns = 4
    lines_of_panels = -(-len(order) // columns)
    fig, axes = plt.subplots(lines_of_panels, columns, figsize=(3.2 * columns, 2.6 * lines_of_panels),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, order):
        for metric, style in (("train/loss", "-"), ("val/loss", "--")):
            curve = mean_curve(by_name[name], metric)
            ax.plot([p[0] + 1 for p in curve], [p[1] for p in curve], style, label=metric)
        ax.set_title(name, fontsize=9)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(order):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Training (solid; training-mode passes, penalties included) and validation (dashed) loss, "
                 "mean over seeds", fontsize=9)
    figure = save_figure(fig, folder / "regularization_curves.png")

    gaps = {name: [g for g in map(rise, by_name[name]) if g is not None] for name in order}
    accuracy = {name: [r["metrics"]["evaluate.accuracy"] for r in by_name[name]] for name in order}
    lines = ["| regularizer | validation loss rise after its minimum | test accuracy | epochs trained |",
             "| --- | --- | --- | --- |"]
    for name in order:
        epochs = [r["metrics"]["finetune.epochs_trained"] for r in by_name[name]]
        lines.append(f"| `{name}` | {mean_std(gaps[name])} | {mean_std(accuracy[name])} | {mean_std(epochs, 0)} |")
    if "none" not in order or len(order) < 2:
        return Finding("\n".join(lines), "No unregularized baseline in this budget.", "not tested", [figure])
    base_gap, base_acc = statistics.mean(gaps["none"]), statistics.mean(accuracy["none"])
    others = [name for name in order if name != "none"]
    # Beyond the spread over seeds only: on a few hundred labels most differences are within it.
    narrower = [name for name in others if gaps[name] and clearly_below(gaps[name], gaps["none"])]
    better = [name for name in others if clearly_below([-a for a in accuracy[name]], [-a for a in accuracy["none"]])]
    held = "yes" if len(narrower) == len(better) == len(others) else ("in part" if narrower or better else "no")
    measured = (f"Without regularization the validation loss rose {base_gap:.3f} above its minimum by the last "
                f"epoch and test accuracy was {base_acc:.3f} (means over seeds). Beyond the spread over seeds, "
                f"that rise was smaller with {', '.join(narrower) or 'no regularizer'}, and test accuracy higher "
                f"with {', '.join(better) or 'no regularizer'} (of {', '.join(others)}).")
    return Finding("\n".join(lines), measured, held, [figure])


STUDY = Study(
    name="regularization",
    title="regularization on small data",
    claim=("On small training sets, regularization (weight penalties, dropout, batch norm, early stopping) "
           "curbs overfitting and improves test accuracy."),
    setup=("scikit-learn digits with 15% of the training labels (172 images), the default MLP (128-64, ReLU, "
           "He init), no pretraining, up to 100 epochs (the best validation epoch's weights kept), 3 seeds."),
    sweeps={
        "full": [f"regularizer={','.join(REGULARIZERS)}", "pretrain=none", "finetune.label_fraction=0.15",
                 "trainer.max_epochs=100", "seed=0,1,2"],
        "small": ["regularizer=none,dropout", "pretrain=none", "finetune.label_fraction=0.15",
                  "trainer.max_epochs=3", "seed=0"],
    },
    analyze=analyze,
)
