"""Initialization x activation in a deep MLP: activations and gradients through the layers, and accuracy."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import (
    Finding,
    Study,
    clearly_below,
    hidden_layers,
    history,
    mean_std,
    pyplot,
    save_figure,
    widths,
)

INITS = ("zeros", "normal", "lecun_normal", "xavier_uniform", "he_normal")
ACTIVATIONS = ("tanh", "relu")
DEPTH = {"full": 15, "small": 4}
WIDTH = 64
# The init each activation was derived for: Glorot & Bengio (2010) for tanh, He et al. (2015) for ReLU.
MATCHED = {"tanh": "xavier_uniform", "relu": "he_normal"}
KEPT, VANISHED = 0.5, 0.1  # last hidden layer's activation std over the first's: kept at least, vanished at most


def hidden_dims(depth: int) -> str:
    return widths(WIDTH, depth)


def layer_curve(row: dict, metric: str, step: int) -> list[float]:
    """``layer/<metric>/<i>`` of a job's finetune run at ``step`` (0: before training, 1: after one epoch), by layer."""
    values = []
    for i in range(hidden_layers(row) + 1):  # the hidden layers and the head
        points = {epoch: value for epoch, value, _ in history(row, f"layer/{metric}/{i:02d}")}
        values.append(points.get(step, float("nan")))
    return values


def mean_curves(rows: list[dict], metric: str, step: int) -> list[float]:
    curves = [layer_curve(r, metric, step) for r in rows]
    return [statistics.mean(c[i] for c in curves) for i in range(len(curves[0]))] if curves else []


