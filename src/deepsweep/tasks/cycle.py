"""CycleGAN (Zhu et al. 2017): translation between two image domains from unpaired examples.

Domain A is the data; domain B is the same data through a fixed transform (``domain``: ``invert`` the
intensities, or ``rotate`` a quarter turn), each batch paired with a *different* batch's transformed
images (the batch rolled by half), so no image ever meets its own counterpart. Two translators (A -> B,
B -> A: ``nn.generators.ImageTranslator``) and two discriminators; the discriminator of domain A is the
family's encoder plus a one-score head, so its features are what fine-tuning loads, as with every GAN here.

Losses as the paper's: least-squares adversarial losses (LSGAN), the cycle-consistency loss
``|F(G(a)) - a| + |G(F(b)) - b|`` (L1) weighted by ``cycle_weight``, the identity loss ``|G(b) - b| + |F(a) - a|``
weighted by ``identity_weight``. Not here: the paper's pool of 50 earlier fakes for the discriminators.
The pretrain stage saves the test images translated back from domain B (``translation_scores``), which
evaluate labels with the fine-tuned classifier: how much of each digit survives the round trip through B.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.nn.generators import ImageTranslator
from deepsweep.tasks.common import Task, TaskSetup

DOMAINS = ("invert", "rotate")


def to_domain_b(x: torch.Tensor, domain: str) -> torch.Tensor:
    """The fixed transform that makes domain B of images ``x`` (N, C, H, W) in [0, 1]."""
    return 1.0 - x if domain == "invert" else torch.rot90(x, 1, dims=(2, 3))


def _fresh_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its own, newly initialized weights."""
    twin = copy.deepcopy(module)
    for part in twin.modules():
        if hasattr(part, "reset_parameters"):
            part.reset_parameters()
    return twin


