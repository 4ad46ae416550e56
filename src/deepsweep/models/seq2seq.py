"""Sequence to sequence: a recurrent encoder, and a recurrent decoder that reads it through attention.

Attention (``attention``):
* ``bahdanau``: additive (Bahdanau et al. 2015): before each step, the decoder's previous state scores every
  encoder step with ``v . tanh(W_q s + W_k h_j)``; their softmax weights the encoder steps into a context that
  the step reads beside the previous token.
* ``luong``: dot-product (Luong et al. 2015): after each step, the new state scores every encoder step by a
  dot product with its projection; the output reads ``tanh(W_c [s; context])``, which the next step also
  reads ("input feeding").
* ``none``: no attention (Cho et al. 2014): every step reads the same context, the encoder's mean step. The
  whole source must pass through that one vector, which is what fails as sources grow.

Padding steps of the source get no weight. Training feeds the target's previous token with probability
``teacher_forcing`` (per sequence and step; else the model's own previous guess, Bengio et al. 2015);
``generate`` decodes greedily until every sequence has emitted <eos>. Outputs are class scores on dim 1,
``(N, vocab, steps)``, as every family's (a segmentation's ``(N, classes, H, W)``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from deepsweep.data.sequences import BOS_ID, EOS_ID
from deepsweep.models.base import Family
from deepsweep.models.sequence import RecurrentEncoder, _Inputs
from deepsweep.nn.layers import Layers

ATTENTION = ("bahdanau", "luong", "none")
DECODER_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


class Attention(nn.Module):
    """Weights over the encoder steps for a decoder state: additive (``bahdanau``) or dot (``luong``)."""

    def __init__(self, how: str, hidden_size: int) -> None:
        super().__init__()
        self.how = how
        if how == "bahdanau":
            self.query = nn.Linear(hidden_size, hidden_size, bias=False)
            self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, state: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (N, H), weights (N, S)) for ``state`` (N, H), ``keys`` and ``values`` (N, S, H)."""
        if self.how == "bahdanau":
            scores = self.score(torch.tanh(self.query(state).unsqueeze(1) + keys)).squeeze(-1)
        else:
            scores = (keys @ state.unsqueeze(-1)).squeeze(-1)
        # A source with no token at all (an empty text) attends evenly rather than to nothing (NaN).
        valid = valid | ~valid.any(dim=-1, keepdim=True)
        weights = scores.masked_fill(~valid, float("-inf")).softmax(dim=-1)
        return (weights.unsqueeze(1) @ values).squeeze(1), weights


