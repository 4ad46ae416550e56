"""Anomaly detection by unsupervised models: each digit in turn left out of pretraining, then scored."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import Finding, Study, group, mean_std, pyplot, save_figure, spread

METHODS = ("autoencoder", "denoising_autoencoder", "vae", "dbn")
SCORES = {"autoencoder": "reconstruction error", "denoising_autoencoder": "reconstruction error", "vae": "-ELBO",
          "dbn": "free energy"}


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    by_method = group(rows, "pretrain.name")
    methods = [m for m in METHODS if m in by_method]
    digits = sorted({int(r["params"]["pretrain.anomaly_class"]) for r in rows})

    def auc(method: str, digit: int) -> float | None:
        found = [r["metrics"]["evaluate.anomaly_roc_auc"] for r in by_method[method]
                 if int(r["params"]["pretrain.anomaly_class"]) == digit and "evaluate.anomaly_roc_auc" in r["metrics"]]
        return statistics.mean(found) if found else None

    methods = [m for m in methods if any(auc(m, d) is not None for d in digits)]  # a method with no score: no row

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for method in methods:
        shown = [d for d in digits if auc(method, d) is not None]
        ax.plot(shown, [auc(method, d) for d in shown], marker="o", label=f"{method} ({SCORES[method]})")
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set_xticks(digits)
    ax.set_xlabel("the digit left out of pretraining (the anomaly)")
    ax.set_ylabel("ROC-AUC of the score on the test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("digits: how well each model's score flags a class it never saw (chance 0.5)", fontsize=9)
    figure = save_figure(fig, folder / "anomaly.png")

    header = ["pretrain (score)", *map(str, digits), "mean +/- std over digits"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    means: dict[str, list[float]] = {}
    for method in methods:
        values = [auc(method, d) for d in digits]
        means[method] = [v for v in values if v is not None]
        lines.append(f"| `{method}` ({SCORES[method]}) | " + " | ".join("-" if v is None else f"{v:.2f}" for v in values)
                     + f" | {mean_std(means[method])} |")
    table = "\n".join(lines)
    if not methods:
        return Finding(table, "No method finished.", "not tested", [figure])

    def detects(method: str) -> bool:  # above chance beyond the spread over held-out digits
        values = means[method]
        return statistics.mean(values) - 0.5 > spread(values)

    detecting = [m for m in methods if detects(m)]
    held = "yes" if len(detecting) == len(methods) else ("in part" if detecting else "no")
    worst = {m: min(digits, key=lambda d: auc(m, d) if auc(m, d) is not None else 1.0) for m in methods}
    measured = ("Mean ROC-AUC over the held-out digits: "
                + "; ".join(f"{m} {statistics.mean(means[m]):.3f}" for m in methods)
                + f". Above chance beyond the spread over digits: {', '.join(detecting) or 'none'}. Hardest digit "
                "to flag per method: " + "; ".join(f"{m} {worst[m]} ({auc(m, worst[m]):.2f})" for m in methods) + ".")
    return Finding(table, measured, held, [figure])


STUDY = Study(
    name="anomaly",
    title="anomaly detection with autoencoders, VAEs and RBMs",
    claim=("A model trained only on normal data reconstructs (or assigns high likelihood to) what it has seen and "
           "not what it has not, so its reconstruction error, -ELBO or free energy flags inputs of an unseen kind "
           "(Japkowicz et al. 1995; An & Cho 2015)."),
    setup=("digits, the default MLP (hidden [128, 64], ReLU; the DBN's RBMs on it too): each digit in turn left out "
           "of 30 epochs of pretraining (`pretrain.anomaly_class`), then each test image scored by the model (its "
           "reconstruction error, -ELBO or free energy) and the ROC-AUC of that score for the left-out digit; "
           "one seed per digit (10 held-out classes are the repeats)."),
    sweeps={
        "full": [f"pretrain={','.join(METHODS)}", "pretrain.anomaly_class=range(0,10)", "pretrain.epochs=30",
                 "trainer.max_epochs=1"],
        "small": ["pretrain=autoencoder,vae", "pretrain.anomaly_class=0,1", "pretrain.epochs=2", "trainer.max_epochs=1"],
    },
    analyze=analyze,
)
