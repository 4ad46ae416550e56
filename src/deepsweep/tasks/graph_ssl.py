"""Self-supervised graph pretraining of a GNN encoder: graph autoencoder, Deep Graph Infomax, or
GraphSAGE's random-walk loss.

No labels are read: the batch's labels and mask are ignored; every node and edge of the batch's graph
(the whole graph, or a sampled neighbourhood with mini-batches) takes part."""

from __future__ import annotations



import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.tasks.common import LossTask, TaskSetup

METHODS = ("gae", "dgi", "random_walk")


def _shuffle_nodes(x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DGI's corruption: the same graph with node features permuted among nodes."""
    return x[torch.randperm(x.shape[0], device=x.device)], edge_index


def random_walk_loss(z: torch.Tensor, edge_index: torch.Tensor, walk_length: int, walks_per_node: int,
                     num_negatives: int) -> torch.Tensor:
    """GraphSAGE's unsupervised loss (Hamilton et al. 2017, eq. 1): nodes that co-occur on short random
    walks get similar embeddings, -log s(z_u.z_v) - sum over Q negatives v_n ~ degree^0.75 of log s(-z_u.z_vn)."""
    from deepsweep.data.sampling import random_walks

    n = len(z)
    source, target = edge_index
    order = source.argsort()
    degree = torch.bincount(source, minlength=n)
    rowptr = torch.zeros(n + 1, dtype=torch.long, device=z.device)
    rowptr[1:] = degree.cumsum(0)
    walks = random_walks(rowptr, target[order], torch.arange(n, device=z.device).repeat(walks_per_node), walk_length)
    anchor = walks[:, :1].expand(-1, walk_length).reshape(-1)
    context = walks[:, 1:].reshape(-1)
    keep = anchor != context  # a walk stuck on an isolated node, or back at its start, says nothing
    anchor, context = anchor[keep], context[keep]
    positive = (z[anchor] * z[context]).sum(-1)
    noise = degree.float().pow(0.75) + 1e-6  # word2vec's smoothed unigram
    negatives = torch.multinomial(noise, len(anchor) * num_negatives, replacement=True)
    negative = (z[anchor].repeat_interleave(num_negatives, 0) * z[negatives]).sum(-1)
    return -F.logsigmoid(positive).mean() - F.logsigmoid(-negative).view(-1, num_negatives).sum(1).mean()


def _mean_summary(z: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return torch.sigmoid(z.mean(dim=0))


class GraphSelfSupervisedTask(LossTask):
    """``method: gae`` - graph autoencoder (Kipf & Welling 2016): inner-product decoder, reconstruct the
    edges against as many sampled non-edges. ``method: dgi`` - Deep Graph Infomax (Velickovic et al. 2019):
    tell node embeddings of the graph from those of a feature-shuffled copy, against a graph summary.
    ``method: random_walk`` - GraphSAGE's unsupervised loss: ``walks_per_node`` walks of ``walk_length``
    steps from every node, each visited node a positive, ``num_negatives`` noise nodes per positive."""

    kind = "graph"

    def __init__(
        self,
        model: Family,
        setup: TaskSetup,
        *,
        method: str = "gae",
        walk_length: int = 5,
        walks_per_node: int = 1,
        num_negatives: int = 5,
    ) -> None:
        super().__init__(setup)
        from torch_geometric.nn import GAE, DeepGraphInfomax

        if method not in METHODS:
            raise ValueError(f"pretrain.task.method: unknown method {method!r}; allowed: {', '.join(METHODS)}")
        if getattr(model, "kind", None) != "graph":
            raise ValueError(f"pretrain.task: {method} pretrains graph families (gcn, sage, gat), not {type(model).__name__}")
        for key, value in (("walk_length", walk_length), ("walks_per_node", walks_per_node),
                           ("num_negatives", num_negatives)):
            if value < 1:
                raise ValueError(f"pretrain.task.{key}: must be >= 1, got {value}")
        self.encoder = model.encoder
        self.method = method
        self.walk = {"walk_length": walk_length, "walks_per_node": walks_per_node, "num_negatives": num_negatives}
        if method == "random_walk":
            # The encoder ends in its activation (ReLU: no negative parts), so no two embeddings can have a
            # negative dot product and the noise term is met by zeroing every embedding. Scores are read
            # through a linear projection, dropped after pretraining, as in contrastive learning.
            self.projection = nn.Linear(model.feature_dim, model.feature_dim)
        if method == "dgi":
            self.objective = DeepGraphInfomax(model.feature_dim, self.encoder, _mean_summary, _shuffle_nodes)
        elif method == "gae":
            self.objective = GAE(self.encoder)

    def _loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, edge_index = batch[0], batch[1]
        if self.method == "dgi":
            pos, neg, summary = self.objective(x, edge_index)
            return self.objective.loss(pos, neg, summary)
        if self.method == "random_walk":
            return random_walk_loss(self.projection(self.encoder(x, edge_index)), edge_index, **self.walk)
        return self.objective.recon_loss(self.encoder(x, edge_index), edge_index)

    def training_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        loss = self.regularization.penalized(self._loss(batch), self.encoder)
        self.track("train/loss", loss, 1)
        return loss

    def validation_batch(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.track("val/loss", self._loss(batch), 1)
