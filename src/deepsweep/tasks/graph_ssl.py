"""Self-supervised graph pretraining of a GNN encoder: graph autoencoder or Deep Graph Infomax.

No labels are read: the batch's labels and mask are ignored; every node and edge takes part."""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
from torch import nn

from deepsweep.models.base import Family
from deepsweep.nn.regularizers import Regularization
from deepsweep.tasks.common import EpochLoggingMixin, OptimizerFactory, SchedulerFactory, configure_optimizers

METHODS = ("gae", "dgi")


def _shuffle_nodes(x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DGI's corruption: the same graph with node features permuted among nodes."""
    return x[torch.randperm(x.shape[0], device=x.device)], edge_index


def _mean_summary(z: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return torch.sigmoid(z.mean(dim=0))


class GraphSelfSupervisedTask(EpochLoggingMixin, L.LightningModule):
    """``method: gae`` - graph autoencoder (Kipf & Welling 2016): inner-product decoder, reconstruct the
    edges against as many sampled non-edges. ``method: dgi`` - Deep Graph Infomax (Velickovic et al. 2019):
    tell node embeddings of the graph from those of a feature-shuffled copy, against a graph summary."""

    kind = "graph"

    def __init__(
        self,
        model: Family,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        regularization: Regularization | None = None,
        activation: Callable[[], nn.Module] | None = None,
        method: str = "gae",
    ) -> None:
        super().__init__()
        from torch_geometric.nn import GAE, DeepGraphInfomax

        if method not in METHODS:
            raise ValueError(f"pretrain.task.method: unknown method {method!r}; allowed: {', '.join(METHODS)}")
        if getattr(model, "kind", None) != "graph":
            raise ValueError(f"pretrain.task: {method} pretrains graph families (gcn, sage, gat), not {type(model).__name__}")
        self.encoder = model.encoder
        self.method = method
        if method == "dgi":
            self.objective = DeepGraphInfomax(model.feature_dim, self.encoder, _mean_summary, _shuffle_nodes)
        else:
            self.objective = GAE(self.encoder)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.regularization = regularization or Regularization()

    def _loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, edge_index = batch[0], batch[1]
        if self.method == "dgi":
            pos, neg, summary = self.objective(x, edge_index)
            return self.objective.loss(pos, neg, summary)
        return self.objective.recon_loss(self.encoder(x, edge_index), edge_index)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch) + self.regularization.penalty(self.encoder)
        self.track("train/loss", loss, 1)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.track("val/loss", self._loss(batch), 1)

    def configure_optimizers(self):
        return configure_optimizers(self.parameters(), self.optimizer_factory, self.scheduler_factory)
