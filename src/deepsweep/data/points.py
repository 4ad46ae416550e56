"""2-D point sets generated from a seed: the ring of Gaussians that GAN papers use to show mode collapse
(Metz et al. 2017, "Unrolled GANs"; Srivastava et al. 2017, VEEGAN; Gulrajani et al. 2017, WGAN-GP).

No download: ``prepare`` draws the points from ``split_seed``, so every run of a config sees the same set. The
label of a point is the mode it was drawn from; the modes' centres and standard deviation go into
``meta.json``, where a generative task reads them to count the modes its samples cover
(``metrics.mode_coverage``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepsweep.data.sources import Split, Splits


@dataclass
class GaussianRing:
    """``modes`` Gaussians of standard deviation ``std`` centred evenly on a circle of ``radius`` (ranges:
    ``constraints.RULES``, checked before anything runs)."""

    kind = "tensor"

    modes: int = 8
    radius: float = 2.0
    std: float = 0.02
    num_train: int = 10000
    num_val: int = 1000
    num_test: int = 1000
    split_seed: int = 0
    batch_size: int = 256

    @property
    def num_classes(self) -> int:  # a class per mode, known before any point is drawn
        return self.modes

    def centers(self) -> np.ndarray:
        angles = 2 * math.pi * np.arange(self.modes) / self.modes
        return (self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)

    def load(self) -> tuple[Splits, dict]:
        rng = np.random.default_rng(self.split_seed)
        centers = self.centers()

        def draw(n: int) -> Split:
            y = rng.integers(0, self.modes, size=n)
            x = centers[y] + self.std * rng.standard_normal((n, 2)).astype(np.float32)
            return Split(x.astype(np.float32), y.astype(np.int64))

        splits = Splits(draw(self.num_train), draw(self.num_val), draw(self.num_test),
                        [f"mode {i}" for i in range(self.modes)])
        return splits, {"modes": centers.tolist(), "mode_std": self.std}
