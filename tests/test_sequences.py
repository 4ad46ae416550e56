"""Sequence families (RNN, LSTM, GRU, Transformer), their data, and sequence pretraining."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FAST, requires_shared
from deepsweep.config import ConfigError
from deepsweep.data.sequences import SPECIALS, build_vocab, encode, tokenize
from deepsweep.factory import check_compatible, build_model
from deepsweep.models.sequence import LockedDropout
from deepsweep.stages.pipeline import execute
from deepsweep.tasks.sequence_ssl import MASK_ID, SequencePretrainTask, mask_tokens
from deepsweep.tasks.common import TaskSetup


@pytest.mark.parametrize("overrides", [["model=rnn"], ["model=lstm", "model.num_layers=2", "model.bidirectional=true"],
                                       ["model=gru", "model.pooling=mean"], ["model=transformer"],
                                       ["model=transformer", "model.pooling=mean", "model.norm_first=false"]])
def test_families_on_tokens_and_series(compose, overrides):
    cfg = compose("data=sms_spam", *overrides)
    text = build_model(cfg, (12,), 2, vocab_size=50)
    ids = torch.randint(3, 50, (4, 12))
    ids[0, 6:] = 0  # padding
    assert text(ids).shape == (4, 2)
    steps, valid = text.encoder.steps(ids)
    assert steps.shape[:2] == (4, 12) and not valid[0, 6:].any()
    series = build_model(cfg, (30, 1), 2)
    assert series(torch.randn(5, 30, 1)).shape == (5, 2)
    assert series.encoder(torch.randn(5, 30, 1)).shape == (5, series.feature_dim)


def test_padding_does_not_change_the_transformer_output(compose):
    model = build_model(compose("data=sms_spam", "model=transformer"), (12,), 2, vocab_size=50).eval()
    ids = torch.randint(3, 50, (1, 5))
    padded = torch.cat([ids, torch.zeros(1, 7, dtype=torch.long)], dim=1)
    short = build_model(compose("data=sms_spam", "model=transformer"), (5,), 2, vocab_size=50).eval()
    short.load_state_dict(model.state_dict())
    assert torch.allclose(model(padded), short(ids), atol=1e-5)


def test_bidirectional_doubles_features_and_stacking_adds_layers(compose):
    model = build_model(compose("data=sms_spam", "model=lstm", "model.num_layers=3", "model.bidirectional=true",
                                 "model.hidden_size=16"), (10,), 2, vocab_size=20)
    assert model.feature_dim == 32 and len(model.encoder.rnns) == 3
    assert model.encoder.rnns[1].input_size == 32


def test_locked_dropout_uses_one_mask_for_every_step():
    torch.manual_seed(0)
    out = LockedDropout(0.5).train()(torch.ones(3, 20, 8))
    assert torch.equal(out, out[:, :1].expand_as(out))
    assert (out == 0).any() and torch.equal(LockedDropout(0.5).eval()(torch.ones(2, 4, 3)), torch.ones(2, 4, 3))


def test_orthogonal_init_reaches_recurrent_weights(compose):
    model = build_model(compose("data=sms_spam", "model=gru", "init=orthogonal", "model.hidden_size=16"), (10,), 2,
                         vocab_size=20)
    for gate in model.encoder.rnns[0].weight_hh_l0.detach().chunk(3):
        assert torch.allclose(gate @ gate.T, torch.eye(16), atol=1e-4)


def test_bert_masking_is_80_10_10():
    torch.manual_seed(0)
    x = torch.randint(3, 1000, (400, 100))
    x[:, 90:] = 0
    corrupted, picked = mask_tokens(x, 0.15, 1000)
    assert not picked[:, 90:].any()  # padding is never picked
    assert picked.float().sum() / (x != 0).sum() == pytest.approx(0.15, abs=0.01)
    masked = (corrupted[picked] == MASK_ID).float().mean()
    unchanged = (corrupted[picked] == x[picked]).float().mean()
    assert masked == pytest.approx(0.8, abs=0.02)
    assert unchanged == pytest.approx(0.1 + 0.1 / 997, abs=0.02)
    assert torch.equal(corrupted[~picked], x[~picked])


def test_next_step_needs_a_causal_encoder(compose):
    cfg = compose("data=sms_spam", "model=lstm", "model.bidirectional=true")
    model = build_model(cfg, (10,), 2, vocab_size=20)
    with pytest.raises(ValueError, match="next_step needs a causal encoder"):
        SequencePretrainTask(model, TaskSetup(None), method="next_step")
    with pytest.raises(ValueError, match="masked_token needs token inputs"):
        SequencePretrainTask(build_model(cfg, (10, 1), 2), TaskSetup(None), method="masked_token")
    with pytest.raises(ConfigError, match="pretrain=autoencoder does not apply to sequence data"):
        check_compatible(compose("data=sms_spam", "model=lstm"))


def test_vocabulary_and_encoding():
    assert tokenize("Free entry!! Call 0800") == ["free", "entry", "!", "!", "call", "0800"]
    vocab = build_vocab(["a b b", "b c"], min_freq=2, max_size=10)
    assert vocab == [*SPECIALS, "b"]
    assert encode(["b a z"], vocab, 5).tolist() == [[3, 2, 2, 0, 0]]


@pytest.mark.parametrize("overrides", [
    pytest.param(["data=sms_spam", "model=lstm", "pretrain=next_step", "data.max_len=16", "data.max_vocab=500"],
                 marks=requires_shared("sms_spam")),
    pytest.param(["data=sms_spam", "model=transformer", "pretrain=masked_token", "data.max_len=16",
                  "data.max_vocab=500", "model.num_layers=1"], marks=requires_shared("sms_spam")),
    pytest.param(["data=ecg200", "model=gru", "pretrain=next_step"], marks=requires_shared("ecg200")),
])
def test_sequence_pipelines_end_to_end(compose, tmp_path, overrides):
    """One epoch already ranks the test split above chance (ROC-AUC > 0.6; a constant or random
    predictor gets 0.5), and metrics.json holds the saved model's own accuracy and ROC-AUC there."""
    from sklearn.metrics import roc_auc_score

    from deepsweep.data.loaders import PreparedData

    cfg = compose(*overrides, "pretrain.epochs=1", "trainer.max_epochs=1")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, artifacts)
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.6  # measured 0.86 (sms_spam lstm), 0.94 (transformer), 0.73 (ecg200)
    data = PreparedData.load(artifacts / "prepare")
    model = build_model(cfg, data.input_shape, data.num_classes, data.meta.get("vocab_size"))
    model.load_state_dict(torch.load(artifacts / "finetune" / "model.pt", weights_only=True)["state_dict"])
    with torch.no_grad():
        logits = model.eval()(data.test.x)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(1) == data.test.y).float().mean().item())
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(data.test.y, logits.softmax(1)[:, 1]), abs=1e-6)
    meta = json.loads((artifacts / "prepare" / "meta.json").read_text())
    assert meta["kind"] == "sequence"
    if "data=sms_spam" in overrides:
        vocab = json.loads((artifacts / "prepare" / "vocab.json").read_text())
        assert vocab[:3] == list(SPECIALS) and meta["vocab_size"] == len(vocab)


