"""U-Net (Ronneberger et al. 2015): a contracting path of conv blocks and 2x2 max pooling, an expanding path
of 2x2 transposed convs, each followed by the contracting block of the same size (the skip connection,
concatenated) and a conv block, and a 1x1 conv giving every pixel its class scores: ``(N, classes, H, W)``.

``encoder`` is the contracting path; called on a batch it gives the bottleneck, flattened (``feature_dim``
values), which is what the autoencoders pretrain and fine-tuning loads. The skips are its ``levels(x)``."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.models.cnn import _check_halvable, _image_shape
from deepsweep.nn.layers import Layers


def conv_block(layers: Layers, in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convs, each followed by [batch norm and] the activation: the paper's block, with padding."""
    return nn.Sequential(layers.conv(in_channels, out_channels, 3), layers.conv(out_channels, out_channels, 3))


class ContractingPath(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], layers: Layers) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.blocks = nn.ModuleList(conv_block(layers, a, b) for a, b in zip(widths, widths[1:]))
        self.pool = nn.MaxPool2d(2)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature map of every level, full size first, the bottleneck last."""
        out = []
        for i, block in enumerate(self.blocks):
            x = block(self.pool(x) if i else x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels(x)[-1].flatten(1)


class ExpandingStep(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: Layers) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.block = conv_block(layers, 2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        # An odd size halved and doubled comes back a pixel short: pad it to the skip's size.
        x = F.pad(x, (0, skip.shape[-1] - x.shape[-1], 0, skip.shape[-2] - x.shape[-2]))
        return self.block(torch.cat([skip, x], dim=1))


class UNet(Family):
    """``channels``: the width of each level, from full size to the bottleneck (each level halves the size)."""

    target = "mask"
    convolutional = True

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32, 64),
                 layers: Layers | None = None) -> None:
        super().__init__(tuple(input_shape), num_classes)
        layers = layers or Layers()
        c, h, w = _image_shape(input_shape, "unet")
        if len(channels) < 2:
            raise ValueError(f"model.channels: a U-Net needs at least two levels, got {list(channels)}")
        for _ in channels[1:]:
            _check_halvable(h, w, input_shape, f"{len(channels) - 1} poolings")
            h, w = h // 2, w // 2
        self.encoder = ContractingPath(c, channels, layers)
        self.feature_dim = channels[-1] * h * w
        self.expanding = nn.ModuleList(ExpandingStep(a, b, layers)
                                       for a, b in zip(channels[::-1], channels[::-1][1:]))
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder.levels(x)
        for step, skip in zip(self.expanding, reversed(skips)):
            x = step(x, skip)
        return self.head(x)
