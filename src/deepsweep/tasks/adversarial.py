"""Adversarial pretraining: a GAN whose discriminator is the family's encoder plus a one-logit critic,
so the features it learns to tell real from generated inputs are what fine-tuning loads.

* vanilla (Goodfellow et al. 2014) with the non-saturating generator loss -log D(G(z));
  one-sided label smoothing (Salimans et al. 2016) puts real targets at 1 - label_smoothing.
* DCGAN (Radford et al. 2016): the same losses with model=dcgan and generator=conv.
* WGAN (Arjovsky et al. 2017): the critic's score difference estimates the Wasserstein distance;
  the critic stays Lipschitz by weight clipping (clip_value) or a gradient penalty (Gulrajani et al.
  2017, gradient_penalty = lambda), and trains n_critic steps per generator step.
* conditional (Mirza & Osindero 2014): the generator reads a one-hot label beside z; the discriminator
  is a projection discriminator (Miyato & Koyama 2018), score = critic(h) + <embed(y), h>, which works
  for any encoder because the label never has to enter it. This variant reads the training labels.
* InfoGAN (Chen et al. 2016): the generator reads, beside z, a categorical code (``categorical_code``
  categories) and ``continuous_codes`` codes uniform in [-1, 1]; a head Q on the discriminator's features
  infers them back from the generated input, and both players maximize the mutual-information bound
  E[log Q(c | G(z, c))] (``info_weight`` times the categorical cross-entropy plus ``continuous_weight``
  times the Gaussian log-likelihood of the continuous codes, unit variance). No label is read: on digits
  the categories come to stand for the classes, which evaluate measures after the best matching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.nn.generators import create_generator
from deepsweep.tasks.common import Task, TaskSetup

LOSSES = ("vanilla", "wasserstein")


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x critic(x_hat)|| - 1)^2] at random points x_hat between real and generated inputs."""
    alpha = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class AdversarialTask(Task):
    steps_by_hand = True  # discriminator and generator steps, n_critic to one
    keep_best_weights = False  # no validation loss ranks GAN epochs
    draws_figures = True
    generates_inputs = True

    def __init__(
        self,
        model: Family,
        setup: TaskSetup,  # setup.activation is the family's (discriminator's); G uses ReLU as DCGAN does
        *,
        loss: str = "vanilla",
        generator: str = "dense",
        generator_dims: Sequence[int] = (128, 256),
        latent_dim: int = 32,
        output: str = "sigmoid",
        n_critic: int = 1,
        clip_value: float | None = None,
        gradient_penalty: float = 0.0,
        label_smoothing: float = 0.0,
        conditional: bool = False,
        categorical_code: int = 0,
        continuous_codes: int = 0,
        info_weight: float = 1.0,
        continuous_weight: float = 0.1,
    ) -> None:
        super().__init__(setup)
        self.automatic_optimization = False
        if loss not in LOSSES:
            raise ValueError(f"pretrain.task.loss: unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
        if loss == "wasserstein" and clip_value is None and gradient_penalty <= 0:
            raise ValueError("pretrain.task.loss=wasserstein needs a Lipschitz constraint: set pretrain.task.clip_value "
                             "(weight clipping, e.g. 0.01) or pretrain.task.gradient_penalty (e.g. 10)")
        if loss == "vanilla" and (clip_value is not None or gradient_penalty > 0):
            raise ValueError("pretrain.task.clip_value and pretrain.task.gradient_penalty apply to loss=wasserstein")
        if not 0.0 <= label_smoothing < 0.5 or (label_smoothing > 0 and loss != "vanilla"):
            raise ValueError(f"pretrain.task.label_smoothing: must be in [0, 0.5) and applies to loss=vanilla, "
                             f"got {label_smoothing} with loss={loss}")
        if n_critic < 1:
            raise ValueError(f"pretrain.task.n_critic: must be >= 1, got {n_critic}")
        if conditional and (categorical_code or continuous_codes):
            raise ValueError("pretrain.task.categorical_code: a conditional GAN reads the labels, InfoGAN infers its "
                             "codes; set conditional=false or the codes to 0")
        if categorical_code == 1:
            raise ValueError("pretrain.task.categorical_code: one category carries no information; use 0 or >= 2")
        self.encoder = model.encoder
        self.critic = nn.Linear(model.feature_dim, 1)
        self.num_classes = model.num_classes
        self.embed = nn.Embedding(model.num_classes, model.feature_dim) if conditional else None
        self.categories, self.continuous = categorical_code, continuous_codes
        self.info_weight, self.continuous_weight = info_weight, continuous_weight
        # InfoGAN's Q: the inferred codes (categorical logits, then the continuous codes' means) from the
        # discriminator's features.
        self.q_head = (nn.Linear(model.feature_dim, categorical_code + continuous_codes)
                       if categorical_code or continuous_codes else None)
        code = latent_dim + (model.num_classes if conditional else 0) + categorical_code + continuous_codes
        self.generator = create_generator(generator, code, model.input_shape, generator_dims, output=output)
        self.loss, self.latent_dim, self.n_critic = loss, latent_dim, n_critic
        self.clip_value, self.gp_weight, self.label_smoothing = clip_value, gradient_penalty, label_smoothing
        self.conditional = conditional
        self.history: dict[str, list[tuple[int, float]]] = {}

    def discriminator_parameters(self) -> list[nn.Parameter]:
        parts = [self.encoder, self.critic] + [m for m in (self.embed, self.q_head) if m is not None]
        return [p for part in parts for p in part.parameters()]

    @property
    def infers_categories(self) -> bool:
        """InfoGAN with a categorical code: ``categories(x)`` tells each input's inferred category."""
        return self.categories > 0

    def draw_codes(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoGAN's codes for ``n`` samples: categories uniform, continuous codes uniform in [-1, 1]."""
        category = torch.randint(max(self.categories, 1), (n,), generator=generator).to(self.device)
        continuous = (torch.rand(n, self.continuous, generator=generator) * 2 - 1).to(self.device)
        return category, continuous

    def code_input(self, category: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        parts = [F.one_hot(category, self.categories).float()] if self.categories else []
        return torch.cat([*parts, continuous], dim=1)

    def info_loss(self, fake: torch.Tensor, category: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        """-(the mutual-information bound): how badly Q infers the codes a generated input was made from.
        Cross-entropy of the category, and for the continuous codes the Gaussian negative log-likelihood
        with unit variance, 0.5 (c - mu)^2, its constant dropped."""
        inferred = self.q_head(self.encoder(fake))
        loss = fake.new_zeros(())
        if self.categories:
            loss = loss + self.info_weight * F.cross_entropy(inferred[:, : self.categories], category)
        if self.continuous:
            loss = loss + self.continuous_weight * 0.5 * (inferred[:, self.categories :] - continuous).pow(2).sum(1).mean()
        return loss

    def categories_of(self, x: torch.Tensor) -> torch.Tensor:
        """The category Q infers for each input (real ones at evaluation)."""
        return self.q_head(self.encoder(x))[:, : self.categories].argmax(dim=1)

    def score(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator's logit (vanilla) or critic value (Wasserstein) per input."""
        h = self.encoder(x)
        out = self.critic(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out

    def generate(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 codes: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        if self.conditional:
            if y is None:  # every class in turn
                y = torch.arange(n, device=self.device) % self.num_classes
            z = torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], dim=1)
        if self.q_head is not None:
            z = torch.cat([z, self.code_input(*(codes or self.draw_codes(n, generator)))], dim=1)
        return self.generator(z)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        s_real, s_fake = self.score(real, y), self.score(fake, y)
        if self.loss == "wasserstein":
            loss = s_fake.mean() - s_real.mean()
            if self.gp_weight > 0:
                loss = loss + self.gp_weight * gradient_penalty(lambda x: self.score(x, y), real, fake)
            return loss
        real_target = torch.full_like(s_real, 1.0 - self.label_smoothing)
        return (F.binary_cross_entropy_with_logits(s_real, real_target)
                + F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake)))

    def generator_loss(self, fake: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        s_fake = self.score(fake, y)
        if self.loss == "wasserstein":
            return -s_fake.mean()
        # Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))), whose gradient
        # vanishes exactly when the generator is still bad.
        return F.binary_cross_entropy_with_logits(s_fake, torch.ones_like(s_fake))

    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = batch[0], batch[1]
        y = labels if self.conditional else None
        opt_d, opt_g = self.optimizers()
        n = len(real)

        codes = self.draw_codes(n) if self.q_head is not None else None
        fake = self.generate(n, y, codes=codes).detach()
        d_loss = self.regularization.penalized(self.discriminator_loss(real, fake, y), self.encoder)
        if codes is not None:  # Q (and the features it reads) learn to infer the codes of generated inputs
            info = self.info_loss(fake, *codes)
            d_loss = d_loss + info
            self.track("train/info_loss", info, n)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        if self.clip_value is not None:
            with torch.no_grad():
                for p in self.discriminator_parameters():
                    p.clamp_(-self.clip_value, self.clip_value)
        self.track("train/d_loss", d_loss, n)

        if (batch_idx + 1) % self.n_critic == 0:
            codes = self.draw_codes(n) if self.q_head is not None else None
            fake = self.generate(n, y, codes=codes)
            g_loss = self.generator_loss(fake, y)
            if codes is not None:  # the generator makes its codes easy to infer
                g_loss = g_loss + self.info_loss(fake, *codes)
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
            self.track("train/g_loss", g_loss, n)

    def validation_step(self, batch, batch_idx: int) -> None:
        real, labels = batch[0], batch[1]
        y = labels if self.conditional else None
        with torch.no_grad():
            s_real, s_fake = self.score(real, y), self.score(self.generate(len(real), y), y)
        if self.loss == "wasserstein":
            self.track("val/wasserstein_estimate", s_real.mean() - s_fake.mean(), len(real))
        else:  # how often the discriminator tells real from generated on held-out inputs
            accuracy = ((s_real > 0).float().mean() + (s_fake < 0).float().mean()) / 2
            self.track("val/d_accuracy", accuracy, len(real))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.record_history("train/d_loss", "train/g_loss")
        for scheduler in self.lr_schedulers() or []:
            scheduler.step()

    def lr_schedulers(self):
        schedulers = super().lr_schedulers()
        return schedulers if isinstance(schedulers, list) else [s for s in [schedulers] if s is not None]

    def configure_optimizers(self):
        opt_d = self.optimizer_factory(self.discriminator_parameters())
        opt_g = self.optimizer_factory(self.generator.parameters())
        if self.scheduler_factory is None:
            return [opt_d, opt_g]
        schedulers = [self.scheduler_factory(opt_d), self.scheduler_factory(opt_g)]
        if any(isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) for s in schedulers):
            raise ValueError("scheduler=plateau steps on a validation loss, which adversarial training has not; "
                             "use step, exponential or cosine")
        return [opt_d, opt_g], schedulers

    def save_figures(self, out: Path, x: torch.Tensor) -> list[Path]:
        """Generated samples (one row per class when conditional) and the two losses per epoch."""
        from deepsweep.plots import curves_png, image_grid_png

        paths = []
        if len(self.generator.output_shape) == 3:
            self.eval()
            rng = torch.Generator().manual_seed(0)
            if self.conditional:
                columns = 8
                y = torch.arange(self.num_classes, device=self.device).repeat_interleave(columns)
                title = "generated samples, one row per class"
            else:
                columns, y, title = 8, None, "generated samples"
            with torch.no_grad():
                samples = self.generate(64 if y is None else len(y), y, generator=rng)
            paths.append(out / "samples.png")
            image_grid_png(samples, paths[-1], title, columns=columns)
        if self.categories and len(self.generator.output_shape) == 3:
            # Latent traversal: a row per category, the first continuous code from -2 to 2 along the row
            # (beyond the [-1, 1] trained on), z and the other codes fixed.
            columns = 8
            category = torch.arange(self.categories, device=self.device).repeat_interleave(columns)
            continuous = torch.zeros(len(category), self.continuous, device=self.device)
            if self.continuous:
                continuous[:, 0] = torch.linspace(-2, 2, columns, device=self.device).repeat(self.categories)
            z = torch.randn(1, self.latent_dim, generator=torch.Generator().manual_seed(0)).to(self.device)
            with torch.no_grad():
                grid = self.generator(torch.cat([z.expand(len(category), -1), self.code_input(category, continuous)], 1))
            paths.append(out / "latent_traversal.png")
            image_grid_png(grid, paths[-1], "a row per category; continuous code 1 from -2 to 2", columns=columns)
        if self.history:
            paths.append(out / "gan_losses.png")
            curves_png({"gan": self.history}, paths[-1], "discriminator and generator loss")
        return paths
