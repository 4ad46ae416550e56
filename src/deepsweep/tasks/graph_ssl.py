"""Self-supervised graph pretraining of a GNN encoder: graph autoencoder (GAE, VGAE), Deep Graph Infomax, or
GraphSAGE's random-walk loss.

No labels are read: the batch's labels and mask are ignored; every node and edge of the batch's graph
(the whole graph, or a sampled neighbourhood with mini-batches) takes part, except the edges a graph
autoencoder holds out for link prediction (``link_val_fraction``, ``link_test_fraction``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.tasks.common import LossTask, TaskSetup

METHODS = ("gae", "vgae", "dgi", "random_walk")


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
    # index_select, not z[index]: the latter's backward adds each row's gradients with atomic float adds on
    # several CPU threads (index_put_ with accumulate), in an order that changes from run to run, so a
    # pretraining run did not repeat bit for bit; index_select's backward (index_add_) adds in index order.
    anchors = z.index_select(0, anchor)
    positive = (anchors * z.index_select(0, context)).sum(-1)
    noise = degree.float().pow(0.75) + 1e-6  # word2vec's smoothed unigram
    negatives = torch.multinomial(noise, len(anchor) * num_negatives, replacement=True)
    negative = (anchors.repeat_interleave(num_negatives, 0) * z.index_select(0, negatives)).sum(-1)
    return -F.logsigmoid(positive).mean() - F.logsigmoid(-negative).view(-1, num_negatives).sum(1).mean()


def _ordered_inner_product_decoder() -> nn.Module:
    """torch-geometric's inner-product edge decoder (GAE, VGAE), reading the codes with ``index_select``: its
    own ``z[edge_index[0]]`` adds the gradients of a node's edges with atomic float adds across CPU threads,
    in an order that changes from run to run (see ``random_walk_loss``)."""
    from torch_geometric.nn import InnerProductDecoder

    class OrderedInnerProductDecoder(InnerProductDecoder):
        def forward(self, z: torch.Tensor, edge_index: torch.Tensor, sigmoid: bool = True) -> torch.Tensor:
            value = (z.index_select(0, edge_index[0]) * z.index_select(0, edge_index[1])).sum(dim=1)
            return torch.sigmoid(value) if sigmoid else value

    return OrderedInnerProductDecoder()


def pairwise_auc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """ROC-AUC of scores ``pos`` (positives) against ``neg``: the share of (positive, negative) pairs ranked
    right, ties counting half. O(k^2) memory: for the few hundred held-out edges of a validation epoch."""
    diff = pos.unsqueeze(1) - neg.unsqueeze(0)
    return (diff > 0).float().mean() + 0.5 * (diff == 0).float().mean()


class LatentEncoder(nn.Module):
    """The GNN encoder, then graph convs to the latent codes without an activation (Kipf & Welling 2016:
    ``Z = A relu(A X W0) W1``; a code that ends in a ReLU has no negative inner product to score a non-edge
    with). ``logstd``: VGAE's second output conv. The output convs stay with the objective: what pretraining
    hands to fine-tuning is the encoder."""

    def __init__(self, encoder: nn.Module, mu: nn.Module, logstd: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder, self.mu, self.logstd = encoder, mu, logstd

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor):
        h = self.encoder(x, edge_index)
        if self.logstd is None:
            return self.mu(h, edge_index)
        return self.mu(h, edge_index), self.logstd(h, edge_index)


def _mean_summary(z: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return torch.sigmoid(z.mean(dim=0))


class GraphSelfSupervisedTask(LossTask):
    """``method: gae`` - graph autoencoder (Kipf & Welling 2016): the encoder and one more graph conv to
    ``latent_dim`` codes, inner-product decoder, reconstruct the edges against as many sampled non-edges.
    ``method: vgae`` - its variational form: two output convs give each node's Gaussian code (mean, log std),
    the loss adds KL(q(z) || N(0, I)) / number of nodes. With ``link_test_fraction`` (and
    ``link_val_fraction``) > 0 both hold that share of the graph's edges out of training
    (``data.links.split_edges``): the validation loss and ``val/link_roc_auc`` score the validation edges
    against fixed non-edges, and evaluate reports the test edges' ROC-AUC and average precision.
    ``method: dgi`` - Deep Graph Infomax (Velickovic et al. 2019):
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
        latent_dim: int = 16,
        link_val_fraction: float = 0.0,
        link_test_fraction: float = 0.0,
    ) -> None:
        super().__init__(setup)
        from torch_geometric.nn import GAE, VGAE, DeepGraphInfomax

        if method not in METHODS:
            raise ValueError(f"pretrain.task.method: unknown method {method!r}; allowed: {', '.join(METHODS)}")
        if getattr(model, "kind", None) != "graph":
            raise ValueError(f"pretrain.task: {method} pretrains graph families (gcn, sage, gat), not {type(model).__name__}")
        for key, value in (("walk_length", walk_length), ("walks_per_node", walks_per_node),
                           ("num_negatives", num_negatives)):
            if value < 1:
                raise ValueError(f"pretrain.task.{key}: must be >= 1, got {value}")
        holds_out = link_val_fraction > 0 or link_test_fraction > 0
        if holds_out and method not in ("gae", "vgae"):
            raise ValueError(f"pretrain.task.link_test_fraction: {method} predicts no links; gae and vgae do")
        if not (0 <= link_val_fraction < 1 and 0 <= link_test_fraction < 1
                and link_val_fraction + link_test_fraction < 1):
            raise ValueError(f"pretrain.task.link_val_fraction + link_test_fraction: {link_val_fraction} + "
                             f"{link_test_fraction}; each in [0, 1), their sum below 1")
        self.encoder = model.encoder
        self.method = method
        self.link_fractions = (link_val_fraction, link_test_fraction)
        self.predicts_links = link_test_fraction > 0
        self.seed = setup.seed
        self._split = None  # (graph size, LinkSplit), drawn from the first batch's graph
        self.walk = {"walk_length": walk_length, "walks_per_node": walks_per_node, "num_negatives": num_negatives}
        if method == "random_walk":
            # The encoder ends in its activation (ReLU: no negative parts), so no two embeddings can have a
            # negative dot product and the noise term is met by zeroing every embedding. Scores are read
            # through a linear projection, dropped after pretraining, as in contrastive learning.
            self.projection = nn.Linear(model.feature_dim, model.feature_dim)
        if method == "dgi":
            self.objective = DeepGraphInfomax(model.feature_dim, self.encoder, _mean_summary, _shuffle_nodes)
        elif method in ("gae", "vgae"):
            def latent() -> nn.Module:
                return model.conv(model.feature_dim, latent_dim, final=True)[0]

            autoencoder = LatentEncoder(self.encoder, latent(), latent() if method == "vgae" else None)
            decoder = _ordered_inner_product_decoder()
            self.objective = VGAE(autoencoder, decoder) if method == "vgae" else GAE(autoencoder, decoder)

    def link_split(self, x: torch.Tensor, edge_index: torch.Tensor):
        """The held-out edges of this graph (None without a link split), drawn once from the seed."""
        from deepsweep.data.links import split_edges

        if not any(self.link_fractions):
            return None
        size = (x.shape[0], edge_index.shape[1])
        if self._split is None:
            split = split_edges(edge_index, x.shape[0], *self.link_fractions, seed=self.seed)
            self._split = (size, split.to(edge_index.device))
        elif self._split[0] != size:
            raise ValueError("pretrain.task.link_test_fraction: link prediction holds edges out of one whole graph; "
                             "this batch is another graph (use data.batch_size=0 and data.inductive=false)")
        return self._split[1]

    def _autoencoder_loss(self, x: torch.Tensor, edge_index: torch.Tensor, validation: bool) -> torch.Tensor:
        split = self.link_split(x, edge_index)
        graph = edge_index if split is None else split.train_edge_index
        z = self.objective.encode(x, graph)  # VGAE: a sample in training, the mean in evaluation
        if validation and split is not None and split.val_pos.shape[1]:
            loss = self.objective.recon_loss(z, split.val_pos, split.val_neg)
            decode = self.objective.decoder
            self.track("val/link_roc_auc", pairwise_auc(decode(z, split.val_pos), decode(z, split.val_neg)), 1)
        else:
            loss = self.objective.recon_loss(z, graph)
        if self.method == "vgae":
            loss = loss + self.objective.kl_loss() / x.shape[0]
        return loss

    def _loss(self, batch: tuple[torch.Tensor, ...], validation: bool = False) -> torch.Tensor:
        x, edge_index = batch[0], batch[1]
        if self.method == "dgi":
            pos, neg, summary = self.objective(x, edge_index)
            return self.objective.loss(pos, neg, summary)
        if self.method == "random_walk":
            return random_walk_loss(self.projection(self.encoder(x, edge_index)), edge_index, **self.walk)
        return self._autoencoder_loss(x, edge_index, validation)

    @torch.no_grad()
    def link_scores(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Edge probabilities of the held-out test edges (``pos``) and of as many non-edges (``neg``), the
        codes computed over the training edges alone (VGAE: the means)."""
        x, edge_index = batch[0], batch[1]
        split = self.link_split(x, edge_index)
        z = self.objective.encode(x, split.train_edge_index)
        decode = self.objective.decoder
        return {"pos": decode(z, split.test_pos, sigmoid=True).cpu(), "neg": decode(z, split.test_neg, sigmoid=True).cpu()}

    def training_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        loss = self.regularization.penalized(self._loss(batch), self.encoder)
        self.track("train/loss", loss, 1)
        return loss

    def validation_batch(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.track("val/loss", self._loss(batch, validation=True), 1)
