"""Batch normalization across learning rates and depths: epochs to a target accuracy, and where it trains at all."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import (
    Finding,
    Study,
    clearly_below,
    hidden_layers,
    mean_curve,
    mean_std,
    pyplot,
    save_figure,
    widths,
)

TARGET = 0.9  # validation accuracy
RATES = {"full": ("0.01", "0.1", "0.5", "2.0"), "small": ("0.1",)}
DEPTHS = {"full": (2, 8), "small": (2,)}
WIDTH = 64
EPOCHS = 30


def hidden_dims(depth: int) -> str:
    return widths(WIDTH, depth)


def epochs_to_target(row: dict) -> int | None:
    """The first epoch (counted from 1) whose validation accuracy reaches TARGET; None if none did."""
    return next((epoch + 1 for epoch, value, _ in mean_curve([row], "val/acc") if value >= TARGET), None)


def cell_text(reached: list[int | None], planned: int) -> str:
    """Mean epochs to the target over the seeds that reached it, and how many of the planned seeds did."""
    hits = [e for e in reached if e is not None]
    return (f"{mean_std(hits, 1)} ({len(hits)}/{planned})" if hits else f"never (0/{planned})")


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    seeds = len({r["params"]["seed"] for r in rows}) or 1
    epochs = max(int(r["metrics"].get("finetune.epochs_trained", EPOCHS)) for r in rows)
    rates = sorted({r["params"]["optimizer.lr"] for r in rows}, key=float)
    depths = sorted({hidden_layers(r) for r in rows})
    kinds = [k for k in ("none", "batchnorm") if any(r["params"]["regularizer.name"] == k for r in rows)]
    # Jobs that diverged failed (a non-finite loss stops a job) and are not among the rows: they never reached it.
    reached = {(k, d, lr): [epochs_to_target(r) for r in rows if r["params"]["regularizer.name"] == k
                            and hidden_layers(r) == d and r["params"]["optimizer.lr"] == lr]
               for k in kinds for d in depths for lr in rates}

    plt = pyplot()
    fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 3.8), squeeze=False, sharey=True)
    for ax, depth in zip(axes[0], depths):
        for kind, style in (("none", "--"), ("batchnorm", "-")):
            if kind not in kinds:
                continue
            means = [statistics.mean(h) if (h := [e for e in reached[(kind, depth, lr)] if e is not None]) else None
                     for lr in rates]
            xs = [float(lr) for lr, m in zip(rates, means) if m is not None]
            ax.plot(xs, [m for m in means if m is not None], style, marker="o", label=kind)
            missed = [float(lr) for lr, m in zip(rates, means) if m is None]
            ax.plot(missed, [epochs + 1] * len(missed), "x", color=ax.lines[-1].get_color(), markersize=9)
        ax.set_xscale("log")
        ax.set_xlabel("SGD learning rate")
        ax.set_title(f"{depth} hidden layers of {WIDTH}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"epochs to {TARGET:.0%} validation accuracy\n(x: not within {epochs} epochs)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Batch normalization: epochs to the target accuracy by learning rate (mean over seeds)", fontsize=10)
    figure = save_figure(fig, folder / "batch_norm_epochs.png")

    lines = ["| hidden layers | SGD lr | epochs to target, no batch norm (seeds reaching it) | with batch norm |",
             "| --- | --- | --- | --- |"]
    for depth in depths:
        for lr in rates:
            cells = [cell_text(reached.get((k, depth, lr), []), seeds) if k in kinds else "-"
                     for k in ("none", "batchnorm")]
            lines.append(f"| {depth} | {lr} | " + " | ".join(cells) + " |")
    if kinds != ["none", "batchnorm"]:
        return Finding("\n".join(lines), "This budget lacks one side of the comparison.", "not tested", [figure])

    def all_reached(kind: str, depth: int, lr: str) -> bool:
        return len(reached[(kind, depth, lr)]) == seeds and None not in reached[(kind, depth, lr)]

    cells = [(d, lr) for d in depths for lr in rates]
    only_bn = [(d, lr) for d, lr in cells if all_reached("batchnorm", d, lr) and not all_reached("none", d, lr)]
    only_plain = [(d, lr) for d, lr in cells if all_reached("none", d, lr) and not all_reached("batchnorm", d, lr)]
    both = [(d, lr) for d, lr in cells if all_reached("none", d, lr) and all_reached("batchnorm", d, lr)]
    sooner = [c for c in both if clearly_below(reached[("batchnorm", *c)], reached[("none", *c)])]
    later = [c for c in both if clearly_below(reached[("none", *c)], reached[("batchnorm", *c)])]
    wider = len(only_bn) > len(only_plain)
    faster = len(sooner) > len(later)
    held = "yes" if wider and faster else ("in part" if wider or faster else "no")

    def listed(found: list[tuple[int, str]]) -> str:
        return ", ".join(f"{d} layers at lr {lr}" for d, lr in found) or "none"

    measured = (f"Every seed reached {TARGET:.0%} validation accuracy within {epochs} epochs with batch norm only "
                f"in: {listed(only_bn)}; without it only in: {listed(only_plain)}. Where both did, batch norm got "
                f"there sooner by more than the spread over seeds in {listed(sooner)}, later in {listed(later)} "
                f"(of {len(both)} such settings).")
    return Finding("\n".join(lines), measured, held, [figure])


STUDY = Study(
    name="batch_norm",
    title="batch normalization, learning rates and depth",
    claim=("Batch normalization lets a network train with larger learning rates and reach a given accuracy in "
           "fewer epochs (Ioffe & Szegedy, 2015)."),
    setup=(f"scikit-learn digits, MLPs of {' and '.join(map(str, DEPTHS['full']))} hidden layers of width {WIDTH} "
           f"(ReLU, He init), plain SGD at learning rates {', '.join(RATES['full'])}, with and without batch norm "
           f"(before each activation), no pretraining, {EPOCHS} epochs, 2 seeds. A job whose loss became "
           "non-finite failed and counts as never reaching the target."),
    sweeps={
        "full": ["regularizer=none,batchnorm", "optimizer=sgd", f"optimizer.lr={','.join(RATES['full'])}",
                 "model.hidden_dims=" + ",".join(hidden_dims(d) for d in DEPTHS["full"]),
                 "pretrain=none", f"trainer.max_epochs={EPOCHS}", "seed=0,1"],
        "small": ["regularizer=none,batchnorm", "optimizer=sgd", f"optimizer.lr={','.join(RATES['small'])}",
                  "model.hidden_dims=" + ",".join(hidden_dims(d) for d in DEPTHS["small"]),
                  "pretrain=none", "trainer.max_epochs=2", "seed=0"],
    },
    analyze=analyze,
)
