"""Self-supervised pretraining of a sequence encoder on unlabeled inputs (labels are never read).

``next_step`` - language-model style: from the steps up to t, predict step t+1 (the next token, or the
next value of a series by squared error). Needs a causal encoder: a one-directional RNN/LSTM/GRU.
``masked_token`` - BERT-style (Devlin et al. 2019): pick ``mask_prob`` of the tokens; of those, 80%
become <mask>, 10% a random token, 10% stay; predict the original tokens at the picked positions.
"""

from __future__ import annotations



import torch
from torch import nn
from torch.nn import functional as F

from deepsweep.models.base import Family
from deepsweep.tasks.common import LossTask, TaskSetup

METHODS = ("next_step", "masked_token")
MASK_ID, FIRST_WORD_ID = 1, 3  # ids 0-2 are <pad>, <mask>, <unk> (deepsweep.data.sequences.SPECIALS)


def mask_tokens(x: torch.Tensor, mask_prob: float, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 corruption of token ids; returns (corrupted ids, which positions to predict)."""
    picked = (torch.rand(x.shape, device=x.device) < mask_prob) & (x != 0)
    roll = torch.rand(x.shape, device=x.device)
    corrupted = x.clone()
    corrupted[picked & (roll < 0.8)] = MASK_ID
    random_pos = picked & (roll >= 0.8) & (roll < 0.9)
    corrupted[random_pos] = torch.randint(FIRST_WORD_ID, vocab_size, (int(random_pos.sum()),), device=x.device)
    return corrupted, picked


class SequencePretrainTask(LossTask):
    kind = "sequence"

    def __init__(
        self,
        model: Family,
        setup: TaskSetup,
        *,
        method: str = "next_step",
        mask_prob: float = 0.15,
    ) -> None:
        super().__init__(setup)
        if method not in METHODS:
            raise ValueError(f"pretrain.task.method: unknown method {method!r}; allowed: {', '.join(METHODS)}")
        vocab = getattr(model, "vocab_size", None)
        if method == "masked_token" and vocab is None:
            raise ValueError("pretrain=masked_token needs token inputs (text data such as data=sms_spam); "
                             "for real-valued series use pretrain=next_step")
        if method == "next_step" and getattr(model.encoder, "bidirectional", True):
            raise ValueError("pretrain=next_step needs a causal encoder: model=lstm/gru/rnn with "
                             "model.bidirectional=false (a bidirectional RNN or a Transformer sees the next step)")
        self.encoder = model.encoder
        self.method, self.mask_prob, self.vocab_size = method, mask_prob, vocab
        outputs = vocab if vocab is not None else model.input_shape[-1]
        self.predict = nn.Linear(model.feature_dim, outputs)

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "masked_token":
            corrupted, picked = mask_tokens(x, self.mask_prob, self.vocab_size)
            steps, _ = self.encoder.steps(corrupted)
            if not picked.any():
                return steps.sum() * 0.0
            return F.cross_entropy(self.predict(steps[picked]), x[picked])
        steps, valid = self.encoder.steps(x)
        out = self.predict(steps[:, :-1])
        if self.vocab_size is not None:
            target_valid = valid[:, 1:]
            return F.cross_entropy(out[target_valid], x[:, 1:][target_valid])
        return F.mse_loss(out, x[:, 1:])

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, _ = batch
        loss = self.regularization.penalized(self._loss(x), self.encoder)
        self.track("train/loss", loss, len(x))
        return loss

    def validation_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, _ = batch
        self.track("val/loss", self._loss(x), len(x))


WORD2VEC_METHODS = ("skipgram", "cbow")


def context_pairs(x: torch.Tensor, window: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Word2vec's (centre, context, offset) pairs of a batch of token ids (B, L): every non-padding position
    with the non-padding tokens up to ``b`` steps on either side, ``b`` drawn per centre from 1..window
    (word2vec's reduced window, which weighs near words more). Returns three flat tensors of positions:
    batch row, centre step and context step."""
    b, length = x.shape
    valid = x != 0
    reach = torch.randint(1, window + 1, (b, length), generator=generator).to(x.device)
    rows, centres, contexts = [], [], []
    steps = torch.arange(length, device=x.device)
    for offset in range(-window, window + 1):
        if offset == 0:
            continue
        context = steps + offset
        inside = (context >= 0) & (context < length)
        keep = valid & (reach >= abs(offset)) & inside.unsqueeze(0)
        keep &= valid[:, context.clamp(0, length - 1)]
        row, centre = keep.nonzero(as_tuple=True)
        rows.append(row)
        centres.append(centre)
        contexts.append(centre + offset)
    return torch.cat(rows), torch.cat(centres), torch.cat(contexts)


class Word2VecTask(LossTask):
    """word2vec (Mikolov et al. 2013) trains the sequence family's token embedding, which fine-tuning then
    starts from. ``skipgram``: each centre word's embedding scores its context words (within a window of up to
    ``window`` steps) against ``num_negatives`` noise words; ``cbow``: the mean embedding of the context
    scores the centre word. Negative sampling: -log s(u_o . v) - sum_k log s(-u_k . v), noise words drawn
    from the unigram counts seen so far in training raised to 3/4. The output vectors u are the task's own and
    are dropped after pretraining; only the embedding v (the model's) is kept, the rest of the encoder stays
    as initialized."""

    kind = "sequence"

    def __init__(self, model: Family, setup: TaskSetup, *, method: str = "skipgram", window: int = 5,
                 num_negatives: int = 5) -> None:
        super().__init__(setup)
        if method not in WORD2VEC_METHODS:
            raise ValueError(f"pretrain.task.method: unknown method {method!r}; allowed: {', '.join(WORD2VEC_METHODS)}")
        embedding = getattr(getattr(model.encoder, "inputs", None), "embedding", None)
        if embedding is None:
            raise ValueError("pretrain=word2vec trains a token embedding: it needs text data (data=sms_spam) and a "
                             "sequence family (lstm, gru, rnn, transformer)")
        self.encoder = model.encoder
        self.embedding = embedding
        self.output = nn.Embedding(embedding.num_embeddings, embedding.embedding_dim)
        nn.init.zeros_(self.output.weight)  # word2vec's start: input vectors random, output vectors zero
        self.method, self.window, self.num_negatives = method, window, num_negatives
        self.register_buffer("counts", torch.zeros(embedding.num_embeddings))

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        rows, centres, contexts = context_pairs(x, self.window)
        if len(rows) == 0:
            return self.embedding.weight.sum() * 0.0
        centre_ids, context_ids = x[rows, centres], x[rows, contexts]
        if self.method == "skipgram":
            inputs, targets = self.embedding(centre_ids), context_ids
        else:  # the mean embedding of each centre's context words, scored against the centre word
            key = rows * x.shape[1] + centres
            slots, index = torch.unique(key, return_inverse=True)
            total = torch.zeros(len(slots), self.embedding.embedding_dim, device=x.device)
            total = total.index_add(0, index, self.embedding(context_ids))
            inputs = total / torch.bincount(index, minlength=len(slots)).unsqueeze(1)
            targets = x.view(-1)[slots]
        noise = (self.counts + 1e-3).pow(0.75)
        noise[:FIRST_WORD_ID] = 0  # never <pad>, <mask>, <unk>
        negatives = torch.multinomial(noise, len(targets) * self.num_negatives, replacement=True)
        positive = (inputs * self.output(targets)).sum(-1)
        negative = torch.bmm(self.output(negatives).view(len(targets), self.num_negatives, -1),
                             inputs.unsqueeze(2)).squeeze(2)
        return -(F.logsigmoid(positive) + F.logsigmoid(-negative).sum(1)).mean()

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, _ = batch
        self.counts += torch.bincount(x.flatten(), minlength=len(self.counts)).to(self.counts.dtype)
        loss = self.regularization.penalized(self._loss(x), self.embedding)
        self.track("train/loss", loss, len(x))
        return loss

    def validation_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, _ = batch
        self.track("val/loss", self._loss(x), len(x))
