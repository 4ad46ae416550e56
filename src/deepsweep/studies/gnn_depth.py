"""GNN depth on Cora: accuracy and over-smoothing (how alike the node embeddings become) by number of layers."""

from __future__ import annotations

import statistics
from pathlib import Path

from deepsweep.studies import (
    Finding, Study, clearly_below, group, hidden_layers, mean_std, pyplot, save_figure, spread, widths,
)

FAMILIES = ("gcn", "sage", "gat")
WIDTH = 16
LAYERS = {"full": (2, 4, 8, 16), "small": (2, 4)}  # graph layers: the hidden ones and the output one
EPOCHS = 100


def hidden_dims(layers: int) -> str:
    return widths(WIDTH, layers - 1)  # the head is the last graph layer


def layers_of(row: dict) -> int:
    return hidden_layers(row) + 1


def analyze(rows: list[dict], folder: Path, budget: str) -> Finding:
    by_family = group(rows, "model.name")
    order = [f for f in FAMILIES if f in by_family]
    depths = sorted({layers_of(r) for r in rows})

    def values(family: str, layers: int, metric: str) -> list[float]:
        return [r["metrics"][metric] for r in by_family[family] if layers_of(r) == layers and metric in r["metrics"]]

    plt = pyplot()
    fig, (acc_ax, mad_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for family in order:
        for ax, metric in ((acc_ax, "evaluate.accuracy"), (mad_ax, "evaluate.embedding_mad")):
            shown = [d for d in depths if values(family, d, metric)]
            ax.errorbar(shown, [statistics.mean(values(family, d, metric)) for d in shown],
                        yerr=[spread(values(family, d, metric)) for d in shown],
                        marker="o", capsize=3, label=family)
    acc_ax.set_ylabel("test accuracy (mean +/- std over seeds)")
    mad_ax.set_ylabel("mean cosine distance between node embeddings (MAD)")
    for ax in (acc_ax, mad_ax):
        ax.set_xlabel("graph layers")
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8)
    fig.suptitle(f"GNN depth on Cora (public split, width {WIDTH}): accuracy and how alike the nodes become",
                 fontsize=10)
    figure = save_figure(fig, folder / "gnn_depth.png")

    lines = ["| family | layers | test accuracy | embedding MAD | jobs finished |", "| --- | --- | --- | --- | --- |"]
    for family in order:
        for d in depths:
            lines.append(f"| `{family}` | {d} | {mean_std(values(family, d, 'evaluate.accuracy'))} | "
                         f"{mean_std(values(family, d, 'evaluate.embedding_mad'))} | "
                         f"{len(values(family, d, 'evaluate.accuracy'))} |")
    shallow, deep = depths[0], depths[-1]
    compared = [f for f in order if values(f, shallow, "evaluate.accuracy") and values(f, deep, "evaluate.accuracy")]
    if len(depths) < 2 or not compared:
        return Finding("\n".join(lines), "This budget has one depth only.", "not tested", [figure])
    # The claim has two parts for each family: accuracy falls with depth, and the embeddings grow alike.
    fell = [f for f in compared if clearly_below(values(f, deep, "evaluate.accuracy"), values(f, shallow, "evaluate.accuracy"))]
    smoothed = [f for f in compared if clearly_below(values(f, deep, "evaluate.embedding_mad"),
                                                     values(f, shallow, "evaluate.embedding_mad"))]
    both = [f for f in compared if f in fell and f in smoothed]
    held = "yes" if len(both) == len(compared) else ("in part" if fell or smoothed else "no")

    def change(family: str, metric: str) -> str:
        return (f"{statistics.mean(values(family, shallow, metric)):.3f} -> "
                f"{statistics.mean(values(family, deep, metric)):.3f}")

    measured = (f"From {shallow} to {deep} layers (means over seeds), test accuracy: "
                + "; ".join(f"{f} {change(f, 'evaluate.accuracy')}" for f in compared)
                + f"; embedding MAD at {', '.join(map(str, depths))} layers: "
                + "; ".join(f"{f} " + ", ".join(f"{statistics.mean(v):.3f}" if (v := values(f, d, "evaluate.embedding_mad"))
                                                 else "-" for d in depths) for f in compared)
                + f". Beyond the spread over seeds, accuracy fell for {', '.join(fell) or 'no family'} and the "
                  f"embeddings grew alike for {', '.join(smoothed) or 'no family'}.")
    return Finding("\n".join(lines), measured, held, [figure])


STUDY = Study(
    name="gnn_depth",
    title="GNN depth and over-smoothing",
    claim=("Deep graph neural networks over-smooth: each layer averages a node with its neighbours, so with "
           "many layers the node representations become alike and accuracy falls (Li et al., 2018; Chen et "
           "al., 2020)."),
    setup=(f"Cora, public split (140 training labels), the `cora_gcn` experiment's recipe (dropout 0.5, Adam lr "
           f"0.01, weight decay 5e-4) for GCN, GraphSAGE (mean) and GAT (8 heads), "
           f"{', '.join(map(str, LAYERS['full']))} graph layers of width {WIDTH} (no residual connections), "
           f"{EPOCHS} epochs (the best validation epoch's weights kept), 2 seeds. MAD: the mean cosine distance "
           "between the encoder's embeddings of every two nodes (evaluate's `embedding_mad`)."),
    sweeps={
        "full": ["experiment=cora_gcn", f"model={','.join(FAMILIES)}",
                 "model.hidden_dims=" + ",".join(hidden_dims(d) for d in LAYERS["full"]),
                 f"trainer.max_epochs={EPOCHS}", "seed=0,1"],
        "small": ["experiment=cora_gcn", "model=gcn",
                  "model.hidden_dims=" + ",".join(hidden_dims(d) for d in LAYERS["small"]),
                  "trainer.max_epochs=3", "seed=0"],
    },
    analyze=analyze,
)
