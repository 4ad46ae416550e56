"""Sequence to sequence: an encoder, and a decoder that reads it through attention. ``Seq2Seq`` is recurrent
(below); ``TransformerSeq2Seq`` is the encoder-decoder Transformer of Vaswani et al. (2017).

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
from deepsweep.models.sequence import (PositionalEncoding, RecurrentEncoder, TransformerEncoder, _Inputs,
                                      attention_block_dropout, padding_mask)
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
        weights = scores.masked_fill(padding_mask(valid), float("-inf")).softmax(dim=-1)
        return (weights.unsqueeze(1) @ values).squeeze(1), weights


class TokenDecoder(Family):
    """A family that reads token ids and writes a token sequence: ``decode(x, steps)`` decodes greedily (scores
    (N, vocab, T) and attention weights (N, T, S)) for at most ``max_output_len`` steps (by default twice
    the source length plus 2); ``generate`` gives its tokens."""

    kind = "sequence"
    target = "tokens"

    def __init__(self, input_shape: Sequence[int], num_classes: int, max_output_len: int | None) -> None:
        super().__init__(tuple(input_shape), num_classes)
        self.max_output_len = max_output_len or 2 * int(input_shape[0]) + 2

    def decode(self, x: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def generate(self, x: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: token ids (N, T) and attention weights (N, T, S)."""
        scores, attention = self.decode(x, steps=steps)
        return scores.argmax(dim=1), attention