class Seq2Seq(Family):
    """A recurrent encoder (``cell``, ``num_layers``, ``bidirectional``: the sequence families' encoder, so
    sequence pretraining applies to it) and a one-layer decoder of the same cell with ``attention``.
    ``encoder``: what pretraining learns and fine-tuning loads; ``head``: the decoder's output layer."""

    kind = "sequence"
    target = "tokens"

    def __init__(self, input_shape: Sequence[int], num_classes: int, cell: str = "gru", hidden_size: int = 128,
                 embedding_dim: int = 64, num_layers: int = 1, bidirectional: bool = True,
                 attention: str = "bahdanau", teacher_forcing: float = 1.0, max_output_len: int | None = None,
                 vocab_size: int | None = None, layers: Layers | None = None) -> None:
        super().__init__(tuple(input_shape), num_classes)
        if cell not in DECODER_CELLS:
            raise ValueError(f"model.cell: unknown cell {cell!r}; allowed: {', '.join(DECODER_CELLS)}")
        if attention not in ATTENTION:
            raise ValueError(f"model.attention: unknown attention {attention!r}; allowed: {', '.join(ATTENTION)}")
        if vocab_size is None:
            raise ValueError("model=seq2seq reads token ids: use a data option with a vocabulary (data=translation)")
        layers = layers or Layers()
        self.vocab_size, self.cell, self.attention_kind = vocab_size, cell, attention
        self.teacher_forcing = float(teacher_forcing)
        self.max_output_len = max_output_len or 2 * int(input_shape[0]) + 2
        self.encoder = RecurrentEncoder(_Inputs(input_shape, vocab_size, embedding_dim), cell, hidden_size,
                                        num_layers, bidirectional, "mean", layers, packed=True)
        self.feature_dim = self.encoder.width
        width = self.encoder.width
        # The encoder steps as attention reads them (attention=none reads their mean, through values, alone).
        self.keys = nn.Linear(width, hidden_size) if attention != "none" else None
        self.values = nn.Linear(width, hidden_size)
        self.bridge = nn.Linear(width, hidden_size)  # the decoder's first state, from the encoder's mean step
        self.attend = Attention(attention, hidden_size) if attention != "none" else None
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.decoder = DECODER_CELLS[cell](embedding_dim + hidden_size, hidden_size)
        self.combine = nn.Linear(2 * hidden_size, hidden_size)
        self.drop = layers.dropout()
        self.head = layers.linear(hidden_size, num_classes)

    def decode(self, x: torch.Tensor, y: torch.Tensor | None = None, teacher_forcing: float = 0.0,
               steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N, vocab, T) and attention weights (N, T, S) of decoding ``x``: ``T`` = ``y``'s steps (feeding
        its tokens with probability ``teacher_forcing``) or ``steps``, stopping early once every sequence has
        emitted <eos> when no ``y`` is given."""
        hidden, valid = self.encoder.steps(x)
        mean = (hidden * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        keys = self.keys(hidden) if self.keys is not None else None
        values = self.values(hidden)
        state = torch.tanh(self.bridge(mean))
        memory = torch.zeros_like(state) if self.cell == "lstm" else None
        fixed_context = self.values(mean)  # attention=none: the one vector every step reads
        output = torch.zeros_like(state)  # luong's input feeding: the previous attentional output
        token = torch.full((len(x),), BOS_ID, dtype=torch.long, device=x.device)
        total = y.shape[1] if y is not None else (steps or self.max_output_len)
        scores, weights, done = [], [], torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for t in range(total):
            if self.attention_kind == "bahdanau":
                context, weight = self.attend(state, keys, values, valid)
                feed = context
            elif self.attention_kind == "luong":
                feed = output
            else:
                context, weight, feed = fixed_context, None, fixed_context
            step_input = torch.cat([self.drop(self.embedding(token)), feed], dim=-1)
            if memory is not None:
                state, memory = self.decoder(step_input, (state, memory))
            else:
                state = self.decoder(step_input, state)
            if self.attention_kind == "luong":
                context, weight = self.attend(state, keys, values, valid)
            output = torch.tanh(self.combine(torch.cat([state, context], dim=-1)))
            logits = self.head(self.drop(output))
            scores.append(logits)
            if weight is not None:
                weights.append(weight)
            guess = logits.argmax(dim=-1)
            if y is not None and teacher_forcing >= 1:
                token = y[:, t]
            elif y is not None and teacher_forcing > 0:
                token = torch.where(torch.rand(len(x), device=x.device) < teacher_forcing, y[:, t], guess)
            else:
                token = guess
            if y is None:
                done = done | (guess == EOS_ID)
                if bool(done.all()):
                    break
        attention = torch.stack(weights, dim=1) if weights else hidden.new_zeros(len(x), len(scores), x.shape[1])
        return torch.stack(scores, dim=2), attention

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (N, vocab, T). With targets ``y``: teacher-forced, at the ``teacher_forcing`` ratio while training
        and fully in evaluation mode (the validation loss); without: greedy decoding (``max_output_len`` steps at
        most), as ``generate``."""
        if y is not None:
            return self.decode(x, y, self.teacher_forcing if self.training else 1.0)[0]
        return self.decode(x)[0]

    def generate(self, x: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: token ids (N, T) and attention weights (N, T, S)."""
        scores, attention = self.decode(x, steps=steps)
        return scores.argmax(dim=1), attention

