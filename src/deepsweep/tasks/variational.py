"""Variational autoencoder pretraining (Kingma & Welling 2014) of any tensor family's encoder.

encoder features -> (mu, log variance) of a diagonal Gaussian q(z|x) -> z by reparametrization
(z = mu + sigma * eps, so gradients flow through the sample) -> decoder -> p(x|z). The loss is the
negative ELBO with a beta-weighted KL term (beta-VAE, Higgins et al. 2017)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.nn.generators import create_generator
from deepsweep.tasks.common import LossTask, TaskSetup

LIKELIHOODS = ("bernoulli", "gaussian")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, in closed form."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


class VariationalTask(LossTask):
    scores_anomalies = True
    score_name = "negative_elbo"
    draws_figures = True

    def __init__(
        self,
        model: Family,
        setup: TaskSetup,
        *,
        latent_dim: int = 16,
        beta: float = 1.0,
        decoder_dims: Sequence[int] = (128,),
        likelihood: str = "bernoulli",
    ) -> None:
        super().__init__(setup)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"pretrain.task.likelihood: unknown {likelihood!r}; allowed: {', '.join(LIKELIHOODS)}")
        self.encoder = model.encoder
        self.input_shape = model.input_shape
        self.to_mu = nn.Linear(model.feature_dim, latent_dim)
        self.to_logvar = nn.Linear(model.feature_dim, latent_dim)
        # Outputs are logits (Bernoulli) or means (Gaussian): the likelihood applies the link itself.
        self.decoder = create_generator("dense", latent_dim, self.input_shape, decoder_dims, setup.activation,
                                        batch_norm=False, output="linear")
        self.latent_dim, self.beta, self.likelihood = latent_dim, beta, likelihood

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output in data space: Bernoulli means (sigmoid) or Gaussian means."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def reconstruction_nll(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per input (up to a constant for the Gaussian)."""
        out, target = self.decoder(z).flatten(1), x.flatten(1)
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(1)
        return 0.5 * (out - target).pow(2).sum(1)

    def losses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.reconstruction_nll(z, x).mean(), gaussian_kl(mu, logvar).mean()


    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Per-input negative ELBO at the posterior mean: low for inputs like the training data."""
        mu, logvar = self.encode(x)
        return self.reconstruction_nll(mu, x) + self.beta * gaussian_kl(mu, logvar)

    def training_loss(self, batch) -> torch.Tensor:
        x = batch[0]
        recon, kl = self.losses(x)
        loss = self.regularization.penalized(recon + self.beta * kl, self.encoder)
        self.track("train/loss", loss, len(x))
        self.track("train/reconstruction", recon, len(x))
        self.track("train/kl", kl, len(x))
        return loss

    def validation_batch(self, batch) -> None:
        x = batch[0]
        recon, kl = self.losses(x)
        self.track("val/loss", recon + self.beta * kl, len(x))
        self.track("val/reconstruction", recon, len(x))

    def save_figures(self, out: Path, x: torch.Tensor) -> list[Path]:
        """Samples from the prior and a latent interpolation between two inputs, as PNG grids."""
        from deepsweep.plots import image_grid_png

        if len(self.input_shape) != 3:
            return []
        self.eval()
        with torch.no_grad():
            samples = self.decode(torch.randn(64, self.latent_dim, generator=torch.Generator().manual_seed(0)))
            a, b = self.encode(x[:2])[0]
            steps = torch.linspace(0, 1, 10).unsqueeze(1)
            interpolation = self.decode(a * (1 - steps) + b * steps)
        paths = [out / "samples.png", out / "interpolation.png"]
        image_grid_png(samples, paths[0], "samples from the prior", columns=8)
        image_grid_png(interpolation, paths[1], "latent interpolation", columns=10)
        return paths
