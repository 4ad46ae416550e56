"""Labels needed: training from scratch against unsupervised pretraining at 1%, 10% and 100% of the labels."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import Finding, Study, clearly_below, mean_std, pyplot, save_figure, spread

METHODS = ("none", "autoencoder", "denoising_autoencoder", "dbn", "gan")
FRACTIONS = {"full": ("0.01", "0.1", "1.0"), "small": ("0.01", "1.0")}


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    fractions = sorted({r["params"]["finetune.label_fraction"] for r in rows}, key=float)
    methods = [m for m in METHODS if any(r["params"]["pretrain.name"] == m for r in rows)]
    accuracy = {(m, f): [r["metrics"]["evaluate.accuracy"] for r in rows
                         if r["params"]["pretrain.name"] == m and r["params"]["finetune.label_fraction"] == f]
                for m in methods for f in fractions}
    labels = {f: statistics.mean(r["metrics"]["finetune.n_train_labels"] for r in rows
                                 if r["params"]["finetune.label_fraction"] == f) for f in fractions}

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in methods:
        shown = [f for f in fractions if accuracy[(method, f)]]
        ax.errorbar([labels[f] for f in shown], [statistics.mean(accuracy[(method, f)]) for f in shown],
                    yerr=[spread(accuracy[(method, f)]) for f in shown],
                    linestyle="--" if method == "none" else "-", marker="o", capsize=3,
                    label="scratch (none)" if method == "none" else method)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy (mean +/- std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("MNIST, sigmoid MLP 784-256-128-10: pretraining against the labels available", fontsize=9)
    figure = save_figure(fig, folder / "labels_needed.png")

    lines = ["| pretraining | " + " | ".join(f"{float(f):.0%} of the labels ({labels[f]:.0f})" for f in fractions) + " |",
             "| --- |" + " --- |" * len(fractions)]
    for method in methods:
        lines.append(f"| `{method}` | " + " | ".join(mean_std(accuracy[(method, f)]) for f in fractions) + " |")
    fewest, most = fractions[0], fractions[-1]
    pretrained = [m for m in methods if m != "none" and accuracy[(m, fewest)]]
    if "none" not in methods or not pretrained or len(fractions) < 2:
        return Finding("\n".join(lines), "This budget lacks scratch training or a pretraining method.", "not tested",
                       [figure])

    def gain(method: str, fraction: str) -> float:
        return statistics.mean(accuracy[(method, fraction)]) - statistics.mean(accuracy[("none", fraction)])

    helped = [m for m in pretrained if clearly_below([-a for a in accuracy[(m, fewest)]],
                                                     [-a for a in accuracy[("none", fewest)]])]
    shrank = [m for m in helped if accuracy[(m, most)] and gain(m, most) < gain(m, fewest)]
    held = "yes" if helped and len(shrank) == len(helped) == len(pretrained) else ("in part" if helped else "no")
    measured = (f"With {labels[fewest]:.0f} labels ({float(fewest):.0%}), training from scratch reached "
                f"{statistics.mean(accuracy[('none', fewest)]):.3f} test accuracy; "
                + "; ".join(f"{m} {gain(m, fewest):+.3f}" for m in pretrained)
                + f". With {labels[most]:.0f} labels ({float(most):.0%}): scratch "
                f"{statistics.mean(accuracy[('none', most)]):.3f}; "
                + "; ".join(f"{m} {gain(m, most):+.3f}" for m in pretrained if accuracy[(m, most)])
                + f". Better than scratch beyond the spread over seeds at {float(fewest):.0%}: "
                + (", ".join(helped) or "none") + "; of those, a smaller gain at "
                + f"{float(most):.0%}: " + (", ".join(shrank) or "none") + ".")
    return Finding("\n".join(lines), measured, held, [figure])


STUDY = Study(
    name="labels_needed",
    title="labels needed, with and without unsupervised pretraining",
    claim=("Unsupervised pretraining (autoencoders, deep belief nets, GANs) helps most when labels are few: with "
           "1% of the labels a pretrained encoder beats training from scratch, and the gain shrinks as labels "
           "grow (Hinton et al., 2006; Erhan et al., 2010)."),
    setup=("MNIST, 20,000 training images (the `mnist_dbn` experiment's sigmoid MLP 784-256-128-10, Glorot init, "
           "30 epochs of fine-tuning, the best validation epoch's weights kept; 10k official test set) with Adam "
           "(lr 0.001; the GANs' own 0.0002 for pretraining): with the experiment's momentum SGD the sigmoid "
           "autoencoders' loss did not move in 10 epochs. Pretraining on every training image for 10 epochs (the "
           "DBN: 5 per RBM) with each method's own defaults, then fine-tuning on a stratified 1%, 10% or 100% of "
           "the labels; 2 seeds."),
    sweeps={
        "full": ["experiment=mnist_dbn", "optimizer=adam", f"pretrain={','.join(METHODS)}", "pretrain.epochs=10",
                 f"finetune.label_fraction={','.join(FRACTIONS['full'])}", "seed=0,1"],
        "small": ["experiment=mnist_dbn", "optimizer=adam", "pretrain=none,autoencoder", "pretrain.epochs=1", "data.train_subset=2000",
                  f"finetune.label_fraction={','.join(FRACTIONS['small'])}", "trainer.max_epochs=2", "seed=0"],
    },
    analyze=analyze,
)
