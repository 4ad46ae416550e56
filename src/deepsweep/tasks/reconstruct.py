"""Reconstruction: autoencoder pretraining of any family's encoder. Labels are never read.

One task covers the classic variants by config: undercomplete (a narrow code), denoising (masking or
Gaussian noise on the input, Vincent et al. 2008), sparse (an L1 penalty on the code, the constraint
that keeps an overcomplete code from copying its input), tied weights (the decoder uses the transposes
of the encoder's dense weights) and convolutional (a transposed-conv decoder for image encoders).
Greedy layer-wise stacking is its own task below: StackedAutoencoderTask."""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.models.mlp import dense_stack
from deepsweep.nn.generators import create_generator
from deepsweep.tasks.common import LossTask, TaskSetup

NOISES = ("none", "masking", "gaussian")
log = logging.getLogger(__name__)


def check_noise(noise: str) -> None:
    if noise not in NOISES:
        raise ValueError(f"pretrain.task.noise: unknown noise {noise!r}; allowed: {', '.join(NOISES)}")


def corrupt(x: torch.Tensor, noise: str, level: float) -> torch.Tensor:
    """Masking noise zeroes each input with probability ``level``; Gaussian noise adds N(0, level^2)."""
    check_noise(noise)
    if noise == "none" or level == 0:
        return x
    if noise == "masking":
        return x * (torch.rand_like(x) >= level)
    return x + level * torch.randn_like(x)  # gaussian


class ReconstructTask(LossTask):
    """encoder (from the family) -> decoder (an MLP: feature_dim -> decoder_dims -> input size) ->
    mean squared error against the clean input."""

    scores_anomalies = True
    score_name = "reconstruction_error"

    def __init__(
        self,
        model: Family,
        setup: TaskSetup,
        *,
        decoder: str = "dense",
        decoder_dims: Sequence[int] = (128,),
        tied: bool = False,
        sparsity: float = 0.0,
        noise: str = "none",
        noise_level: float = 0.0,
    ) -> None:
        super().__init__(setup)
        check_noise(noise)
        if sparsity < 0:
            raise ValueError(f"pretrain.task.sparsity: must be >= 0, got {sparsity}")
        self.encoder = model.encoder
        self.input_shape = model.input_shape
        if tied:
            self.decoder: nn.Module = TiedDecoder(dense_stack(model, "pretrain.task.tied=true"), setup.activation,
                                                  self.input_shape)
        else:
            self.decoder = create_generator(decoder, model.feature_dim, self.input_shape, decoder_dims, setup.activation,
                                            batch_norm=False, output="linear", key="pretrain.task",
                                            kind_key="decoder")
        overcomplete = model.feature_dim > math.prod(self.input_shape)
        if overcomplete and noise == "none" and sparsity == 0:
            log.warning("the code (%d features) is wider than the input (%d values) and nothing stops the "
                        "autoencoder from copying it: set pretrain.task.sparsity or pretrain.task.noise",
                        model.feature_dim, math.prod(self.input_shape))
        self.noise, self.noise_level, self.sparsity = noise, noise_level, sparsity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))  # every decoder here outputs the input's shape


    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Per-input reconstruction error: high where the input is unlike the training data."""
        return (self(x) - x).flatten(1).pow(2).mean(1)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, _ = batch
        code = self.encoder(corrupt(x, self.noise, self.noise_level))
        reconstruction = F.mse_loss(self.decoder(code), x)
        loss = self.regularization.penalized(reconstruction, self.encoder)
        if self.sparsity > 0:  # L1 on the code: few active units per input
            loss = loss + self.sparsity * code.abs().sum(1).mean()
        self.track("train/loss", loss, len(x))
        self.track("train/reconstruction", reconstruction, len(x))
        return loss

    def validation_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, _ = batch
        self.track("val/loss", F.mse_loss(self(x), x), len(x))


class TiedDecoder(nn.Module):
    """Decodes with the transposes of the encoder's dense weights (tied weights: half the parameters, and
    the encoder alone must carry the structure); only the decoder's biases are its own."""

    def __init__(self, linears: Sequence[nn.Linear], activation: Callable[[], nn.Module],
                 output_shape: Sequence[int]) -> None:
        super().__init__()
        # A plain list, not a ModuleList: the weights belong to the encoder and are saved with it.
        self._linears = list(reversed(linears))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(lin.in_features)) for lin in self._linears)
        self.activation = activation()
        self.output_shape = tuple(output_shape)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h = code
        for i, (lin, bias) in enumerate(zip(self._linears, self.biases)):
            h = F.linear(h, lin.weight.t(), bias)
            if i < len(self._linears) - 1:
                h = self.activation(h)
        return h.view(-1, *self.output_shape)


