"""Sequence to sequence: the translation data, attention by hand, teacher forcing, greedy decoding, the metrics,
and the four stages end to end."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FAST
from deepsweep.config import ConfigError, validate
from deepsweep.data.sequences import BOS_ID, EOS_ID, SyntheticTranslation
from deepsweep.factory import build_model, check_compatible
from deepsweep.metrics import sequence_metrics
from deepsweep.models.seq2seq import Attention, TransformerSeq2Seq


def test_translation_pairs_are_what_their_task_says():
    for task, rule in (("reverse", lambda s: s[::-1]), ("sort", lambda s: "".join(sorted(s)))):
        pairs = SyntheticTranslation(task=task, min_len=3, max_len=6, symbols=4, num_samples=50).pairs()
        assert all(target == rule(source) and 3 <= len(source) <= 6 and set(source) <= set("abcd")
                   for source, target in pairs)
    months = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
              "november", "december")
    for source, target in SyntheticTranslation(task="dates", num_samples=200, split_seed=1).pairs():
        year, month, day = target.split("-")
        assert len(target) == 10 and year in source and str(int(day)) in source
        assert f"{month}/" in source or months[int(month) - 1][:3] in source
    splits, meta = SyntheticTranslation(task="reverse", min_len=2, max_len=4, num_samples=40).load()
    vocab = meta["vocab"]
    assert vocab[BOS_ID] == "<bos>" and vocab[EOS_ID] == "<eos>" and meta["vocab_size"] == len(splits.class_names)
    for x, y in zip(splits.train.x, splits.train.y):
        source = [vocab[i] for i in x if i]
        target = [vocab[i] for i in y if i]
        assert target == source[::-1] + ["<eos>"]
    again, _ = SyntheticTranslation(task="reverse", min_len=2, max_len=4, num_samples=40).load()
    assert (again.test.x == splits.test.x).all()


@pytest.mark.parametrize("how", ["bahdanau", "luong"])
def test_attention_weights_sum_to_one_and_skip_padding(how):
    torch.manual_seed(0)
    attend = Attention(how, 8)
    state, keys, values = torch.randn(3, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False], [True, False, False, False, False]])
    context, weights = attend(state, keys, values, valid)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    assert (weights[~valid] == 0).all() and torch.equal(weights[2], torch.tensor([1.0, 0, 0, 0, 0]))
    assert torch.allclose(context, (weights.unsqueeze(-1) * values).sum(dim=1))
    if how == "luong":  # dot product: the softmax of the state against each key
        expected = (keys[0] @ state[0]).softmax(dim=0)
    else:  # additive: v . tanh(W s + k_j)
        expected = attend.score(torch.tanh(attend.query(state[0]) + keys[0])).squeeze(-1).softmax(dim=0)
    assert torch.allclose(weights[0], expected)


def _model(compose, *overrides):
    cfg = compose("data=translation", "model=seq2seq", "pretrain=none", "model.hidden_size=16",
                  "model.embedding_dim=8", *overrides)
    return build_model(cfg, (6,), 12, vocab_size=12)


@pytest.mark.parametrize("how", ["bahdanau", "luong", "none"])
def test_teacher_forcing_feeds_the_true_tokens_and_greedy_decoding_its_own(compose, how):
    model = _model(compose, f"model.attention={how}").eval()
    x = torch.randint(5, 12, (4, 6))
    y = torch.randint(5, 12, (4, 7))
    forced = model.decode(x, y, teacher_forcing=1.0)[0]
    # Step t reads the true tokens before t only: changing the targets from step 3 on leaves steps 0..3 alone.
    z = y.clone()
    z[:, 3:] = 5
    assert torch.allclose(model.decode(x, z, teacher_forcing=1.0)[0][:, :, :4], forced[:, :, :4])
    assert not torch.allclose(model.decode(x, z, teacher_forcing=1.0)[0][:, :, 4:], forced[:, :, 4:])
    # Without teacher forcing the targets only set the length: the scores are greedy decoding's.
    free = model.decode(x, y, teacher_forcing=0.0)[0]
    tokens, attention = model.generate(x, steps=7)
    assert torch.allclose(free[:, :, : tokens.shape[1]], model.decode(x, steps=7)[0])
    assert torch.equal(free.argmax(dim=1)[:, : tokens.shape[1]], tokens)
    assert attention.shape[:2] == tokens.shape and attention.shape[2] == 6
    if how != "none":
        assert torch.allclose(attention.sum(dim=-1), torch.ones(tokens.shape))


def test_greedy_decoding_stops_once_every_sequence_ended(compose, monkeypatch):
    model = _model(compose).eval()
    scores = torch.full((2, 12), -10.0)
    scores[:, EOS_ID] = 10.0
    monkeypatch.setattr(model.head, "forward", lambda h: scores.expand(len(h), -1).clone())
    tokens, _ = model.generate(torch.randint(5, 12, (2, 6)))
    assert tokens.tolist() == [[EOS_ID], [EOS_ID]]


def test_sequence_metrics_by_hand():
    target = torch.tensor([[7, 8, 9, EOS_ID], [7, 8, EOS_ID, 0], [9, EOS_ID, 0, 0]])
    predicted = torch.tensor([[7, 8, 9, EOS_ID, 5],  # whole
                              [7, 9, EOS_ID, 7, 7],  # 2 of 3; what follows <eos> is padding
                              [9, 9, EOS_ID, 0, 0]])  # 1 of 2: no <eos> where the target ends
    scores = sequence_metrics(predicted, target)
    assert scores == pytest.approx({"token_accuracy": (4 + 2 + 1) / 9, "exact_match": 1 / 3})
    assert sequence_metrics(torch.tensor([[7]]), torch.tensor([[7, EOS_ID]])) == pytest.approx(
        {"token_accuracy": 0.5, "exact_match": 0.0})


def test_translation_needs_the_seq2seq_family_and_valid_fields(compose):
    with pytest.raises(ConfigError, match=r"model=gru does not read sequence data labelled with an output sequence "
                                          r"\(data=translation\); models for it: seq2seq, seq2seq_transformer"):
        check_compatible(compose("data=translation", "model=gru", "pretrain=none"))
    with pytest.raises(ConfigError, match="model.attention: 'cosine' is not allowed; .*bahdanau, luong, none"):
        validate(compose("data=translation", "model=seq2seq", "model.attention=cosine"))
    with pytest.raises(ConfigError, match="data.task: 'parity' is not allowed; .*reverse, sort or dates"):
        validate(compose("data=translation", "model=seq2seq", "data.task=parity"))
    with pytest.raises(ConfigError, match=r"regularizer.dropout_kind: 'gaussian' is not allowed; allowed: one of "
                                          r"standard, dropconnect, gaussian; with model=transformer or "
                                          r"seq2seq_transformer only standard"):
        validate(compose("data=translation", "model=seq2seq_transformer", "regularizer=gaussian_dropout"))
    validate(compose("data=translation", "model=seq2seq", "regularizer=gaussian_dropout"))
    with pytest.raises(ConfigError, match=r"model.teacher_forcing: 1.5 is out of range"):
        validate(compose("data=translation", "model=seq2seq", "model.teacher_forcing=1.5"))


def test_stages_translate_and_score_by_length(compose, tmp_path):
    from deepsweep.stages.pipeline import execute

    cfg = compose("experiment=translation_dates", "data.task=reverse", "data.min_len=3", "data.max_len=12",
                  "data.num_samples=300", "model.hidden_size=16", "model.teacher_forcing=0.5", "finetune.label_fraction=0.5",
                  *FAST, "logger.figures=true")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, artifacts)
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    assert {"token_accuracy", "exact_match", "exact_match/length_1-10", "exact_match/length_11-20"} == set(metrics)
    lengths = (artifacts / "evaluate" / "length.csv").read_text().splitlines()
    assert lengths[0] == "source_length,sequences,exact_match,token_accuracy" and len(lengths) == 3
    assert sum(int(row.split(",")[1]) for row in lengths[1:]) == 60  # every test sequence, once
    translations = (artifacts / "evaluate" / "translations.csv").read_text().splitlines()
    assert translations[0] == "source,target,predicted,exact" and len(translations) == 51
    source, target = translations[1].split(",")[:2]
    assert target == source[::-1]
    assert (artifacts / "evaluate" / "attention.png").stat().st_size > 0
    curves = (artifacts / "finetune" / "curves.csv").read_text().splitlines()
    assert {"val_acc", "val_exact_match"} <= set(curves[0].split(","))


@pytest.mark.parametrize("how", ["bahdanau", "none"])
def test_padding_after_a_source_changes_nothing(compose, how):
    # Packed encoder (the backward direction starts at the last token) and masked attention: a source padded
    # to 6 steps decodes exactly as the same 3 tokens alone.
    model = _model(compose, f"model.attention={how}").eval()
    tokens = torch.tensor([[7, 9, 5]])
    padded = torch.tensor([[7, 9, 5, 0, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(model.decode(tokens, steps=4)[0], model.decode(padded, steps=4)[0], atol=1e-6)


def _transformer(compose, *overrides) -> TransformerSeq2Seq:
    cfg = compose("data=translation", "model=seq2seq_transformer", "pretrain=none", "model.d_model=16",
                  "model.heads=2", "model.ff_dim=32", *overrides)
    return build_model(cfg, (6,), 12, vocab_size=12)


def test_transformer_decoder_reads_only_earlier_target_tokens_and_decodes_as_it_trains(compose):
    torch.manual_seed(0)
    model = _transformer(compose).eval()
    x, y = torch.randint(5, 12, (4, 6)), torch.randint(5, 12, (4, 7))
    with torch.no_grad():
        forced = model(x, y)
        assert forced.shape == (4, 12, 7)
        # The causal mask: step t reads <bos> and the targets before t, so changing them from step 3 on leaves
        # steps 0..3 as they were and changes step 4.
        z = y.clone()
        z[:, 3:] = 5
        changed = model(x, z)
        assert torch.allclose(changed[:, :, :4], forced[:, :, :4], atol=1e-6)
        assert not torch.allclose(changed[:, :, 4], forced[:, :, 4])
        # Greedy decoding one token a step gives the scores that teacher forcing on its own guesses gives at once.
        tokens, attention = model.generate(x, steps=7)
        greedy = model.decode(x, steps=7)[0]
        assert torch.allclose(model(x, tokens)[:, :, : tokens.shape[1]], greedy, atol=1e-5)
        assert attention.shape == (4, tokens.shape[1], 6)


def test_transformer_attention_sums_to_one_and_ignores_padding(compose):
    torch.manual_seed(0)
    model = _transformer(compose).eval()
    with torch.no_grad():
        tokens, attention = model.generate(torch.tensor([[7, 9, 5, 0, 0, 0]]), steps=4)
        assert torch.allclose(attention.sum(dim=-1), torch.ones(tokens.shape)) and (attention[..., 3:] == 0).all()
        assert torch.allclose(model.decode(torch.tensor([[7, 9, 5]]), steps=4)[0],
                              model.decode(torch.tensor([[7, 9, 5, 0, 0, 0]]), steps=4)[0], atol=1e-5)
        # A source with no token is attended evenly, not turned into NaN.
        assert torch.isfinite(model.decode(torch.zeros(1, 6, dtype=torch.long), steps=3)[0]).all()


def test_transformer_translates_through_the_stages(compose, tmp_path):
    from deepsweep.stages.pipeline import execute

    cfg = compose("experiment=translation_dates_transformer", "data.task=reverse", "data.min_len=3",
                  "data.max_len=8", "data.num_samples=200", "model.d_model=16", "model.heads=2", "model.ff_dim=32",
                  *FAST, "logger.figures=true")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, artifacts)
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    assert {"token_accuracy", "exact_match", "exact_match/length_1-10"} == set(metrics)
    assert (artifacts / "evaluate" / "attention.png").stat().st_size > 0
    assert len((artifacts / "evaluate" / "translations.csv").read_text().splitlines()) == 41


def test_the_config_rules_allow_exactly_what_the_decoders_build():
    """Validation names the allowed words before any work (constraints, no torch); the families map the same
    words to layers. One list changed alone would let a config pass validation and fail at build, or refuse a
    word the family builds."""
    from deepsweep.constraints import RULES
    from deepsweep.models.seq2seq import ATTENTION, FEED_FORWARD_ACTIVATIONS

    rules = dict(RULES)
    assert rules["model.attention"].allowed == f"one of {', '.join(ATTENTION)}"
    assert rules["model.activation"].allowed == f"one of {', '.join(FEED_FORWARD_ACTIVATIONS)}"
