"""Vanishing gradients through time: simple RNN, LSTM and GRU on a memory task of growing length."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import Finding, Study, clearly_below, mean_std, pyplot, save_figure, spread

CELLS = ("rnn", "lstm", "gru")
LENGTHS = {"full": (10, 25, 50, 100), "small": (5, 10)}
BASE = ["experiment=vanishing_gradients"]


def variant(row: dict) -> str:
    """The cell, and whether its forget-gate (GRU: update-gate) bias starts at 1."""
    biased = row["params"].get("model.forget_bias", "None") not in ("None", "null", "")
    return row["params"]["model.name"] + (", forget_bias=1" if biased else "")


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    lengths = sorted({int(r["params"]["data.length"]) for r in rows})
    variants = [v for v in (*CELLS, "lstm, forget_bias=1", "gru, forget_bias=1") if any(variant(r) == v for r in rows)]

    def accuracy(name: str, length: int) -> list[float]:
        return [r["metrics"]["evaluate.accuracy"] for r in rows
                if variant(r) == name and int(r["params"]["data.length"]) == length]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in variants:
        shown = [n for n in lengths if accuracy(name, n)]
        ax.errorbar(shown, [statistics.mean(accuracy(name, n)) for n in shown],
                    yerr=[spread(accuracy(name, n)) for n in shown],
                    marker="o", capsize=3, linestyle="--" if "forget_bias" in name else "-", label=name)
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_xlabel("sequence length (the label is the first bit)")
    ax.set_ylabel("test accuracy (mean +/- std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("remembering the first bit: chance is 0.5", fontsize=9)
    figure = save_figure(fig, folder / "vanishing_gradients.png")

    lines = ["| length | " + " | ".join(variants) + " |", "| --- |" + " --- |" * len(variants)]
    lines += [f"| {n} | " + " | ".join(mean_std(accuracy(v, n)) for v in variants) + " |" for n in lengths]
    longest = lengths[-1]
    gated = [v for v in variants if v != "rnn" and accuracy(v, longest)]
    if not accuracy("rnn", longest) or not gated:
        return Finding("\n".join(lines), "This budget lacks the simple RNN or a gated cell.", "not tested", [figure])
    beat = [v for v in gated if clearly_below(accuracy("rnn", longest), accuracy(v, longest))]
    plain_gated = [v for v in gated if "forget_bias" not in v]
    held = "yes" if plain_gated and all(v in beat for v in plain_gated) else ("in part" if beat else "no")
    measured = (f"At length {longest} the simple RNN reaches {statistics.mean(accuracy('rnn', longest)):.3f} test "
                "accuracy; " + "; ".join(f"{v} {statistics.mean(accuracy(v, longest)):.3f}" for v in gated)
                + f". Above the RNN beyond the spread over seeds: {', '.join(beat) or 'none'}. At length "
                f"{lengths[0]}: " + "; ".join(f"{v} {statistics.mean(accuracy(v, lengths[0])):.3f}"
                                              for v in variants if accuracy(v, lengths[0])) + ".")
    return Finding("\n".join(lines), measured, held, [figure])


def sweeps(budget: str) -> list[list[str]]:
    lengths = "data.length=" + ",".join(map(str, LENGTHS[budget]))
    if budget == "small":
        short = ["data.num_samples=400", "trainer.max_epochs=2", "seed=0"]
        return [[*BASE, "model=rnn,gru", lengths, *short], [*BASE, "model=gru", "model.forget_bias=1.0", lengths, *short]]
    return [[*BASE, "model=rnn,lstm,gru", lengths, "seed=0,1,2"],
            [*BASE, "model=lstm,gru", "model.forget_bias=1.0", lengths, "seed=0,1,2"]]


STUDY = Study(
    name="vanishing_gradients",
    title="vanishing gradients through time: RNN, LSTM and GRU",
    claim=("A simple (Elman) RNN cannot learn a dependency across a long sequence, because the gradient vanishes "
           "as it flows back through time; the gates of the LSTM and GRU carry it (Bengio et al. 1994; Hochreiter "
           "& Schmidhuber 1997), the more so with a forget-gate bias of 1 (Jozefowicz et al. 2015)."),
    setup=("The `vanishing_gradients` experiment: 4,000 random bit sequences whose label is the first bit, so the "
           "gradient must cross the whole sequence; one recurrent layer of 32 units, Adam at 0.01, 20 epochs, the "
           "best validation epoch's weights; lengths 10 to 100, 3 seeds; a second sweep starts the LSTM's and "
           "GRU's forget (update) gate bias at 1."),
    sweeps={budget: sweeps(budget) for budget in LENGTHS},
    analyze=analyze,
)
