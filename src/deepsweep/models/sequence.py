"""Sequence families: recurrent (Elman RNN, LSTM, GRU; stacked, bidirectional) and Transformer encoder.

Inputs are token ids (N, T) when the data has a vocabulary (text), else real values (N, T, features)
(time series). Each encoder offers ``steps(x)`` (N, T, H), one feature vector per step, for
sequence pretraining, and ``forward(x)`` (N, H), the pooled features the classifier head reads.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from deepsweep.models.base import Family
from deepsweep.nn.layers import Layers

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLING = ("last", "mean", "max")


class LockedDropout(nn.Module):
    """Variational dropout (Gal & Ghahramani 2016): one dropout mask per sequence, the same at every step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, H)
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


def padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """The steps attention must skip (True), from the valid steps (N, S): the padding, except that a source with
    no token at all (an empty text) is attended evenly over its padding, since a row of nothing but masked keys
    gives NaN."""
    return ~(valid | ~valid.any(dim=-1, keepdim=True))


def _pool(steps: torch.Tensor, valid: torch.Tensor, how: str) -> torch.Tensor:
    """Pool (N, T, H) over valid steps: the last valid one, their mean, or their max."""
    if how == "mean":
        weights = valid.unsqueeze(-1).to(steps.dtype)
        return (steps * weights).sum(1) / weights.sum(1).clamp(min=1)
    if how == "max":
        return steps.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(1)
    last = (valid.long().sum(1) - 1).clamp(min=0)
    return steps[torch.arange(len(steps), device=steps.device), last]


class _Inputs(nn.Module):
    """Token ids -> embeddings, or real values as they are; also the mask of non-padding steps."""

    def __init__(self, input_shape: Sequence[int], vocab_size: int | None, embedding_dim: int) -> None:
        super().__init__()
        self.tokens = vocab_size is not None
        if self.tokens:
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
            self.dim = embedding_dim
        else:
            if len(input_shape) != 2:
                raise ValueError(f"sequence models need (steps, features) or token inputs; got shape {tuple(input_shape)}")
            self.dim = input_shape[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokens:
            return self.embedding(x), x != 0
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


class RecurrentEncoder(nn.Module):
    def __init__(self, inputs: _Inputs, cell: str, hidden_size: int, num_layers: int, bidirectional: bool,
                 pooling: str, layers: Layers, tbptt_steps: int | None = None, packed: bool = False) -> None:
        super().__init__()
        self.tbptt_steps = tbptt_steps
        # Packed: each sequence runs over its own steps only, so a backward direction starts at its last token,
        # not at the padding after it (the padded steps' outputs are 0). The classifiers keep the padded run
        # their results were measured with; sequence to sequence packs.
        self.packed = packed
        self.inputs = inputs
        # One module per layer, so variational dropout can sit between layers with a per-sequence mask.
        width, directions = inputs.dim, 2 if bidirectional else 1
        self.rnns = nn.ModuleList()
        for _ in range(num_layers):
            self.rnns.append(CELLS[cell](width, hidden_size, batch_first=True, bidirectional=bidirectional))
            width = hidden_size * directions
        p = layers.regularization.dropout if layers.regularization.dropout_kind != "dropconnect" else 0.0
        self.drop = LockedDropout(p)
        self.pooling = pooling
        self.bidirectional = bidirectional
        self.width = width

    def _run(self, h: torch.Tensor, states: list | None) -> tuple[torch.Tensor, list]:
        """All layers over a stretch of steps, starting from ``states`` (one per layer, None = zeros)."""
        states = states or [None] * len(self.rnns)
        out = []
        for rnn, state in zip(self.rnns, states):
            h, state = rnn(self.drop(h), state)
            out.append(state)
        return self.drop(h), out

    def _run_packed(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        lengths = valid.sum(dim=1).clamp(min=1).cpu()
        for rnn in self.rnns:
            packed = pack_padded_sequence(self.drop(h), lengths, batch_first=True, enforce_sorted=False)
            h = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=valid.shape[1])[0]
        return self.drop(h)

    def steps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, valid = self.inputs(x)
        if self.packed:
            return self._run_packed(h, valid), valid
        k = self.tbptt_steps
        if not (self.training and k and h.shape[1] > k):
            return self._run(h, None)[0], valid
        # Truncated BPTT: run the sequence in chunks of k steps and detach the carried state between
        # them, so no gradient travels more than k steps back. Only a unidirectional pass has a
        # "back"; bidirectional models are rejected at construction.
        # Chunks end at the last step, so the final step (what a classifier reads) always sees k steps.
        steps = h.shape[1]
        bounds = [0, *range(steps % k or k, steps + 1, k)]
        chunks, states = [], None
        for start, end in zip(bounds, bounds[1:]):
            if states is not None:
                states = [tuple(s.detach() for s in st) if isinstance(st, tuple) else st.detach() for st in states]
            out, states = self._run(h[:, start:end], states)
            chunks.append(out)
        return torch.cat(chunks, dim=1), valid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.training and self.tbptt_steps and self.pooling == "last" and not self.inputs.tokens
                and x.shape[1] > self.tbptt_steps):
            # The loss reads only the final step, and truncation stops its gradient k steps back: run the
            # earlier steps without a graph, so memory grows with k instead of the sequence length. (Series
            # only: padded text can end before the last k steps.)
            k = self.tbptt_steps
            h, valid = self.inputs(x)
            with torch.no_grad():
                _, states = self._run(h[:, :-k], None)
            out, _ = self._run(h[:, -k:], states)
            return _pool(out, valid[:, -k:], "last")
        return _pool(*self.steps(x), self.pooling)


