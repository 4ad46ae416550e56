"""Image augmentation of training batches, on the fly and on whatever device the batch is on.

``data.augment`` (image data options) turns it on: random shifts (zero padded), rotations, horizontal flips
and cutout (DeVries & Taylor 2017). Only the training loaders of pretrain and finetune augment; validation,
test, the linear probe and evaluation read the images as they are. Every draw comes from the loader's own
generator, seeded from the run's seed apart from its shuffle order: a run repeats exactly, and turning
augmentation on leaves the order of the batches as it was."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch.nn import functional as F

KEYS = ("shift", "rotate", "hflip", "cutout")


@dataclass(frozen=True)
class Augment:
    """``shift``: largest translation in pixels, each axis drawn from -shift..shift; ``rotate``: largest
    rotation in degrees, drawn uniformly from [-rotate, rotate]; ``hflip``: mirror left-right with
    probability 1/2 (for images whose mirror is still of the class: clothes, not digits); ``cutout``: side
    in pixels of a square set to 0 at a random centre (it may reach past the border)."""

    shift: int = 0
    rotate: float = 0.0
    hflip: bool = False
    cutout: int = 0

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate or self.hflip or self.cutout)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A batch (N, C, H, W) transformed, each image by its own draws."""
        n, _, h, w = x.shape
        if self.shift or self.rotate or self.hflip:
            angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.rotate)
            flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
            dx, dy = (torch.randint(-self.shift, self.shift + 1, (2, n), generator=generator).float()
                      if self.shift else torch.zeros(2, n))
            cos, sin = angle.cos(), angle.sin()
            # Where each output pixel reads from, in [-1, 1] coordinates (affine_grid's): rotate, mirror,
            # then shift by whole pixels (2 / width per pixel), which bilinear sampling reads exactly.
            theta = torch.stack([torch.stack([cos * flip, -sin, -2 * dx / w], 1),
                                 torch.stack([sin * flip, cos, -2 * dy / h], 1)], 1).to(x.device, x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.cutout:
            top = torch.randint(h, (n,), generator=generator) - self.cutout // 2
            left = torch.randint(w, (n,), generator=generator) - self.cutout // 2
            rows = torch.arange(h).unsqueeze(0) - top.unsqueeze(1)  # (n, h): row - top
            cols = torch.arange(w).unsqueeze(0) - left.unsqueeze(1)
            inside = ((rows >= 0) & (rows < self.cutout)).unsqueeze(2) & ((cols >= 0) & (cols < self.cutout)).unsqueeze(1)
            x = x * (~inside).unsqueeze(1).to(x.device, x.dtype)
        return x


def augmentation(data_cfg: Mapping[str, Any]) -> Augment | None:
    """The training loaders' augmentation from ``data.augment`` (None where the option has none, or all off)."""
    node = data_cfg.get("augment")
    if not node:
        return None
    augment = Augment(**{key: node[key] for key in KEYS if key in node})
    if not augment.active:
        return None
    from deepsweep.kinds import declared_target

    target = declared_target(str(data_cfg.get("_target_")))
    if target != "class":
        from deepsweep.errors import ConfigError

        raise ConfigError(f"data.augment: data={data_cfg.get('name')} labels each input with a {target}, which "
                          "augmenting the images alone would misalign; set every data.augment field off")
    return augment