def kept_ratio(row: dict) -> float | None:
    """The std of the last hidden layer's output over the first's, at initialization (the head's input
    over the second layer's input); None where the first is 0 (all-zero weights)."""
    stds = layer_curve(row, "input_std", 0)
    return stds[-1] / stds[1] if len(stds) > 2 and stds[1] > 0 else None


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    cells = {(a, i): [r for r in rows if r["params"]["activation.name"] == a and r["params"]["init.name"] == i]
             for a in ACTIVATIONS for i in INITS}
    activations = [a for a in ACTIVATIONS if any(cells[(a, i)] for i in INITS)]
    inits = [i for i in INITS if any(cells[(a, i)] for a in activations)]

    plt = pyplot()
    fig, axes = plt.subplots(len(activations), 2, figsize=(11, 3.6 * len(activations)), squeeze=False)
    for row_axes, activation in zip(axes, activations):
        for ax, metric, label in ((row_axes[0], "input_std", "std of the layer's input"),
                                  (row_axes[1], "grad_norm", "norm of the weights' gradient")):
            for init in inits:
                members = cells[(activation, init)]
                if not members:
                    continue
                for step, style in ((0, "-"), (1, "--")):
                    curve = mean_curves(members, metric, step)
                    ax.plot(range(len(curve)), [max(v, 1e-12) for v in curve], style, marker=".",
                                   label=init if step == 0 else None,
                                   color=None if step == 0 else ax.lines[-1].get_color())
            ax.set_yscale("log")
            ax.set_xlabel("layer (0: the data's; last: the head's)")
            ax.set_ylabel(label + " (1e-12: zero)")
            ax.set_title(f"{activation}: {label} (solid: at initialization; dashed: after one epoch)", fontsize=8)
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7)
    figure = save_figure(fig, folder / "initialization_layers.png")

    lines = ["| activation | init | last / first hidden activation std, at init | first layer's weight-gradient norm, "
             "at init (mean) | test accuracy |", "| --- | --- | --- | --- | --- |"]
    ratios, accuracy = {}, {}
    for activation in activations:
        for init in inits:
            members = cells[(activation, init)]
            if not members:
                continue
            ratios[(activation, init)] = [v for v in map(kept_ratio, members) if v is not None]
            accuracy[(activation, init)] = [r["metrics"]["evaluate.accuracy"] for r in members]
            # Absolute, not a ratio: under a small init every layer's gradient is ~0, and a ratio of two
            # vanished gradients reads as healthy.
            first_grad = [c[0] for c in (layer_curve(r, "grad_norm", 0) for r in members) if c]
            lines.append(f"| {activation} | `{init}` | {mean_std(ratios[(activation, init)])} | "
                         f"{statistics.mean(first_grad):.2g} | {mean_std(accuracy[(activation, init)])} |"
                         if first_grad else
                         f"| {activation} | `{init}` | {mean_std(ratios[(activation, init)])} | - | "
                         f"{mean_std(accuracy[(activation, init)])} |")

    verdicts, found = [], []
    for activation, matched in MATCHED.items():
        if (activation, matched) not in ratios or (activation, "normal") not in ratios:
            continue
        kept = ratios[(activation, matched)] and statistics.mean(ratios[(activation, matched)]) >= KEPT
        vanished = ratios[(activation, "normal")] and statistics.mean(ratios[(activation, "normal")]) <= VANISHED
        better = clearly_below([-a for a in accuracy[(activation, matched)]], [-a for a in accuracy[(activation, "normal")]])
        verdicts.append(bool(kept and vanished and better))
        found.append(f"{activation}: `{matched}` keeps {statistics.mean(ratios[(activation, matched)] or [0]):.2f} of "
                     f"the first hidden layer's activation std at the last, `normal` (std 0.01) "
                     f"{statistics.mean(ratios[(activation, 'normal')] or [0]):.2g}; test accuracy "
                     f"{statistics.mean(accuracy[(activation, matched)]):.3f} against "
                     f"{statistics.mean(accuracy[(activation, 'normal')]):.3f}")
    if not verdicts:
        return Finding("\n".join(lines), "This budget lacks the matched or the small normal init.", "not tested",
                       [figure])
    held = "yes" if all(verdicts) else ("in part" if any(verdicts) else "no")
    zeros = [statistics.mean(accuracy[(a, "zeros")]) for a in activations if (a, "zeros") in accuracy]
    measured = ("; ".join(found) + f" (kept: a ratio of at least {KEPT}; vanished: at most {VANISHED}; accuracy "
                "higher beyond the spread over seeds)."
                + (f" All-zero weights: test accuracy {', '.join(f'{z:.3f}' for z in zeros)} "
                   "(every unit of a layer computes the same, so the network learns no more than one unit per layer)."
                   if zeros else ""))
    return Finding("\n".join(lines), measured, held, [figure])


STUDY = Study(
    name="initialization",
    title="initialization, depth and activation",
    claim=("Initialization must keep the scale of activations and gradients through the layers: with a small "
           "normal initialization they vanish in a deep network, Xavier/Glorot initialization keeps them for "
           "tanh and He (Kaiming) initialization for ReLU, and all-zero weights never break the symmetry between "
           "units (Glorot & Bengio, 2010; He et al., 2015)."),
    setup=(f"scikit-learn digits, an MLP of {DEPTH['full']} hidden layers of width {WIDTH}, tanh or ReLU, each init "
           "of the group (`normal`: std 0.01), Adam (lr 0.001), no pretraining, 10 epochs, 2 seeds; per layer the "
           "std of its input and the norm of its weights' gradient on the first validation batch, before "
           "training and after one epoch (`logger.layer_stats=true`)."),
    sweeps={
        "full": [f"init={','.join(INITS)}", f"activation={','.join(ACTIVATIONS)}",
                 f"model.hidden_dims={hidden_dims(DEPTH['full'])}", "logger.layer_stats=true", "pretrain=none",
                 "trainer.max_epochs=10", "seed=0,1"],
        "small": ["init=normal,he_normal", "activation=relu", f"model.hidden_dims={hidden_dims(DEPTH['small'])}",
                  "logger.layer_stats=true", "pretrain=none", "trainer.max_epochs=2", "seed=0"],
    },
    analyze=analyze,
)
