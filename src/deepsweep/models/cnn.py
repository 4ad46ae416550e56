"""Convolutional families: LeNet-style, VGG-style (stacked 3x3), Inception-style (parallel branches), a small
ResNet and the DCGAN discriminator."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from deepsweep.models.base import Family
from deepsweep.nn.layers import Layers


def _image_shape(input_shape: Sequence[int], family: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model={family} needs image inputs (channels, height, width); the data gives shape {tuple(input_shape)}"
        )
    return tuple(input_shape)  # type: ignore[return-value]


def _check_halvable(h: int, w: int, input_shape, blocks: str) -> None:
    """A block that halves height and width needs at least 2 pixels of each."""
    if min(h, w) < 2:
        raise ValueError(f"model.channels: {blocks} shrink a {input_shape[1]}x{input_shape[2]} input below 1 pixel; "
                         "use fewer channels entries")


class LeNet(Family):
    """conv blocks, each followed by 2x2 max pooling, then dense layers (LeCun et al. 1998, modernised:
    'same' padding so small inputs survive, any activation, batch norm and dropout by config)."""

    convolutional = True

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (6, 16),
        kernel_size: int = 5,
        fc_dims: Sequence[int] = (120, 84),
        layers: Layers | None = None,
    ) -> None:
        super().__init__(tuple(input_shape), num_classes)
        layers = layers or Layers()
        c, h, w = _image_shape(input_shape, "lenet")
        convs: list[nn.Module] = []
        for out in channels:
            _check_halvable(h, w, input_shape, f"{len(channels)} conv+pool blocks")
            convs += [layers.conv(c, out, kernel_size), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        dense: list[nn.Module] = [nn.Flatten()]
        width = c * h * w
        for hidden in fc_dims:
            dense.append(layers.dense(width, hidden))
            width = hidden
        self.encoder = nn.Sequential(*convs, *dense)
        self.feature_dim = width
        self.head = layers.linear(width, num_classes)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a skip connection (He et al. 2016); a 1x1 conv projects the skip when the
    shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, layers: Layers) -> None:
        super().__init__()
        self.conv1 = layers.conv(in_channels, out_channels, 3, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = layers.norm2d(out_channels)
        self.act = layers.elementwise_activation()
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride), layers.norm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + self.skip(x))


class ResNet(Family):
    """A stem convolution, then stages of residual basic blocks (He et al. 2016), each stage after the first
    halving the size with a stride-2 block, then global average pooling."""

    convolutional = True

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64),
        blocks_per_stage: Sequence[int] = (1, 1, 1),
        layers: Layers | None = None,
    ) -> None:
        super().__init__(tuple(input_shape), num_classes)
        layers = layers or Layers()
        if len(channels) != len(blocks_per_stage):
            raise ValueError(
                f"model.blocks_per_stage: needs one entry per model.channels entry ({len(channels)}), "
                f"got {len(blocks_per_stage)}"
            )
        c, _, _ = _image_shape(input_shape, "resnet")
        stages: list[nn.Module] = [layers.conv(c, channels[0], 3)]
        c = channels[0]
        for i, (out, n_blocks) in enumerate(zip(channels, blocks_per_stage)):
            for b in range(n_blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                stages.append(BasicBlock(c, out, stride, layers))
                c = out
        self.encoder = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), layers.dropout())
        self.feature_dim = c
        self.head = layers.linear(c, num_classes)


class DCGANDiscriminator(Family):
    """The DCGAN discriminator as a classifier family (Radford et al. 2016): no pooling, each 4x4 conv with
    stride 2 halves height and width, batch norm after every conv but the first (``batch_norm``, part of the
    architecture), then the flattened feature map. Pair with activation=leaky_relu as the paper does. As a
    family it is what a GAN's discriminator pretrains (pretrain=dcgan) and what fine-tuning then loads."""

    convolutional = True

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        batch_norm: bool = True,
        layers: Layers | None = None,
    ) -> None:
        super().__init__(tuple(input_shape), num_classes)
        layers = layers or Layers()
        c, h, w = _image_shape(input_shape, "dcgan")
        parts: list[nn.Module] = []
        for i, out in enumerate(channels):
            _check_halvable(h, w, input_shape, f"{len(channels)} stride-2 convs")
            parts.append(nn.Conv2d(c, out, kernel_size=4, stride=2, padding=1))
            if batch_norm and i > 0:
                parts.append(nn.BatchNorm2d(out))
            parts.append(layers.elementwise_activation())
            c, h, w = out, h // 2, w // 2
        self.encoder = nn.Sequential(*parts, nn.Flatten(), layers.dropout())
        self.feature_dim = c * h * w
        self.head = layers.linear(self.feature_dim, num_classes)


