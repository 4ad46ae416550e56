"""Restricted Boltzmann machines trained by contrastive divergence, stacked into a deep belief net
(Hinton, Osindero & Teh 2006) whose weights initialize an MLP's hidden layers.

Greedy layer-wise: layer l trains for ``epochs_per_layer`` epochs on the hidden probabilities of the
layers below it (frozen); when all are trained, each RBM's (W, hidden bias) is copied into the MLP's
matching linear layer, so fine-tuning starts from the DBN."""

from __future__ import annotations


import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.models.mlp import dense_stack
from deepsweep.tasks.common import Task, TaskSetup

VISIBLE = ("bernoulli", "gaussian")


class RBM(nn.Module):
    """Binary hidden units; Bernoulli visible units for data in [0, 1], or Gaussian (unit variance) for
    real-valued inputs."""

    def __init__(self, visible: int, hidden: int, visible_type: str = "bernoulli") -> None:
        super().__init__()
        if visible_type not in VISIBLE:
            raise ValueError(f"pretrain.task.visible: unknown unit type {visible_type!r}; allowed: {', '.join(VISIBLE)}")
        self.weight = nn.Parameter(torch.randn(hidden, visible) * 0.01)
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))
        self.visible_bias = nn.Parameter(torch.zeros(visible))
        self.visible_type = visible_type

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.linear(v, self.weight, self.hidden_bias))

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        pre = F.linear(h, self.weight.t(), self.visible_bias)
        return torch.sigmoid(pre) if self.visible_type == "bernoulli" else pre

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = visible term - sum_j softplus(W_j v + c_j); data should get low free energy."""
        visible = (0.5 * (v - self.visible_bias).pow(2)).sum(1) if self.visible_type == "gaussian" else v @ -self.visible_bias
        return visible - F.softplus(F.linear(v, self.weight, self.hidden_bias)).sum(1)

    def contrastive_divergence(self, v0: torch.Tensor, k: int) -> torch.Tensor:
        """Set .grad to the CD-k estimate of the negative log-likelihood gradient; return the
        reconstruction error of the chain's last visible mean (a progress signal, not the objective)."""
        ph0 = self.hidden_probs(v0)
        h = torch.bernoulli(ph0)
        for _ in range(k):
            v = self.visible_mean(h)  # mean-field visible step, the usual choice (Hinton 2010, sec. 3.2)
            ph = self.hidden_probs(v)
            h = torch.bernoulli(ph)
        n = len(v0)
        self.weight.grad = -(ph0.t() @ v0 - ph.t() @ v) / n
        self.hidden_bias.grad = -(ph0 - ph).mean(0)
        self.visible_bias.grad = -(v0 - v).mean(0)
        return F.mse_loss(v, v0)


class DeepBeliefTask(Task):
    steps_by_hand = True  # CD-k gradients, one RBM's optimizer per batch
    keep_best_weights = False  # reconstruction errors of different layers are not comparable
    scores_anomalies = True
    score_name = "free_energy"

    def __init__(self, model: Family, setup: TaskSetup, *, cd_k: int = 1, visible: str = "bernoulli",
                 epochs_per_layer: int = 5) -> None:
        super().__init__(setup)
        self.automatic_optimization = False
        if cd_k < 1:
            raise ValueError(f"pretrain.task.cd_k: must be >= 1, got {cd_k}")
        self.model = model
        self.linears = dense_stack(model, "pretrain=dbn")
        widths = [self.linears[0].in_features] + [lin.out_features for lin in self.linears]
        self.rbms = nn.ModuleList(
            RBM(a, b, visible if i == 0 else "bernoulli") for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.cd_k, self.epochs_per_layer = cd_k, epochs_per_layer

    @property
    def layer(self) -> int:
        return min(self.current_epoch // self.epochs_per_layer, len(self.rbms) - 1)

    def layer_input(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        v = x.flatten(1)
        with torch.no_grad():
            for rbm in self.rbms[:layer]:
                v = rbm.hidden_probs(v)
        return v

    def training_step(self, batch, batch_idx: int) -> None:
        x = batch[0]
        layer = self.layer
        optimizer = self.optimizers()[layer]
        optimizer.zero_grad()
        error = self.rbms[layer].contrastive_divergence(self.layer_input(x, layer), self.cd_k)
        optimizer.step()
        self.track("train/loss", error, len(x))

    def validation_step(self, batch, batch_idx: int) -> None:
        x = batch[0]
        v = self.layer_input(x, self.layer)
        rbm = self.rbms[self.layer]
        self.track("val/loss", F.mse_loss(rbm.visible_mean(rbm.hidden_probs(v)), v), len(x))
        self.track("val/free_energy", rbm.free_energy(v).mean(), len(x))

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """The bottom RBM's free energy: -log p(x) up to a constant, so high for unlikely inputs."""
        return self.rbms[0].free_energy(x.flatten(1))

    def configure_optimizers(self):
        return [self.optimizer_factory(rbm.parameters()) for rbm in self.rbms]

    def on_fit_end(self) -> None:
        with torch.no_grad():
            for rbm, linear in zip(self.rbms, self.linears):
                linear.weight.copy_(rbm.weight)
                linear.bias.copy_(rbm.hidden_bias)