class Recurrent(Family):
    """Elman RNN, LSTM or GRU (``cell``), stacked (``num_layers``) and optionally bidirectional.
    ``tbptt_steps`` truncates backpropagation through time to that many steps while training."""

    kind = "sequence"

    def __init__(self, input_shape: Sequence[int], num_classes: int, cell: str = "lstm", hidden_size: int = 64,
                 num_layers: int = 1, bidirectional: bool = False, embedding_dim: int = 64, pooling: str = "last",
                 vocab_size: int | None = None, layers: Layers | None = None,
                 tbptt_steps: int | None = None, forget_bias: float | None = None) -> None:
        super().__init__(tuple(input_shape), num_classes)
        if cell not in CELLS:
            raise ValueError(f"model.cell: unknown cell {cell!r}; allowed: {', '.join(CELLS)}")
        if pooling not in POOLING:
            raise ValueError(f"model.pooling: unknown pooling {pooling!r}; allowed: {', '.join(POOLING)}")
        if tbptt_steps is not None and (tbptt_steps < 1 or bidirectional):
            raise ValueError(f"model.tbptt_steps: {tbptt_steps} is not allowed; use a positive number of steps "
                             "on a unidirectional model (bidirectional=false), or null for full BPTT")
        layers = layers or Layers()
        self.vocab_size = vocab_size
        self.encoder = RecurrentEncoder(_Inputs(input_shape, vocab_size, embedding_dim), cell, hidden_size,
                                        num_layers, bidirectional, pooling, layers, tbptt_steps)
        self.feature_dim = self.encoder.width
        self.head = layers.linear(self.feature_dim, num_classes)
        self.cell, self.forget_bias = cell, forget_bias

    def after_init(self) -> None:
        """Start the gates that carry the state open: the LSTM forget gate (Gers et al. 2000; Jozefowicz
        et al. 2015) or the GRU update gate get bias ``forget_bias``. At the zero bias of most init schemes
        a gate is half closed and the state fades like 0.5^t: gating then vanishes as fast as a plain RNN."""
        if self.forget_bias is None or self.cell == "rnn":
            return
        gate = 1  # the forget gate is LSTM chunk (i, f, g, o)[1]; the update gate GRU chunk (r, z, n)[1]
        with torch.no_grad():
            for rnn in self.encoder.rnns:
                for name, param in rnn.named_parameters():
                    if name.startswith("bias"):
                        chunk = param.chunk(4 if self.cell == "lstm" else 3)[gate]
                        chunk.fill_(self.forget_bias if name.startswith("bias_ih") else 0.0)


class PositionalEncoding(nn.Module):
    """The sinusoidal encoding of Vaswani et al. (2017), added to the inputs."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]


class TransformerEncoder(nn.Module):
    def __init__(self, inputs: _Inputs, d_model: int, heads: int, num_layers: int, ff_dim: int, max_len: int,
                 pooling: str, norm_first: bool, dropout: float, activation: str) -> None:
        super().__init__()
        self.inputs = inputs
        self.project = nn.Identity() if inputs.dim == d_model else nn.Linear(inputs.dim, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        self.position = PositionalEncoding(d_model, max_len + 1)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff_dim, dropout, activation=activation,
                                           batch_first=True, norm_first=norm_first)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.pooling = pooling

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, valid = self.inputs(x)
        h = self.project(h)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)
            valid = torch.cat([valid.new_ones(len(h), 1), valid], dim=1)
        return self.norm(self.layers(self.position(h), src_key_padding_mask=padding_mask(valid))), valid

    def steps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, valid = self._encode(x)
        return (h[:, 1:], valid[:, 1:]) if self.cls is not None else (h, valid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, valid = self._encode(x)
        return h[:, 0] if self.cls is not None else _pool(h, valid, "mean")


def attention_block_dropout(d_model: int, heads: int, layers: Layers) -> float:
    """The dropout probability of a Transformer's attention blocks (``nn.TransformerEncoderLayer`` and the
    decoder blocks take standard dropout alone; constraints refuse the other kinds for these families),
    once ``d_model`` is checked to split into ``heads`` heads."""
    if d_model % heads:
        raise ValueError(f"model.heads: d_model={d_model} must be divisible by heads={heads}")
    return layers.regularization.dropout if layers.regularization.dropout_kind == "standard" else 0.0


class Transformer(Family):
    """Transformer encoder (Vaswani et al. 2017): embeddings + sinusoidal positions, ``num_layers``
    self-attention blocks (pre-norm with ``norm_first``), pooled by a [CLS] token or the mean."""

    kind = "sequence"

    def __init__(self, input_shape: Sequence[int], num_classes: int, d_model: int = 64, heads: int = 4,
                 num_layers: int = 2, ff_dim: int = 128, pooling: str = "cls", norm_first: bool = True,
                 activation: str = "gelu", vocab_size: int | None = None, layers: Layers | None = None) -> None:
        super().__init__(tuple(input_shape), num_classes)
        if pooling not in ("cls", "mean"):
            raise ValueError(f"model.pooling: unknown pooling {pooling!r}; allowed: cls, mean")
        layers = layers or Layers()
        self.vocab_size = vocab_size
        dropout = attention_block_dropout(d_model, heads, layers)
        self.encoder = TransformerEncoder(_Inputs(input_shape, vocab_size, d_model), d_model, heads, num_layers,
                                          ff_dim, input_shape[0], pooling, norm_first, dropout, activation)
        self.feature_dim = d_model
        self.head = layers.linear(d_model, num_classes)