class VGG(Family):
    """VGG-style CNN (Simonyan & Zisserman 2015): stages of ``convs_per_stage`` stacked 3x3 convs (two 3x3
    convs see what one 5x5 sees, with fewer weights and one more nonlinearity), each stage closed by 2x2 max
    pooling and wider than the last, then dense layers. Sized here for 8x8 and 28x28 inputs."""

    convolutional = True

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        convs_per_stage: int = 2,
        fc_dims: Sequence[int] = (128,),
        layers: Layers | None = None,
    ) -> None:
        super().__init__(tuple(input_shape), num_classes)
        layers = layers or Layers()
        c, h, w = _image_shape(input_shape, "vgg")
        convs: list[nn.Module] = []
        for out in channels:
            _check_halvable(h, w, input_shape, f"{len(channels)} pooled stages")
            for _ in range(convs_per_stage):
                convs.append(layers.conv(c, out, 3))
                c = out
            convs.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        dense: list[nn.Module] = [nn.Flatten()]
        width = c * h * w
        for hidden in fc_dims:
            dense.append(layers.dense(width, hidden))
            width = hidden
        self.encoder = nn.Sequential(*convs, *dense)
        self.feature_dim = width
        self.head = layers.linear(width, num_classes)


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels (Szegedy et al. 2015, the block with dimension
    reductions): 1x1; 1x1 then 3x3; 1x1 then 5x5; 3x3 max pool then 1x1. Each branch puts out a quarter of
    ``out_channels``; the 1x1 reductions before the 3x3 and 5x5 convs halve that again, which is what keeps
    the wide convs cheap."""

    def __init__(self, in_channels: int, out_channels: int, layers: Layers) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"model.channels: {out_channels} is not divisible by 4 (an inception block's "
                             "four branches share its output channels)")
        branch = out_channels // 4
        reduced = max(1, branch // 2)
        self.branches = nn.ModuleList([
            layers.conv(in_channels, branch, 1),
            nn.Sequential(layers.conv(in_channels, reduced, 1), layers.conv(reduced, branch, 3)),
            nn.Sequential(layers.conv(in_channels, reduced, 1), layers.conv(reduced, branch, 5)),
            nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), layers.conv(in_channels, branch, 1)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class Inception(Family):
    """Inception-style CNN (GoogLeNet, Szegedy et al. 2015, small): a 3x3 conv stem, then one inception block
    per ``channels`` entry, each followed by 2x2 max pooling, then global average pooling (no large dense
    layer, as in GoogLeNet)."""

    convolutional = True

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        stem_channels: int = 32,
        channels: Sequence[int] = (64, 128),
        layers: Layers | None = None,
    ) -> None:
        super().__init__(tuple(input_shape), num_classes)
        layers = layers or Layers()
        c, h, w = _image_shape(input_shape, "inception")
        parts: list[nn.Module] = [layers.conv(c, stem_channels, 3)]
        c = stem_channels
        for out in channels:
            _check_halvable(h, w, input_shape, f"{len(channels)} pooled blocks")
            parts += [InceptionBlock(c, out, layers), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        self.encoder = nn.Sequential(*parts, nn.AdaptiveAvgPool2d(1), nn.Flatten(), layers.dropout())
        self.feature_dim = c
        self.head = layers.linear(c, num_classes)
