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
