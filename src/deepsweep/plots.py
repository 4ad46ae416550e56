"""PNG figures logged to MLflow: confusion matrix and ROC curves (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # the sweep report draws in a process that never needs torch: 1.6 s not to import
    import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(matrix: torch.Tensor, class_names: Sequence[str], path: Path, title: str) -> None:
    plt = _pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 0.8 + 0.5 * n), dpi=100)
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    peak = float(matrix.max()) or 1.0
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            ax.text(j, i, value, ha="center", va="center", fontsize=7, color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def roc_png(curves, class_names: Sequence[str], micro: dict | None, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for c, fpr, tpr in curves:
        ax.plot(fpr.numpy(), tpr.numpy(), lw=1, label=f"class {class_names[c]}")
    if micro is not None:
        ax.plot(micro["fpr"].numpy(), micro["tpr"].numpy(), "k--", lw=2, label="micro-average")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def rejection_png(curves: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    """Accuracy of the kept test inputs against the fraction rejected as most uncertain, one line per predictor."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for label, points in curves.items():
        ax.plot([f for f, _ in points], [a for _, a in points], marker=".", lw=1, label=label)
    ax.set_xlabel("fraction of test inputs rejected (highest predictive entropy first)")
    ax.set_ylabel("accuracy of the rest")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def words_png(points: torch.Tensor, words: Sequence[str], path: Path, title: str) -> None:
    """Words at their 2-D positions, each written where it lies."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 9), dpi=100)
    xy = points.numpy()
    ax.scatter(xy[:, 0], xy[:, 1], s=4, color="grey")
    for (x, y), word in zip(xy, words):
        ax.annotate(word, (x, y), fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


EMBEDDING_METHODS = ("auto", "tsne", "pca", "none")


def embedding_png(embedding: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], path: Path,
                  title: str, method: str = "auto") -> None:
    """A 2-D map of embeddings: as is when 2-D, else t-SNE (PCA first above 50 dimensions) or PCA.
    ``auto`` picks t-SNE up to 1,000 points and PCA above (t-SNE of Cora's 2,708 nodes takes ~9 s)."""
    import numpy as np

    if method not in EMBEDDING_METHODS:
        raise ValueError(f"logger.embedding_plot: unknown method {method!r}; allowed: {', '.join(EMBEDDING_METHODS)}")
    points = embedding.detach().cpu().numpy()
    if method == "auto":
        method = "tsne" if len(points) <= 1000 else "pca"
    if points.shape[1] > 2 and method == "pca":
        from sklearn.decomposition import PCA

        points = PCA(n_components=2, random_state=0).fit_transform(points)
    elif points.shape[1] > 2:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        if points.shape[1] > 50 and len(points) > 50:  # PCA to 50 needs 50 points (karate has 34)
            points = PCA(n_components=50, random_state=0).fit_transform(points)
        perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(points)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    labels = labels.cpu().numpy()
    for c in np.unique(labels):
        sel = labels == c
        ax.scatter(points[sel, 0], points[sel, 1], s=6 if len(points) > 200 else 40, label=class_names[c])
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def image_grid_png(images: torch.Tensor, path: Path, title: str, columns: int = 8) -> None:
    """A grid of (N, C, H, W) images in [0, 1] (the first channel, grey)."""
    plt = _pyplot()
    n = len(images)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.8, rows * 0.8 + 0.4), dpi=100, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i, 0].clamp(0, 1).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def heatmap_png(values: dict[tuple[str, str], float], rows: Sequence[str], columns: Sequence[str],
                labels: tuple[str, str, str], path: Path) -> None:
    """A metric over two sweep axes (mean over the other axes and seeds), each cell annotated."""
    import numpy as np

    plt = _pyplot()
    grid = np.full((len(rows), len(columns)), np.nan)
    for (r, c), v in values.items():
        grid[rows.index(r), columns.index(c)] = v
    fig, ax = plt.subplots(figsize=(3.5 + 1.1 * len(columns), 2.2 + 0.5 * len(rows)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(labels[1])
    ax.set_ylabel(labels[0])
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(rows)):
        for j in range(len(columns)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="black" if grid[i, j] > middle else "white")
    fig.colorbar(image, ax=ax)
    ax.set_title(f"{labels[2]}\n(mean over the other params and seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_png(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path, title: str) -> None:
    """Learning curves: one panel per metric, one line per labelled run; points are (epoch, value)."""
    plt = _pyplot()
    metrics = sorted({m for per_run in curves.values() for m in per_run})
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(5 * max(1, len(metrics)), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, per_run in curves.items():
            points = per_run.get(metric)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scatter_snapshots_png(snapshots: dict[int, torch.Tensor], centers: torch.Tensor, path: Path, title: str,
                          panels: int = 4) -> None:
    """2-D samples at ``panels`` epochs spread over training (first, ..., last), with the modes' centres."""
    import torch

    plt = _pyplot()
    epochs = sorted(snapshots)
    shown = sorted({epochs[round(i * (len(epochs) - 1) / max(1, panels - 1))] for i in range(panels)})
    centers = torch.as_tensor(centers)
    reach = float(centers.abs().max()) * 1.5
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.8), squeeze=False)
    for ax, epoch in zip(axes[0], shown):
        points = snapshots[epoch].cpu().numpy()
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4)
        ax.scatter(centers[:, 0], centers[:, 1], s=25, marker="x", color="red")
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.set_title(f"epoch {epoch + 1}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def segmentation_png(images: torch.Tensor, masks: torch.Tensor, predicted: torch.Tensor, num_classes: int,
                     path: Path, title: str) -> None:
    """One column per image: the input (first channel), its true mask and the predicted one."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.2), dpi=100, squeeze=False)
    for j in range(n):
        classes = "tab10" if num_classes <= 10 else "tab20"  # a colour per class
        for row, (picture, cmap, top) in enumerate(((images[j, 0], "gray", 1), (masks[j], classes, num_classes - 1),
                                                    (predicted[j], classes, num_classes - 1))):
            axes[row, j].imshow(picture.numpy(), cmap=cmap, vmin=0, vmax=max(top, 1), interpolation="nearest")
            axes[row, j].set_axis_off()
    for row, label in enumerate(("input", "true mask", "predicted")):
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def attention_png(weights: torch.Tensor, source: Sequence[str], output: Sequence[str], path: Path, title: str) -> None:
    """Attention weights (output steps x source steps) of one decoded sequence, as a heatmap."""
    import textwrap

    plt = _pyplot()
    width = 1.5 + 0.28 * len(source)
    fig, ax = plt.subplots(figsize=(width, 1.2 + 0.28 * len(output)), dpi=100)
    ax.imshow(weights.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(source)), source, fontsize=7)
    ax.set_yticks(range(len(output)), output, fontsize=7)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    # Wrapped to the figure's width (11 characters an inch at 9 points fit), which a short source keeps narrow.
    ax.set_title(textwrap.fill(title, width=max(16, int(11 * width))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