class Seq2Seq(TokenDecoder):
    """A recurrent encoder (``cell``, ``num_layers``, ``bidirectional``: the sequence families' encoder, so
    sequence pretraining applies to it) and a one-layer decoder of the same cell with ``attention``.
    ``encoder``: what pretraining learns and fine-tuning loads; ``head``: the decoder's output layer."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, cell: str = "gru", hidden_size: int = 128,
                 embedding_dim: int = 64, num_layers: int = 1, bidirectional: bool = True,
                 attention: str = "bahdanau", teacher_forcing: float = 1.0, max_output_len: int | None = None,
                 vocab_size: int | None = None, layers: Layers | None = None) -> None:
        super().__init__(input_shape, num_classes, max_output_len)
        if cell not in DECODER_CELLS:
            raise ValueError(f"model.cell: unknown cell {cell!r}; allowed: {', '.join(DECODER_CELLS)}")
        if attention not in ATTENTION:
            raise ValueError(f"model.attention: unknown attention {attention!r}; allowed: {', '.join(ATTENTION)}")
        if vocab_size is None:
            raise ValueError("model=seq2seq reads token ids: use a data option with a vocabulary (data=translation)")
        layers = layers or Layers()
        self.vocab_size, self.cell, self.attention_kind = vocab_size, cell, attention
        self.attends = attention != "none"
        self.teacher_forcing = float(teacher_forcing)
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



FEED_FORWARD_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class DecoderBlock(nn.Module):
    """A pre-norm Transformer decoder block: causal self-attention over the target so far, attention over the
    encoder steps, a feed-forward layer; each a residual branch. Written out rather than taken from
    nn.TransformerDecoderLayer, which discards the cross-attention weights that evaluate's heatmap shows."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.self_attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, ff_dim), FEED_FORWARD_ACTIVATIONS[activation](),
                                          nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor,
                causal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(new h (N, T, D), cross-attention weights (N, T, S), the mean over heads)."""
        q = self.norms[0](h)
        h = h + self.drop(self.self_attention(q, q, q, attn_mask=causal, need_weights=False)[0])
        q = self.norms[1](h)
        attended, weights = self.cross_attention(q, memory, memory, key_padding_mask=memory_padding)
        h = h + self.drop(attended)
        return h + self.drop(self.feed_forward(self.norms[2](h))), weights


class TransformerSeq2Seq(TokenDecoder):
    """The Transformer encoder-decoder: the sequence families' Transformer encoder (so masked-token pretraining
    applies to it), and ``num_layers`` decoder blocks reading the target shifted right (<bos> first) under a
    causal mask. Training is teacher-forced, every step at once, as Transformers train; ``generate`` decodes
    greedily, one token a step. The attention it reports is the last block's over the source, averaged over
    heads. ``encoder``: what pretraining learns and fine-tuning loads; ``head``: the output layer."""

    attends = True

    def __init__(self, input_shape: Sequence[int], num_classes: int, d_model: int = 64, heads: int = 4,
                 num_layers: int = 2, ff_dim: int = 128, activation: str = "gelu", max_output_len: int | None = None,
                 vocab_size: int | None = None, layers: Layers | None = None) -> None:
        super().__init__(input_shape, num_classes, max_output_len)
        if activation not in FEED_FORWARD_ACTIVATIONS:
            raise ValueError(f"model.activation: unknown {activation!r}; allowed: {', '.join(FEED_FORWARD_ACTIVATIONS)}")
        if vocab_size is None:
            raise ValueError("model=seq2seq_transformer reads token ids: use a data option with a vocabulary "
                             "(data=translation)")
        layers = layers or Layers()
        dropout = attention_block_dropout(d_model, heads, layers)
        self.vocab_size = vocab_size
        self.encoder = TransformerEncoder(_Inputs(input_shape, vocab_size, d_model), d_model, heads, num_layers,
                                          ff_dim, int(input_shape[0]), "mean", True, dropout, activation)
        self.feature_dim = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.position = PositionalEncoding(d_model, self.max_output_len)
        self.blocks = nn.ModuleList(DecoderBlock(d_model, heads, ff_dim, dropout, activation)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = layers.linear(d_model, num_classes)

    def _decode(self, tokens: torch.Tensor, memory: torch.Tensor,
                padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N, T, vocab) for every prefix of ``tokens`` (N, T), and the last block's attention weights."""
        steps = tokens.shape[1]
        if steps > self.max_output_len:
            raise ValueError(f"model.max_output_len: {self.max_output_len} < a target of {steps} tokens")
        causal = torch.ones(steps, steps, dtype=torch.bool, device=tokens.device).triu(1)
        h = self.position(self.embedding(tokens))
        for block in self.blocks:
            h, weights = block(h, memory, padding, causal)
        return self.head(self.norm(h)), weights

    def _memory_and_padding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory, valid = self.encoder.steps(x)
        return memory, padding_mask(valid)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (N, vocab, T): teacher-forced on ``y``, or greedy decoding without it (as ``generate``)."""
        if y is None:
            return self.decode(x)[0]
        memory, padding = self._memory_and_padding(x)
        shifted = torch.cat([torch.full_like(y[:, :1], BOS_ID), y[:, :-1]], dim=1)
        return self._decode(shifted, memory, padding)[0].movedim(-1, 1)

    def decode(self, x: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: scores (N, vocab, T) and attention weights (N, T, S), ``steps`` tokens at most
        (``max_output_len`` without it), stopping once every sequence has emitted <eos>. Each step runs the
        decoder over the whole prefix again (no key/value cache): a date's 11 tokens are 11 passes over 66
        prefix positions in all, where a cache would compute 11."""
        memory, padding = self._memory_and_padding(x)
        tokens = torch.full((len(x), 1), BOS_ID, dtype=torch.long, device=x.device)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        scores, attention = [], []
        for _ in range(min(steps or self.max_output_len, self.max_output_len)):
            step_scores, weights = self._decode(tokens, memory, padding)
            scores.append(step_scores[:, -1])
            attention.append(weights[:, -1])
            guess = step_scores[:, -1].argmax(dim=-1)
            tokens = torch.cat([tokens, guess.unsqueeze(1)], dim=1)
            done = done | (guess == EOS_ID)
            if bool(done.all()):
                break
        return torch.stack(scores, dim=2), torch.stack(attention, dim=1)
