"""Segmentation data: an image and a class per pixel (``y``: (N, H, W) int64, 0 = background).

* ``SyntheticShapes``: circles, squares and triangles on a noisy, unevenly lit background, drawn from
  ``split_seed`` (no download). A pixel's class depends on the shape it belongs to, not on its brightness
  alone: every shape is drawn at a random intensity, so thresholding cannot segment it.
* ``MnistSegmentation``: MNIST digits on a noisy or striped background; the mask is the digit's pixels
  (``labels: binary``) or those pixels labelled with the digit (``labels: digit``: 11 classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepsweep.data.sources import IdxImages, Split, Splits, random_split, read_idx

SHAPES = ("background", "circle", "square", "triangle")
BACKGROUNDS = ("noise", "stripes")
LABELS = ("binary", "digit")


def draw_shape(mask: np.ndarray, shape: int, rng: np.random.Generator) -> np.ndarray:
    """The pixels (a boolean image) of one shape of class ``shape`` at a random place and size."""
    size = mask.shape[0]
    radius = rng.uniform(size / 10, size / 5)
    cy, cx = rng.uniform(radius, size - radius, size=2)
    rows, cols = np.mgrid[:size, :size] + 0.5
    if shape == 1:  # circle
        return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
    if shape == 2:  # square, axis-aligned
        return (np.abs(rows - cy) <= radius * 0.85) & (np.abs(cols - cx) <= radius * 0.85)
    # triangle pointing up: below the two slanted sides, above the base
    top, base = cy - radius, cy + radius * 0.8
    half_width = (rows - top) / (base - top) * radius
    return (rows >= top) & (rows <= base) & (np.abs(cols - cx) <= half_width)


@dataclass
class SyntheticShapes:
    """``num_samples`` images of ``size`` x ``size`` pixels, each with 1..``max_shapes`` shapes (later ones on
    top), Gaussian pixel noise of std ``noise`` and a random linear light gradient."""

    kind = "tensor"
    target = "mask"
    size: int = 32
    num_samples: int = 3000
    max_shapes: int = 3
    noise: float = 0.1
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 64

    def load(self) -> Splits:
        if self.size < 8:
            raise ValueError(f"data.size: {self.size} pixels is too small to draw shapes in; use 8 or more")
        rng = np.random.default_rng(self.split_seed)
        x = np.zeros((self.num_samples, 1, self.size, self.size), dtype=np.float32)
        y = np.zeros((self.num_samples, self.size, self.size), dtype=np.int64)
        ramp = np.linspace(-1, 1, self.size, dtype=np.float32)
        for i in range(self.num_samples):
            gy, gx = rng.uniform(-0.15, 0.15, size=2)
            image = 0.25 + gy * ramp[:, None] + gx * ramp[None, :]
            for _ in range(int(rng.integers(1, self.max_shapes + 1))):
                shape = int(rng.integers(1, len(SHAPES)))
                pixels = draw_shape(y[i], shape, rng)
                image = np.where(pixels, rng.uniform(0.5, 1.0), image)
                y[i][pixels] = shape
            x[i, 0] = np.clip(image + rng.normal(0, self.noise, image.shape), 0, 1)
        train, val, test = random_split(x, y, self.val_fraction, self.test_fraction, self.split_seed)
        return Splits(train, val, test, list(SHAPES))


def background(kind: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` backgrounds in [0, 0.6]: uniform noise, or stripes of a random angle and period plus noise."""
    if kind not in BACKGROUNDS:
        raise ValueError(f"data.background: unknown background {kind!r}; allowed: {', '.join(BACKGROUNDS)}")
    noise = rng.uniform(0, 0.3, size=(n, size, size)).astype(np.float32)
    if kind == "noise":
        return noise * 2
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    angle, period, phase = rng.uniform(0, np.pi, n), rng.uniform(3, 8, n), rng.uniform(0, 2 * np.pi, n)
    along = rows[None] * np.cos(angle)[:, None, None] + cols[None] * np.sin(angle)[:, None, None]
    stripes = 0.15 * (1 + np.sin(2 * np.pi * along / period[:, None, None] + phase[:, None, None]))
    return (stripes + noise).astype(np.float32)


@dataclass
class MnistSegmentation(IdxImages):
    """MNIST (the four IDX files in ``root``) with each digit over a ``background``; a pixel belongs to the
    digit where the original image is above ``threshold``. The official test set is the test split;
    ``train_subset`` and ``test_subset`` cap the images (the first ones, in file order)."""

    target = "mask"
    root: str = "data/mnist/raw"
    background: str = "noise"
    labels: str = "binary"
    threshold: float = 0.5
    test_subset: int | None = None

    def _composite(self, images: np.ndarray, digits: np.ndarray, rng: np.random.Generator) -> Split:
        ink = images.astype(np.float32) / 255.0
        scene = np.maximum(background(self.background, len(ink), ink.shape[-1], rng), ink)
        mask = (ink > self.threshold).astype(np.int64)
        if self.labels == "digit":
            mask *= digits.astype(np.int64)[:, None, None] + 1
        return Split(scene[:, None], mask)

    def load(self) -> Splits:
        if self.labels not in LABELS:
            raise ValueError(f"data.labels: unknown labels {self.labels!r}; allowed: {', '.join(LABELS)}")
        files = self.files()
        train_images, train_digits = read_idx(files["train_images"]), read_idx(files["train_labels"])
        test_images, test_digits = read_idx(files["test_images"]), read_idx(files["test_labels"])
        keep = self.train_subset or len(train_images)
        # A stream per file: the test backgrounds stay the same whatever train_subset is.
        train = self._composite(train_images[:keep], train_digits[:keep], np.random.default_rng([self.split_seed, 0]))
        kept = self.test_subset or len(test_images)
        test = self._composite(test_images[:kept], test_digits[:kept], np.random.default_rng([self.split_seed, 1]))
        n_val = round(self.val_fraction * len(train.x))
        val = Split(train.x[:n_val], train.y[:n_val])
        train = Split(train.x[n_val:], train.y[n_val:])
        names = ["background", "digit"] if self.labels == "binary" else ["background", *map(str, range(10))]
        return Splits(train, val, test, names)
