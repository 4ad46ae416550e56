"""Optimizers on one task, each at its best learning rate from a small grid: loss against epochs and time."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import Finding, Study, clearly_below, group, mean_curve, mean_std, pyplot, save_figure

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adadelta", "lbfgs")
GRID = ("0.001", "0.01", "0.1", "1.0")
ADAPTIVE_OR_MOMENTUM = ("momentum", "nesterov", "rmsprop", "adam")


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    by_optimizer = group(rows, "optimizer.name")
    best: dict[str, tuple[str, list[dict]]] = {}
    for name, members in by_optimizer.items():
        by_lr = group(members, "optimizer.lr")
        # A learning rate competes only with all its seeds finished (one that diverged in a seed is out).
        by_lr = {lr: m for lr, m in by_lr.items() if len(m) == max(len(v) for v in by_lr.values())} or by_lr
        # The learning rate whose mean best validation loss over seeds is lowest.
        lr, chosen = min(by_lr.items(), key=lambda kv: statistics.mean(r["metrics"]["finetune.best_val_loss"]
                                                                       for r in kv[1]))
        best[name] = (lr, chosen)
    order = [name for name in OPTIMIZERS if name in best]

    plt = pyplot()
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for name in order:
        lr, chosen = best[name]
        curve = mean_curve(chosen, "val/loss")
        by_epoch.plot([p[0] + 1 for p in curve], [p[1] for p in curve], marker=".", label=f"{name} (lr {lr})")
        by_time.plot([p[2] for p in curve], [p[1] for p in curve], marker=".", label=f"{name} (lr {lr})")
    for ax, xlabel in ((by_epoch, "epoch"), (by_time, "seconds since the fine-tuning run started")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (mean over seeds)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    by_epoch.legend(fontsize=7)
    fig.suptitle("Optimizers at their best learning rate: digits MLP, no pretraining")
    figure = save_figure(fig, folder / "optimizers_loss.png")

    curves = {name: mean_curve(best[name][1], "val/loss") for name in order}
    target = min(p[1] for p in curves["sgd"]) if curves.get("sgd") else None

    def reaches(name: str) -> str:
        """The first epoch (and second) at which the mean validation loss is down to SGD's lowest."""
        hit = next((p for p in curves[name] if target is not None and p[1] <= target), None)
        return f"{hit[0] + 1} ({hit[2]:.2f} s)" if hit else "never"

    lines = ["| optimizer | best lr (of " + ", ".join(GRID) + ") | best validation loss | test accuracy | "
             "epoch (time) down to SGD's lowest loss | fit time (s) |", "| --- | --- | --- | --- | --- | --- |"]
    for name in order:
        lr, chosen = best[name]
        lines.append(f"| `{name}` | {lr} | {mean_std([r['metrics']['finetune.best_val_loss'] for r in chosen])} | "
                     f"{mean_std([r['metrics']['evaluate.accuracy'] for r in chosen])} | {reaches(name)} | "
                     f"{mean_std([mean_curve([r], 'val/loss')[-1][2] for r in chosen], 1)} |")
    values = {name: [r["metrics"]["finetune.best_val_loss"] for r in best[name][1]] for name in order}
    loss = {name: statistics.mean(v) for name, v in values.items()}
    if "sgd" not in loss:
        return Finding("\n".join(lines), "Plain SGD was not in this budget's grid.", "not tested", [figure])
    tried = [name for name in ADAPTIVE_OR_MOMENTUM if name in loss]
    beaten = [name for name in tried if clearly_below(values[name], values["sgd"])]
    held = "yes" if tried and len(beaten) == len(tried) else ("in part" if beaten else "no")
    winner = min(loss, key=loss.get)
    within = [name for name in tried if name not in beaten]
    measured = (f"At its best learning rate, plain SGD reached a best validation loss of {loss['sgd']:.3f}; "
                f"lower by more than the spread over seeds: {', '.join(beaten) or 'none'}"
                + (f"; within the spread of SGD's or above it: {', '.join(within)}" if within else "")
                + f". The lowest was `{winner}` ({loss[winner]:.3f}). Sooner: the epoch each reaches SGD's lowest "
                  "mean loss is in the table.")
    return Finding("\n".join(lines), measured, held, [figure])


STUDY = Study(
    name="optimizers",
    title="momentum and adaptive optimizers against plain SGD",
    claim="Momentum and adaptive learning rates (RMSProp, Adam) reach a lower loss, sooner, than plain SGD.",
    setup=("scikit-learn digits, the default MLP (128-64, ReLU, He init), no pretraining, 20 epochs of "
           "fine-tuning on every training label; each optimizer at each learning rate of the grid, 2 seeds; "
           "each optimizer shown at the learning rate with the lowest mean best validation loss."),
    sweeps={
        "full": [f"optimizer={','.join(OPTIMIZERS)}", f"optimizer.lr={','.join(GRID)}", "pretrain=none", "seed=0,1"],
        "small": ["optimizer=sgd,adam", "optimizer.lr=0.01,0.1", "pretrain=none", "trainer.max_epochs=2", "seed=0"],
    },
    analyze=analyze,
)
