"""Graph neural network families (torch-geometric): GCN, GraphSAGE and GAT for node classification.

The encoder is every graph conv but the last, the head is the last conv (propagation in the output
layer matters: a 2-layer GCN reaches about 81.5% on Cora, one conv plus a linear head does not).
Dropout acts on the input of every conv, as in Kipf & Welling (2017) and Velickovic et al. (2018).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from deepsweep.models.base import Family
from deepsweep.nn.layers import Layers

AGGREGATORS = ("mean", "max", "lstm")


class GraphEncoder(nn.Module):
    """dropout -> conv -> [batch norm] -> activation, per hidden layer; optional residual connections."""

    def __init__(self, convs: Sequence[nn.Module], widths: Sequence[int], layers: Layers, residual: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(w) if layers.regularization.batch_norm else nn.Identity() for w in widths
        )
        self.acts = nn.ModuleList(layers.elementwise_activation() for _ in widths)
        self.dropout = layers.dropout()
        self.residual = residual

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            h = act(norm(conv(self.dropout(x), edge_index)))
            x = h + x if self.residual and h.shape == x.shape else h
        return x


class GraphHead(nn.Module):
    def __init__(self, conv: nn.Module, layers: Layers) -> None:
        super().__init__()
        self.dropout = layers.dropout()
        self.conv = conv

    def forward(self, z: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.conv(self.dropout(z), edge_index)


class GNN(Family):
    kind = "graph"

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden_dims: Sequence[int],
                 layers: Layers | None, residual: bool = False) -> None:
        super().__init__(tuple(input_shape), num_classes)
        layers = layers or Layers()
        if len(input_shape) != 1:
            raise ValueError(f"model={type(self).__name__.lower()} needs node features (graph data); "
                             f"the data gives inputs of shape {tuple(input_shape)}")
        if not hidden_dims:
            raise ValueError("model.hidden_dims: needs at least one hidden width, e.g. [16]")
        if layers.regularization.dropout_kind == "dropconnect" and layers.regularization.dropout > 0:
            raise ValueError("regularizer.dropout_kind=dropconnect: graph convolutions have no dense layer to "
                             "drop weights from; use dropout_kind standard or gaussian with GNN families")
        widths_in = [input_shape[0]]
        convs, widths = [], []
        for hidden in hidden_dims:
            conv, width = self.conv(widths_in[-1], hidden, final=False)
            convs.append(conv)
            widths.append(width)
            widths_in.append(width)
        self.encoder = GraphEncoder(convs, widths, layers, residual)
        self.feature_dim = widths[-1]
        self.head = GraphHead(self.conv(self.feature_dim, num_classes, final=True)[0], layers)

    def conv(self, in_dim: int, out_dim: int, final: bool) -> tuple[nn.Module, int]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x, edge_index), edge_index)


class GCN(GNN):
    """Graph convolutional network (Kipf & Welling 2017): symmetric normalization with self-loops,
    D^-1/2 (A + I) D^-1/2 X W."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden_dims: Sequence[int] = (16,),
                 residual: bool = False, layers: Layers | None = None) -> None:
        super().__init__(input_shape, num_classes, hidden_dims, layers, residual)

    def conv(self, in_dim: int, out_dim: int, final: bool):
        from torch_geometric.nn import GCNConv

        return GCNConv(in_dim, out_dim), out_dim


class GraphSAGE(GNN):
    """GraphSAGE (Hamilton et al. 2017): a node's own features and an aggregate (mean, max pooling or
    LSTM) of its neighbours' features, each through its own weights."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden_dims: Sequence[int] = (64,),
                 aggr: str = "mean", residual: bool = False, layers: Layers | None = None) -> None:
        if aggr not in AGGREGATORS:
            raise ValueError(f"model.aggr: unknown aggregator {aggr!r}; allowed: {', '.join(AGGREGATORS)}")
        self.aggr = aggr
        super().__init__(input_shape, num_classes, hidden_dims, layers, residual)

    def conv(self, in_dim: int, out_dim: int, final: bool):
        from torch_geometric.nn import SAGEConv

        if self.aggr == "max":
            # The max-pooling aggregator: a dense layer on each neighbour, then an element-wise max.
            return SAGEConv(in_dim, out_dim, aggr="max", project=True), out_dim
        return SAGEConv(in_dim, out_dim, aggr=self.aggr), out_dim


class GAT(GNN):
    """Graph attention network (Velickovic et al. 2018): multi-head attention over neighbours; hidden
    heads are concatenated, the output layer uses ``output_heads`` averaged heads."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden_dims: Sequence[int] = (8,),
                 heads: int = 8, output_heads: int = 1, attention_dropout: float = 0.6, residual: bool = False,
                 layers: Layers | None = None) -> None:
        self.heads, self.output_heads, self.attention_dropout = heads, output_heads, attention_dropout
        super().__init__(input_shape, num_classes, hidden_dims, layers, residual)

    def conv(self, in_dim: int, out_dim: int, final: bool):
        from torch_geometric.nn import GATConv

        if final:
            return GATConv(in_dim, out_dim, heads=self.output_heads, concat=False,
                           dropout=self.attention_dropout), out_dim
        return GATConv(in_dim, out_dim, heads=self.heads, dropout=self.attention_dropout), out_dim * self.heads