def test_gradients_vanish_faster_through_a_simple_rnn(compose):
    """How much of the loss gradient reaches the first of 40 steps, relative to the last one: the
    vanishing gradient that gating (LSTM, GRU) slows down."""
    reach = {}
    for cell in ("rnn", "lstm", "gru"):
        torch.manual_seed(0)
        model = build_model(compose("data=synthetic", f"model={cell}", "init=default"), (40, 1), 2)
        x = torch.randint(0, 2, (64, 40, 1)).float().requires_grad_()
        torch.nn.functional.cross_entropy(model(x), torch.randint(0, 2, (64,))).backward()
        norms = x.grad.norm(dim=(0, 2))
        reach[cell] = (norms[0] / norms[-1]).item()
    assert reach["rnn"] * 5 < reach["lstm"] and reach["rnn"] * 5 < reach["gru"]


def test_lstm_learns_the_long_memory_task(compose, tmp_path):
    cfg = compose("data=synthetic", "data.length=40", "data.num_samples=2000", "model=lstm", "pretrain=none",
                  "model.hidden_size=32", "trainer.max_epochs=12", "optimizer.lr=0.01", "init=default")
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, tmp_path / "artifacts")
    assert json.loads((tmp_path / "artifacts" / "evaluate" / "metrics.json").read_text())["accuracy"] > 0.95


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_truncated_bptt_stops_gradients_k_steps_back(compose, pooling):
    """With tbptt_steps=k the final step's output gets no gradient from inputs more than k steps earlier,
    while inference still reads the whole sequence."""
    model = build_model(compose("data=synthetic", "model=lstm", f"model.pooling={pooling}", "model.tbptt_steps=8"),
                         (30, 1), 2)
    model.train()
    x = torch.randn(4, 30, 1, requires_grad=True)
    model.encoder.steps(x)[0][:, -1].sum().backward()
    reach = x.grad.norm(dim=(0, 2))
    assert (reach[:-8] == 0).all() and (reach[-8:] > 0).all()
    x.grad = None
    model(x).sum().backward()
    assert (x.grad.norm(dim=(0, 2))[:22] == 0).all() == (pooling == "last")
    model.eval()
    with torch.no_grad():
        full = model.encoder(x)
        model.encoder.tbptt_steps = None
        assert torch.allclose(full, model.encoder(x))  # truncation changes gradients, never outputs


