"""Every pretraining method against none on digits with 10% of the labels: linear probe and fine-tuned accuracy."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import Finding, Study, clearly_below, group, mean_std, pyplot, save_figure, spread

METHODS = ("none", "autoencoder", "denoising_autoencoder", "sparse_autoencoder", "tied_autoencoder",
           "stacked_autoencoder", "vae", "dbn", "gan", "wgan_gp", "cgan")
METRICS = (("probe_accuracy", "probe accuracy"), ("probe_f1_macro", "probe macro F1"),
           ("probe_roc_auc", "probe ROC-AUC"), ("accuracy", "fine-tuned accuracy"),
           ("f1_macro", "fine-tuned macro F1"), ("roc_auc", "fine-tuned ROC-AUC"))


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    by_method = group(rows, "pretrain.name")
    methods = [m for m in METHODS if m in by_method]

    def values(method: str, metric: str) -> list[float]:
        return [r["metrics"][f"evaluate.{metric}"] for r in by_method[method] if f"evaluate.{metric}" in r["metrics"]]

    methods = [m for m in methods if values(m, "probe_accuracy") and values(m, "accuracy")]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    offsets = {"probe_accuracy": -0.2, "accuracy": 0.2}
    for metric, label in (("probe_accuracy", "linear probe on the frozen encoder"), ("accuracy", "fine-tuned")):
        ax.bar([i + offsets[metric] for i in range(len(methods))], [statistics.mean(values(m, metric)) for m in methods],
               width=0.4, yerr=[spread(values(m, metric)) for m in methods],
               capsize=2, label=label)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    low = min(statistics.mean(values(m, k)) for m in methods for k in offsets)
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_ylabel("test accuracy (mean +/- std over seeds)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title("digits, 10% of the training labels: what each pretraining leaves for a probe and for fine-tuning",
                 fontsize=9)
    figure = save_figure(fig, folder / "pretraining.png")

    lines = ["| pretrain | " + " | ".join(label for _, label in METRICS) + " |", "| --- |" + " --- |" * len(METRICS)]
    lines += [f"| `{m}` | " + " | ".join(mean_std(values(m, k)) for k, _ in METRICS) + " |" for m in methods]
    table = "\n".join(lines)
    others = [m for m in methods if m != "none"]
    if "none" not in methods or not others:
        return Finding(table, "This budget lacks `none` or a pretraining method.", "not tested", [figure])

    def beats(method: str, metric: str) -> bool:
        return clearly_below(values("none", metric), values(method, metric))

    probe = [m for m in others if beats(m, "probe_accuracy")]
    tuned = [m for m in others if beats(m, "accuracy")]
    held = "yes" if probe and tuned else ("in part" if probe or tuned else "no")
    measured = (f"A linear probe on the encoder at init (`none`) reaches {statistics.mean(values('none', 'probe_accuracy')):.3f}; "
                f"above it beyond the spread over seeds: {', '.join(probe) or 'none'} "
                f"(best {max(others, key=lambda m: statistics.mean(values(m, 'probe_accuracy')))}, "
                f"{max(statistics.mean(values(m, 'probe_accuracy')) for m in others):.3f}). Fine-tuned, `none` reaches "
                f"{statistics.mean(values('none', 'accuracy')):.3f} and the methods "
                f"{min(statistics.mean(values(m, 'accuracy')) for m in others):.3f}-"
                f"{max(statistics.mean(values(m, 'accuracy')) for m in others):.3f}; above `none` beyond the spread: "
                f"{', '.join(tuned) or 'none'}.")
    return Finding(table, measured, held, [figure])


STUDY = Study(
    name="pretraining",
    title="unsupervised pretraining methods compared",
    claim=("Unsupervised pretraining (autoencoders, VAEs, RBMs, GANs) learns features that make the classes "
           "separable, so that with few labels a network fine-tuned from the pretrained encoder beats one trained "
           "from a random start (Hinton et al. 2006; Bengio et al. 2007; Vincent et al. 2008; Erhan et al. 2010)."),
    setup=("digits (scikit-learn's 8x8 images), the default MLP (hidden [128, 64], ReLU, He init, Adam): 30 epochs "
           "of pretraining on every training input with each method's own option file, then 100 epochs of "
           "fine-tuning on a stratified 10% of the training labels (117 images), the best validation epoch's weights "
           "kept; 3 seeds. The probe is a logistic regression on the frozen encoder's features (the same 117 "
           "labels), which fine-tuning cannot wash out; `none` is the encoder at init; `cgan` reads the labels."),
    sweeps={
        "full": [f"pretrain={','.join(METHODS)}", "pretrain.epochs=30", "finetune.label_fraction=0.1",
                 "trainer.max_epochs=100", "seed=0,1,2"],
        "small": ["pretrain=none,autoencoder", "pretrain.epochs=2", "finetune.label_fraction=0.1",
                  "trainer.max_epochs=2", "seed=0"],
    },
    analyze=analyze,
)