class CycleGANTask(Task):
    steps_by_hand = True  # discriminators' and translators' steps
    keep_best_weights = False
    draws_figures = True
    translates_domains = True

    def __init__(self, model: Family, setup: TaskSetup, *, domain: str = "invert",
                 translator_channels: Sequence[int] = (32, 64), residual_blocks: int = 2,
                 cycle_weight: float = 10.0, identity_weight: float = 5.0) -> None:
        super().__init__(setup)
        self.automatic_optimization = False
        if domain not in DOMAINS:
            raise ValueError(f"pretrain.task.domain: unknown domain {domain!r}; allowed: {', '.join(DOMAINS)}")
        shape = model.input_shape
        if len(shape) != 3 or (domain == "rotate" and shape[1] != shape[2]):
            raise ValueError(f"{setup.name} translates images (channels, height, width; square for domain=rotate); "
                             f"the data gives shape {tuple(shape)}")
        self.domain, self.cycle_weight, self.identity_weight = domain, cycle_weight, identity_weight
        self.encoder = model.encoder
        self.critic_a = nn.Linear(model.feature_dim, 1)
        self.encoder_b = _fresh_copy(model.encoder)
        self.critic_b = nn.Linear(model.feature_dim, 1)
        self.to_b = ImageTranslator(shape, translator_channels, residual_blocks)
        self.to_a = ImageTranslator(shape, translator_channels, residual_blocks)
        self.history: dict[str, list[tuple[int, float]]] = {}

    def score_a(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic_a(self.encoder(x)).squeeze(1)

    def score_b(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic_b(self.encoder_b(x)).squeeze(1)

    def unpaired(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Domain A's batch and a domain-B batch made from other images of it (rolled by half the batch; a batch
        of one image has no other)."""
        return x, to_domain_b(x.roll(len(x) // 2, dims=0), self.domain)

    def cycle_error(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean absolute pixel error of both round trips, A -> B -> A and B -> A -> B."""
        return ((self.to_a(self.to_b(a)) - a).abs().mean() + (self.to_b(self.to_a(b)) - b).abs().mean()) / 2

    def translator_loss(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The translators' loss and its parts: each translation scored real (1) by the other domain's
        discriminator, both round trips back where they started, each translator leaving its own target domain
        alone; also the two translations, for the discriminators' step."""
        fake_b, fake_a = self.to_b(a), self.to_a(b)
        ones = torch.ones(len(a), device=a.device)
        adversarial = F.mse_loss(self.score_b(fake_b), ones) + F.mse_loss(self.score_a(fake_a), ones)
        cycle = (self.to_a(fake_b) - a).abs().mean() + (self.to_b(fake_a) - b).abs().mean()
        identity = (self.to_b(b) - b).abs().mean() + (self.to_a(a) - a).abs().mean()
        total = adversarial + self.cycle_weight * cycle + self.identity_weight * identity
        return total, {"adversarial": adversarial, "cycle": cycle, "identity": identity, "fake_a": fake_a,
                       "fake_b": fake_b}

    def discriminator_loss(self, a: torch.Tensor, b: torch.Tensor, fake_a: torch.Tensor,
                           fake_b: torch.Tensor) -> torch.Tensor:
        """Least squares: real images scored 1, translated ones 0, halved as the paper does."""
        real, fake = torch.ones(len(a), device=a.device), torch.zeros(len(a), device=a.device)
        return 0.5 * (F.mse_loss(self.score_a(a), real) + F.mse_loss(self.score_a(fake_a.detach()), fake)
                      + F.mse_loss(self.score_b(b), real) + F.mse_loss(self.score_b(fake_b.detach()), fake))

    def training_step(self, batch, batch_idx: int) -> None:
        a, b = self.unpaired(batch[0])
        opt_d, opt_g = self.optimizers()
        n = len(a)
        discriminators = [self.encoder, self.critic_a, self.encoder_b, self.critic_b]
        for part in discriminators:  # the translators' step leaves the discriminators' gradients alone
            part.requires_grad_(False)
        g_loss, parts = self.translator_loss(a, b)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        for part in discriminators:
            part.requires_grad_(True)
        d_loss = self.regularization.penalized(self.discriminator_loss(a, b, parts["fake_a"], parts["fake_b"]),
                                               self.encoder)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.track("train/g_loss", g_loss, n)
        self.track("train/d_loss", d_loss, n)
        self.track("train/cycle_loss", parts["cycle"], n)

    def validation_step(self, batch, batch_idx: int) -> None:
        a, b = self.unpaired(batch[0])
        with torch.no_grad():
            self.track("val/cycle_error", self.cycle_error(a, b), len(a))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.record_history("train/d_loss", "train/g_loss")

    def configure_optimizers(self):
        discriminators = [self.encoder, self.critic_a, self.encoder_b, self.critic_b]
        opt_d = self.optimizer_factory([p for part in discriminators for p in part.parameters()])
        opt_g = self.optimizer_factory([*self.to_b.parameters(), *self.to_a.parameters()])
        if self.scheduler_factory is not None:
            raise ValueError(f"{type(self).__name__}: learning-rate schedules are not stepped for CycleGAN; use "
                             "scheduler=none")
        return [opt_d, opt_g]

    def translation_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Test images ``x`` (domain A) as domain B (``untranslated``: what a classifier of A meets in B) and
        translated back to A (``translated``), and the cycle error of the two round trips."""
        b = to_domain_b(x, self.domain)
        return {"untranslated": b.half().cpu(), "translated": self.to_a(b).half().cpu(),
                "cycle_error": self.cycle_error(x, b).cpu()}

    def save_figures(self, out: Path, x: torch.Tensor) -> list[Path]:
        """Rows: validation images (A), translated to B, domain-B images, translated to A."""
        from deepsweep.plots import curves_png, image_grid_png

        self.eval()
        a = x[:8].to(self.device)
        b = to_domain_b(x[8:16].to(self.device), self.domain)
        with torch.no_grad():
            grid = torch.cat([a, self.to_b(a), b, self.to_a(b)])
        paths = [out / "translations.png"]
        image_grid_png(grid.cpu(), paths[0], f"rows: A, A -> B, B ({self.domain}), B -> A", columns=8)
        if self.history:
            paths.append(out / "gan_losses.png")
            curves_png({"cyclegan": self.history}, paths[-1], "discriminators' and translators' loss")
        return paths