def test_truncated_bptt_forward_matches_full_bptt_while_training(compose):
    torch.manual_seed(0)
    model = build_model(compose("data=synthetic", "model=gru", "model.num_layers=2", "model.tbptt_steps=7"),
                         (30, 1), 2)
    model.train()
    x = torch.randn(4, 30, 1)
    truncated = model(x)
    model.encoder.tbptt_steps = None
    assert torch.allclose(truncated, model(x), atol=1e-6)


def test_bad_tbptt_steps_names_the_key(compose):
    with pytest.raises(ValueError, match="model.tbptt_steps"):
        build_model(compose("data=synthetic", "model=lstm", "model.bidirectional=true", "model.tbptt_steps=5"),
                     (30, 1), 2)


@pytest.mark.parametrize("cell, chunks", [("lstm", 4), ("gru", 3)])
def test_forget_bias_opens_the_gate_that_carries_the_state(compose, cell, chunks):
    """LSTM forget gate (chunk 1 of i, f, g, o) / GRU update gate (chunk 1 of r, z, n) start at forget_bias."""
    model = build_model(compose("data=synthetic", f"model={cell}", "model.num_layers=2", "model.forget_bias=1.0",
                                 "init=zeros"), (30, 1), 2)
    for rnn in model.encoder.rnns:
        ih, hh = rnn.bias_ih_l0.chunk(chunks), rnn.bias_hh_l0.chunk(chunks)
        assert (ih[1] == 1.0).all() and (hh[1] == 0).all() and (ih[0] == 0).all()
    plain = build_model(compose("data=synthetic", f"model={cell}", "init=zeros"), (30, 1), 2)
    assert (plain.encoder.rnns[0].bias_ih_l0 == 0).all()


# --- word2vec ----------------------------------------------------------------------------------------------

def test_word2vec_context_pairs_by_hand():
    from deepsweep.tasks.sequence_ssl import context_pairs

    x = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    rows, centres, contexts = context_pairs(x, window=1)
    pairs = sorted(zip(rows.tolist(), centres.tolist(), contexts.tolist()))
    # Neighbours one step away, never a padding position.
    assert pairs == [(0, 0, 1), (0, 1, 0), (0, 1, 2), (0, 2, 1), (1, 0, 1), (1, 1, 0)]
    rows, centres, contexts = context_pairs(torch.tensor([[3, 4, 5, 6, 7]]), window=2,
                                            generator=torch.Generator().manual_seed(0))
    assert ((centres - contexts).abs() <= 2).all() and ((centres - contexts).abs() >= 1).all()


