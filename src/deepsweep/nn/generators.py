"""Networks that map a code vector back to input space: GAN generators and autoencoder decoders.

A family's encoder maps inputs to ``feature_dim`` features; these modules go the other way, so any
objective that needs to produce inputs (reconstruct, adversarial) builds one from a config."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

OUTPUTS = ("sigmoid", "linear")


def _output_layer(output: str, key: str) -> nn.Module:
    if output not in OUTPUTS:
        raise ValueError(f"{key}: unknown output {output!r}; allowed: {', '.join(OUTPUTS)}")
    # sigmoid for inputs scaled to [0, 1] (every image source); linear for real-valued inputs.
    return nn.Sigmoid() if output == "sigmoid" else nn.Identity()


class DenseGenerator(nn.Module):
    """code -> dense layers (batch norm, activation) -> flat output reshaped to ``output_shape``."""

    def __init__(
        self,
        in_features: int,
        output_shape: Sequence[int],
        hidden_dims: Sequence[int] = (128, 256),
        activation: Callable[[], nn.Module] = nn.ReLU,
        batch_norm: bool = True,
        output: str = "sigmoid",
        key: str = "pretrain.task.output",
    ) -> None:
        super().__init__()
        self.output_shape = tuple(output_shape)
        parts: list[nn.Module] = []
        width = in_features
        for hidden in hidden_dims:
            parts += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(), activation()]
            width = hidden
        parts += [nn.Linear(width, math.prod(self.output_shape)), _output_layer(output, key)]
        self.net = nn.Sequential(*parts)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)


class ConvGenerator(nn.Module):
    """The DCGAN generator (Radford et al. 2016): project the code to a small ``channels[0]`` feature map,
    then one transposed conv (kernel 4, stride 2) per ``channels`` entry, each doubling height and width,
    with batch norm and ReLU between; the last one outputs the image's channels. Sizes that are not a
    power-of-2 multiple are cropped (an odd 7x7 start for 28x28 MNIST is exact: 7 -> 14 -> 28)."""

    def __init__(
        self,
        in_features: int,
        output_shape: Sequence[int],
        channels: Sequence[int] = (64, 32),
        output: str = "sigmoid",
        key: str = "pretrain.task.output",
    ) -> None:
        super().__init__()
        if len(output_shape) != 3:
            raise ValueError(
                f"a convolutional generator/decoder needs image inputs (channels, height, width); "
                f"the data gives shape {tuple(output_shape)}; use the dense one"
            )
        if not channels:
            raise ValueError("the convolutional generator/decoder needs at least one channels entry, e.g. [64, 32]")
        self.output_shape = tuple(output_shape)
        c, h, w = self.output_shape
        scale = 2 ** len(channels)
        self.start = (channels[0], -(-h // scale), -(-w // scale))
        self.project = nn.Sequential(
            nn.Linear(in_features, math.prod(self.start)), nn.BatchNorm1d(math.prod(self.start)), nn.ReLU()
        )
        ups: list[nn.Module] = []
        widths = [*channels, c]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            ups.append(nn.ConvTranspose2d(a, b, kernel_size=4, stride=2, padding=1))
            if i < len(channels) - 1:
                ups += [nn.BatchNorm2d(b), nn.ReLU()]
        ups.append(_output_layer(output, key))
        self.net = nn.Sequential(*ups)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = self.output_shape
        return self.net(self.project(z).view(-1, *self.start))[:, :, :h, :w]


GENERATORS = ("dense", "conv")


def create_generator(kind: str, in_features: int, output_shape: Sequence[int], widths: Sequence[int],
                     activation: Callable[[], nn.Module] = nn.ReLU, batch_norm: bool = True,
                     output: str = "sigmoid", key: str = "pretrain.task", kind_key: str = "generator") -> nn.Module:
    """``kind`` dense: ``widths`` are hidden widths; conv: ``widths`` are the transposed convs' channels."""
    if kind == "dense":
        return DenseGenerator(in_features, output_shape, widths, activation, batch_norm, output, f"{key}.output")
    if kind == "conv":
        return ConvGenerator(in_features, output_shape, widths, output, f"{key}.output")
    raise ValueError(f"{key}.{kind_key}: unknown kind {kind!r}; allowed: {', '.join(GENERATORS)}")


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm and a skip connection (CycleGAN's generator body)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.InstanceNorm2d(channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ImageTranslator(nn.Module):
    """An image to an image of the same shape (the generators of CycleGAN, Zhu et al. 2017, scaled down for
    small images): a 3x3 conv to ``channels[0]``, stride-2 convs down through ``channels``, ``residual_blocks``
    residual blocks, transposed convs back up, a 3x3 conv to the input's channels and a sigmoid (images in
    [0, 1]); instance norm and ReLU after every conv but the last."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int] = (32, 64), residual_blocks: int = 2) -> None:
        super().__init__()
        c, side = image_shape[0], min(image_shape[1:])
        for _ in channels[1:]:
            side = -(-side // 2)  # a stride-2 conv with padding 1
        if side < 2:  # instance norm needs more than one pixel per channel
            raise ValueError(f"pretrain.task.translator_channels: {len(channels) - 1} halvings shrink a "
                             f"{image_shape[1]}x{image_shape[2]} image to {side} pixel; use fewer entries")
        norm_relu = lambda width: [nn.InstanceNorm2d(width), nn.ReLU()]  # noqa: E731
        parts: list[nn.Module] = [nn.Conv2d(c, channels[0], 3, padding=1), *norm_relu(channels[0])]
        for a, b in zip(channels, channels[1:]):
            parts += [nn.Conv2d(a, b, 3, stride=2, padding=1), *norm_relu(b)]
        parts += [ResidualBlock(channels[-1]) for _ in range(residual_blocks)]
        for a, b in zip(channels[::-1], channels[::-1][1:]):
            parts += [nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1), *norm_relu(b)]
        self.body = nn.Sequential(*parts)
        self.out = nn.Conv2d(channels[0], c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        # An odd size that halving rounds up comes back a pixel larger: cut it to the input's.
        h = nn.functional.pad(h, (0, x.shape[-1] - h.shape[-1], 0, x.shape[-2] - h.shape[-2]))
        return torch.sigmoid(self.out(h))