class StackedAutoencoderTask(LossTask):
    """Greedy layer-wise autoencoders (Bengio et al. 2007), then the unrolled stack end to end (Hinton &
    Salakhutdinov 2006), on an MLP's dense blocks.

    Epochs ``[l * epochs_per_layer, (l + 1) * epochs_per_layer)`` train block l alone as a one-layer
    (denoising) autoencoder of the frozen output of the blocks below it; the remaining epochs of
    ``pretrain.epochs`` train all blocks and the decoders, unrolled in reverse, to reconstruct the input.
    """

    keep_best_weights = False  # each phase has its own loss: their values are not comparable

    def __init__(
        self,
        model: Family,
        setup: TaskSetup,
        *,
        epochs_per_layer: int = 5,
        noise: str = "none",
        noise_level: float = 0.0,
    ) -> None:
        super().__init__(setup)
        check_noise(noise)
        if epochs_per_layer < 1:
            raise ValueError(f"pretrain.task.epochs_per_layer: must be >= 1, got {epochs_per_layer}")
        linears = dense_stack(model, "pretrain=stacked_autoencoder")
        self.encoder = model.encoder
        # The MLP encoder is Flatten followed by one dense block (linear, [norm], activation, [dropout]) per layer.
        self.blocks = [block for block in model.encoder if any(isinstance(m, nn.Linear) for m in block.modules())]
        self.decoders = nn.ModuleList(nn.Linear(lin.out_features, lin.in_features) for lin in linears)
        self.input_shape = model.input_shape
        self.epochs_per_layer = epochs_per_layer
        self.noise, self.noise_level = noise, noise_level

    @property
    def layer(self) -> int | None:
        """The block trained greedily this epoch, or None once the stack trains end to end."""
        layer = self.current_epoch // self.epochs_per_layer
        return layer if layer < len(self.blocks) else None

    def block_input(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        h = x.flatten(1)
        with torch.no_grad():  # the blocks below are frozen while block `layer` learns
            for block in self.blocks[:layer]:
                h = block(h)
        return h

    def unrolled(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for block in self.blocks:
            h = block(h)
        for decoder in reversed(self.decoders):
            h = decoder(h)
        return h.view(-1, *self.input_shape)

    def layer_loss(self, x: torch.Tensor, layer: int, noisy: bool) -> torch.Tensor:
        target = self.block_input(x, layer)
        source = corrupt(target, self.noise, self.noise_level) if noisy else target
        return F.mse_loss(self.decoders[layer](self.blocks[layer](source)), target)

    scores_anomalies = True
    score_name = "reconstruction_error"

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        return (self.unrolled(x) - x).flatten(1).pow(2).mean(1)

    def training_loss(self, batch) -> torch.Tensor:
        x = batch[0]
        layer = self.layer
        if layer is None:
            loss = F.mse_loss(self.unrolled(corrupt(x, self.noise, self.noise_level)), x)
        else:
            loss = self.layer_loss(x, layer, noisy=True)
        loss = self.regularization.penalized(loss, self.encoder)
        self.track("train/loss", loss, len(x))
        return loss

    def validation_batch(self, batch) -> None:
        x = batch[0]
        layer = self.layer
        if layer is not None:
            self.track("val/layer_loss", self.layer_loss(x, layer, noisy=False), len(x))
        # Reconstruction of the input through the whole stack: comparable from the first epoch to the last.
        self.track("val/loss", F.mse_loss(self.unrolled(x), x), len(x))

    # One optimizer for all (LossTask's): blocks outside the current phase get no gradient and so are not stepped.
