"""Data sources: each reads a real dataset from disk (``data.downloads`` fetched it first) into a train/val/test split.

Pixels are scaled to [0, 1]; images keep their (channels, height, width) shape so that MLP and CNN
families read the same prepared data.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsweep import paths
from deepsweep.errors import DataFileError


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    class_names: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def load_splits(source) -> tuple[Splits, dict]:
    """A tensor source's splits, and what sequence sources return beside them (vocabulary, ids)."""
    loaded = source.load()
    return loaded if isinstance(loaded, tuple) else (loaded, {})


def _stratified_split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out ``fraction`` of the rows, stratified by label."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    x_keep, x_out, y_keep, y_out = train_test_split(x, y, test_size=fraction, stratify=y, random_state=seed)
    return Split(x_keep, y_keep), Split(x_out, y_out)


def random_split(x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float,
                 seed: int) -> tuple[Split, Split, Split]:
    """Train, validation and test rows of one seeded permutation (labels that are masks or sequences, which
    no stratification can follow)."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test, n_val = round(test_fraction * len(x)), round(val_fraction * len(x))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return Split(x[train], y[train]), Split(x[val], y[val]), Split(x[test], y[test])


@dataclass
class Digits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""

    kind = "tensor"
    num_classes = 10  # known before any file is read: config checks ask it (factory.check_anomaly_class)

    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 64
    augment: dict | None = None  # read by the training loaders (data/augment.py), not here

    def load(self) -> Splits:
        seed = self.split_seed
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
        y = bunch.target.astype(np.int64)
        rest, test = _stratified_split(x, y, self.test_fraction, seed)
        train, val = _stratified_split(rest.x, rest.y, self.val_fraction / (1 - self.test_fraction), seed)
        return Splits(train, val, test, [str(c) for c in bunch.target_names])


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzip-compressed) IDX file: MNIST's own format, as published by LeCun et al."""
    import zlib

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataFileError(f"{path}: not a complete gzip file ({exc}); fetch it again") from None
    if len(data) < 4:
        raise DataFileError(f"{path}: {len(data)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        raise DataFileError(f"{path}: not an unsigned-byte IDX file (header {data[:4].hex()}; expected 0000080N)")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataFileError(f"{path}: header says shape {shape} but holds {array.size} values (truncated file?)")
    return array.reshape(shape)


def _paired(images: np.ndarray, labels: np.ndarray, image_file: Path, label_file: Path) -> None:
    if len(images) != len(labels):
        raise DataFileError(f"{image_file}: {len(images)} images but {label_file.name} has {len(labels)} labels")


@dataclass
class IdxImages:
    """MNIST-layout datasets (MNIST, Fashion-MNIST) read from the four IDX files in ``root``.

    The official test set is the test split; ``val_fraction`` of the training set is held out for
    validation; ``train_subset`` caps the training images (stratified) for quick runs."""

    kind = "tensor"
    num_classes = 10  # both sets' ten classes, known before any file is read (factory.check_anomaly_class)

    root: str = "data/mnist/raw"
    val_fraction: float = 0.1
    train_subset: int | None = None
    split_seed: int = 0
    batch_size: int = 128
    augment: dict | None = None  # read by the training loaders (data/augment.py), not here

    def files(self) -> dict[str, Path]:
        root = paths.resolve(self.root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"data.root: folder {root} does not exist; it must hold {', '.join(IDX_FILES.values())}"
            )
        found = {key: root / name for key, name in IDX_FILES.items()}
        missing = [str(p) for p in found.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"data.root: missing IDX file(s): {', '.join(missing)}")
        return found

    def load(self) -> Splits:
        seed = self.split_seed
        files = self.files()
        x_train = read_idx(files["train_images"]).astype(np.float32)[:, None] / 255.0
        y_train = read_idx(files["train_labels"]).astype(np.int64)
        x_test = read_idx(files["test_images"]).astype(np.float32)[:, None] / 255.0
        y_test = read_idx(files["test_labels"]).astype(np.int64)
        _paired(x_train, y_train, files["train_images"], files["train_labels"])
        _paired(x_test, y_test, files["test_images"], files["test_labels"])
        if self.train_subset is not None and self.train_subset < len(y_train):
            _, kept = _stratified_split(x_train, y_train, self.train_subset / len(y_train), seed)
            x_train, y_train = kept.x, kept.y
        train, val = _stratified_split(x_train, y_train, self.val_fraction, seed)
        return Splits(train, val, Split(x_test, y_test), [str(c) for c in range(int(y_train.max()) + 1)])
