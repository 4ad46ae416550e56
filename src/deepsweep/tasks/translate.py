"""Sequence to sequence: the family decodes the target one token at a time (``models.seq2seq``). The loss
group's loss is taken over the target's tokens (<eos> included, padding not), teacher-forced as the family
trains (the recurrent one at its ``teacher_forcing`` ratio, the Transformer fully; the validation loss fully
teacher-forced); validation also decodes greedily, as
evaluate does, and scores token accuracy (``val/acc``) and exact match (``val/exact_match``) of that."""

from __future__ import annotations

import torch

from deepsweep.metrics import sequence_metrics
from deepsweep.tasks.classify import ClassifyTask


class TranslateTask(ClassifyTask):
    kind = "sequence"
    target = "tokens"

    def logits_and_targets(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        scores = self.model(x, y)  # (N, vocab, T); teacher forcing at the family's ratio while training
        real = y != 0
        return scores.movedim(1, -1)[real], y[real]

    def validation_batch(self, batch: tuple[torch.Tensor, ...]) -> None:
        x, y = batch
        logits, target = self.logits_and_targets(batch)
        self.track("val/loss", self.criterion(logits, target), len(target))
        predicted, _ = self.model.generate(x, steps=y.shape[1])
        predicted = torch.nn.functional.pad(predicted, (0, y.shape[1] - predicted.shape[1]))
        self._val_predictions.append((predicted, y))

    def epoch_scores(self, predicted: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = sequence_metrics(predicted, target)
        device = predicted.device  # on the device: a data-parallel fit reduces them across ranks
        return {"val/acc": torch.tensor(scores["token_accuracy"], device=device),
                "val/exact_match": torch.tensor(scores["exact_match"], device=device)}