@pytest.mark.parametrize("method", ["skipgram", "cbow"])
def test_word2vec_puts_words_of_one_context_together(compose, method):
    """Two topics that never share a sentence: after training, a word's embedding is nearer (cosine) to its
    own topic's words than to the other topic's; the output vectors are the task's, the embedding the model's."""
    from deepsweep.factory import build_task

    torch.manual_seed(0)
    cfg = compose("data=sms_spam", "model=lstm", "pretrain=word2vec", f"pretrain.task.method={method}",
                  "pretrain.task.window=2", "model.embedding_dim=16")
    model = build_model(cfg, (8,), 2, vocab_size=13)
    task = build_task(cfg, cfg.pretrain.task, model, "pretrain")
    assert task.embedding is model.encoder.inputs.embedding
    optimizer = torch.optim.Adam(task.parameters(), lr=0.05)
    topics = [torch.arange(3, 8), torch.arange(8, 13)]
    for _ in range(150):
        which = torch.randint(2, (32,))
        x = torch.stack([topics[t][torch.randint(5, (8,))] for t in which.tolist()])
        loss = task.training_loss((x, which))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vectors = torch.nn.functional.normalize(model.encoder.inputs.embedding.weight.detach(), dim=1)
    similarity = vectors @ vectors.T
    within = torch.cat([similarity[t][:, t][~torch.eye(5, dtype=torch.bool)] for t in (topics[0], topics[1])]).mean()
    across = similarity[topics[0]][:, topics[1]].mean()
    assert within > across + 0.3, (float(within), float(across))
    assert task.counts[3:13].sum() == 150 * 32 * 8 and task.counts[:3].sum() == 0


def test_word2vec_needs_a_token_embedding(compose):
    from deepsweep.config import ConfigError
    from deepsweep.factory import build_task

    cfg = compose("data=ecg200", "model=gru", "pretrain=word2vec")
    model = build_model(cfg, (96, 1), 2)
    with pytest.raises(ConfigError, match="pretrain=word2vec trains a token embedding"):
        build_task(cfg, cfg.pretrain.task, model, "pretrain")


@requires_shared("sms_spam")
def test_word2vec_pretraining_reaches_finetuning_and_evaluate_lists_neighbours(compose, tmp_path):
    import json

    from deepsweep.stages.pipeline import execute

    cfg = compose("experiment=sms_spam_lstm", "pretrain=word2vec", "data.max_len=16", *FAST,
                  "evaluate.neighbour_words=[free,call]")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, artifacts)
    encoder = torch.load(artifacts / "pretrain" / "encoder.pt", weights_only=True)["encoder"]
    pretrained = encoder["inputs.embedding.weight"]
    fresh = build_model(cfg, (16,), 2, vocab_size=pretrained.shape[0]).encoder.inputs.embedding.weight
    assert not torch.allclose(pretrained, fresh)  # word2vec moved the embedding fine-tuning starts from
    neighbours = json.loads((artifacts / "evaluate" / "embedding_neighbours.json").read_text())
    assert set(neighbours) == {"free", "call"} and all(len(v) == 5 for v in neighbours.values())
    # A word outside the vocabulary stops evaluate before it scores anything, and leaves the last output as it was.
    bad = compose("experiment=sms_spam_lstm", "pretrain=word2vec", "data.max_len=16", *FAST,
                  "evaluate.neighbour_words=[zzzqx]")
    before = (artifacts / "evaluate" / "metrics.json").read_text()
    with pytest.raises(ConfigError, match="evaluate.neighbour_words: zzzqx not in the vocabulary of data=sms_spam"):
        execute("evaluate", bad, artifacts)
    assert (artifacts / "evaluate" / "metrics.json").read_text() == before
