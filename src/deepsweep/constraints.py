"""What values each config field accepts, beyond its type: ranges, non-empty lists, where null means something.

``config.validate`` checks types against the chosen option files; this table adds what a type cannot say
(a learning rate is a float *above 0*, a dropout probability lies in [0, 1)). Every numeric field of every
option file has a rule here: ``tests/test_config.py`` composes every option and fails on a field without
one, so a new field cannot slip through unchecked.

A rule is keyed by a pattern over the full dotted key (``fnmatch``: ``*.lr`` matches ``optimizer.lr`` and
``pretrain.optimizer.lr``); the first matching rule wins, so specific keys come before general ones.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """``allowed``: what the error message says is allowed; ``check(value, cfg)``: whether ``value`` is."""

    allowed: str
    check: Callable[[Any, Mapping[str, Any]], bool]
    nullable: bool = False  # null is a meaningful value here even where the default is not null
    names: bool = False  # the rule checks names too (a choice among words), not only numbers

    def accepts(self, value: Any, cfg: Mapping[str, Any]) -> bool:
        if value is None:
            return True  # whether null may stand here is decided by the default (config._check)
        try:
            return bool(self.check(value, cfg))
        except (TypeError, ValueError):
            return False


def one_of(*choices: str) -> Rule:
    """One of a few words."""
    return Rule(f"one of {', '.join(choices)}", lambda v, _cfg: v in choices, names=True)


def real(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number within the given bounds."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    if low is not None and high is not None:
        allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    else:
        allowed = "a finite number" + (f" {parts[0]}" if parts else "")

    def check(value: Any, _cfg: Mapping[str, Any]) -> bool:
        if not _number(value) or not math.isfinite(value):
            return False
        if low is not None and (value <= low if low_open else value < low):
            return False
        if high is not None and (value >= high if high_open else value > high):
            return False
        return True

    return Rule(allowed, check)


def integer(low: int, allowed: str | None = None) -> Rule:
    return Rule(allowed or f"an integer >= {low}", lambda v, _cfg: _integer(v) and v >= low)


def widths(empty_ok: bool = False) -> Rule:
    """A list of layer widths (units, channels, blocks): positive integers."""
    what = "a list of integers >= 1" + ("" if empty_ok else ", not empty")
    return Rule(what, lambda v, _cfg: isinstance(v, list) and (empty_ok or len(v) > 0)
                and all(_integer(w) and w >= 1 for w in v))


def _graph(cfg: Mapping[str, Any]) -> bool:
    """The data option's source declares graph data (a new graph data set needs no edit here). Read from the
    source, never imported: the config is not yet known to be valid, and its ``_target_`` could name any module."""
    from deepsweep.kinds import declared_in_source

    target = cfg.get("data", {}).get("_target_")
    return isinstance(target, str) and declared_in_source(target, "kind") == "graph"


def _whole_graph(cfg: Mapping[str, Any]) -> bool:
    """Every batch is the same whole graph: full batch, transductive."""
    data = cfg.get("data", {})
    return data.get("batch_size") == 0 and not data.get("inductive", False)


def _has_dropout(cfg: Mapping[str, Any]) -> bool:
    """The model drops something in training: what Monte Carlo dropout samples at test time."""
    return any(float(cfg.get(group, {}).get(key) or 0) > 0
               for group, key in (("regularizer", "dropout"), ("model", "dropout"), ("model", "attention_dropout")))


# The families whose every activation follows a layer of nn.layers.Layers.dense or .conv, which widens it for
# maxout's pieces (tests/test_activations.py builds each with maxout and every other family refusing it).
MAXOUT_FAMILIES = ("mlp", "lenet", "vgg", "inception", "unet")
# The families whose attention and feed-forward layers take standard dropout only (nn.MultiheadAttention's):
# dropconnect or Gaussian noise would be silently ignored there.
STANDARD_DROPOUT_FAMILIES = ("transformer", "seq2seq_transformer")
# Planetoid data options -> the set each reads, spelled as torch-geometric names its folder. A new one comes with
# its files' entry in data/downloads.py's CATALOG, which places them under that folder.
PLANETOID_SETS = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}

# The words a field takes, as the module that reads it spells them (tests/test_config.py holds each equal to that
# module's own tuple, which is not imported here: a config is checked before torch or Lightning are).
INIT_SCHEMES = ("default", "zeros", "normal", "uniform", "lecun_normal", "lecun_uniform", "xavier_normal",
                "xavier_uniform", "he_normal", "he_uniform", "orthogonal")  # nn.init.SCHEMES
DROPOUT_KINDS = ("standard", "dropconnect", "gaussian")  # nn.regularizers.DROPOUT_KINDS
GENERATORS = ("dense", "conv")  # nn.generators.GENERATORS
GENERATOR_OUTPUTS = ("sigmoid", "linear")  # nn.generators.OUTPUTS
RECURRENT_CELLS = ("rnn", "lstm", "gru")  # models.sequence.CELLS, models.seq2seq.DECODER_CELLS
RECURRENT_POOLING = ("last", "mean", "max")  # models.sequence.POOLING
TRANSFORMER_POOLING = ("cls", "mean")  # models.sequence.Transformer
GRAPH_AGGREGATORS = ("mean", "max", "lstm")  # models.gnn.AGGREGATORS
NOISES = ("none", "masking", "gaussian")  # tasks.reconstruct.NOISES
LIKELIHOODS = ("bernoulli", "gaussian")  # tasks.variational.LIKELIHOODS
VISIBLE_UNITS = ("bernoulli", "gaussian")  # tasks.rbm.VISIBLE
ADVERSARIAL_LOSSES = ("vanilla", "wasserstein")  # tasks.adversarial.LOSSES
# pretrain.task.method by the task class: tasks.graph_ssl.METHODS, tasks.sequence_ssl.METHODS and WORD2VEC_METHODS
TASK_METHODS = {"GraphSelfSupervisedTask": ("gae", "vgae", "dgi", "random_walk"),
                "SequencePretrainTask": ("next_step", "masked_token"), "Word2VecTask": ("skipgram", "cbow")}
# Lightning's accelerators that need nothing beyond torch (tpu and hpu need libraries of their own).
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
# What Lightning 2.6's Trainer(precision=...) takes as a string (its docs' precision table, and the legacy aliases).
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16")


def _words(cfg: Mapping[str, Any], group: str, by_class: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The words allowed where they depend on the class ``group``'s ``_target_`` names."""
    target = str(cfg.get(group, {}).get("_target_") or "")
    return by_class.get(target.rpartition(".")[2], ())


def _devices(cfg: Mapping[str, Any]) -> int:
    devices = cfg.get("trainer", {}).get("devices", 1)
    return len(devices) if isinstance(devices, (list, tuple)) else int(devices) if _integer(devices) else 1


PROBABILITY = real(0, 1, high_open=True)
FRACTION = real(0, 1, low_open=True, high_open=True)
POSITIVE = real(0, low_open=True)
NON_NEGATIVE = real(0)
COUNT = integer(1)
ANY_NUMBER = real()

# First match wins: specific keys before the general patterns below them.
RULES: tuple[tuple[str, Rule], ...] = (
    ("seed", integer(0, "an integer >= 0 (null is not a seed: runs would not repeat)")),
    # data
    ("data.batch_size", Rule("an integer >= 1 (0 = the whole graph at once, for graph data only)",
                             lambda v, cfg: _integer(v) and (v >= 1 or (v == 0 and _graph(cfg))))),
    ("data.num_neighbors", Rule("a non-empty list of integers >= 1 (or -1: every neighbour), one per hop",
                                lambda v, _cfg: isinstance(v, list) and len(v) > 0
                                and all(_integer(n) and (n >= 1 or n == -1) for n in v))),
    ("data.val_fraction", FRACTION),
    ("data.test_fraction", Rule("a number in (0, 1), below 1 - data.val_fraction (the rest is the training split)",
                                lambda v, cfg: FRACTION.accepts(v, cfg) and (
                                    not _number(cfg["data"].get("val_fraction"))  # its own rule speaks for it
                                    or v + cfg["data"]["val_fraction"] < 1))),
    ("data.split_seed", integer(0)),
    ("data.modes", integer(2)),
    ("data.radius", POSITIVE),
    ("data.std", POSITIVE),
    ("data.augment.shift", integer(0)),
    ("data.augment.rotate", real(0, 180)),
    ("data.augment.cutout", integer(0)),
    ("data.noise", NON_NEGATIVE),
    ("data.threshold", PROBABILITY),
    ("data.size", integer(8)),
    ("data.symbols", Rule("an integer in [2, 26] (letters a..z)", lambda v, _cfg: _integer(v) and 2 <= v <= 26)),
    ("data.min_len", Rule("an integer >= 1, at most data.max_len",
                          lambda v, cfg: _integer(v) and 1 <= v <= cfg.get("data", {}).get("max_len", v))),
    ("data.task", Rule("for data=translation: reverse, sort or dates; for data=synthetic: first_bit or parity",
                       lambda v, cfg: v in (("reverse", "sort", "dates") if cfg.get("data", {}).get("name") == "translation"
                                            else ("first_bit", "parity")), names=True)),
    ("data.background", one_of("noise", "stripes")),
    ("data.split", one_of("public", "full", "random")),  # torch_geometric.datasets.Planetoid's one-mask splits
    # The option's name tags the runs and meta.json: a Planetoid set other than the one it names would be
    # recorded as that one.
    ("data.name_in_source", Rule("the set the option names ("
                                 + ", ".join(f"data={o}: {s}" for o, s in PLANETOID_SETS.items()) + ")",
                                 lambda v, cfg: v == PLANETOID_SETS.get(cfg.get("data", {}).get("name")),
                                 names=True)),
    ("data.labels", one_of("binary", "digit")),
    ("data.*_subset", Rule("an integer >= 1, or null for all", lambda v, _cfg: _integer(v) and v >= 1, nullable=True)),
    ("data.*", COUNT),  # length, max_len, max_vocab, min_freq, num_samples, train_subset
    # model
    ("model.hidden_dims", widths()),
    ("model.channels", widths()),
    ("model.blocks_per_stage", widths()),
    ("model.fc_dims", widths(empty_ok=True)),
    ("model.attention_dropout", PROBABILITY),
    ("model.dropout", PROBABILITY),
    ("model.forget_bias", ANY_NUMBER),
    ("model.teacher_forcing", real(0, 1)),
    ("model.attention", one_of("bahdanau", "luong", "none")),
    ("model.activation", one_of("relu", "gelu")),  # a Transformer's feed-forward layers
    ("model.cell", one_of(*RECURRENT_CELLS)),
    ("model.pooling", Rule(f"for model=transformer: {', '.join(TRANSFORMER_POOLING)}; for the recurrent families: "
                           f"{', '.join(RECURRENT_POOLING)}",
                           lambda v, cfg: v in _words(cfg, "model", {"Transformer": TRANSFORMER_POOLING,
                                                                     "Recurrent": RECURRENT_POOLING}), names=True)),
    ("model.aggr", one_of(*GRAPH_AGGREGATORS)),
    ("model.*", COUNT),  # heads, hidden_size, num_layers, kernel_size, d_model, tbptt_steps, ...
    # activation, init
    ("activation.negative_slope", NON_NEGATIVE),
    ("activation.pieces", Rule(f"an integer >= 2, with model one of {', '.join(MAXOUT_FAMILIES)}",
                               lambda v, cfg: _integer(v) and v >= 2
                               and cfg.get("model", {}).get("name") in MAXOUT_FAMILIES)),
    ("activation.*", ANY_NUMBER),
    ("init.scheme", one_of(*INIT_SCHEMES)),
    ("init.*", POSITIVE),  # std, bound, gain
    # regularizer
    ("regularizer.dropout", PROBABILITY),
    ("regularizer.dropout_kind", Rule(f"one of {', '.join(DROPOUT_KINDS)}; with "
                                      f"model={' or '.join(STANDARD_DROPOUT_FAMILIES)} only standard (regularizer=dropout)",
                                      lambda v, cfg: v in DROPOUT_KINDS and (
                                          v == "standard" or not cfg.get("regularizer", {}).get("dropout")
                                          or cfg.get("model", {}).get("name") not in STANDARD_DROPOUT_FAMILIES),
                                      names=True)),
    ("regularizer.early_stopping_patience", COUNT),
    ("regularizer.*", NON_NEGATIVE),  # l1, l2
    # loss
    ("loss.label_smoothing", PROBABILITY),
    ("loss.gamma", NON_NEGATIVE),
    ("loss.margin", POSITIVE),
    ("loss.smooth", NON_NEGATIVE),
    ("loss.p", Rule("1 or 2", lambda v, _cfg: _integer(v) and v in (1, 2))),
    # optimizer (and the pretrain stage's fields of it)
    ("*.lr", POSITIVE),
    ("*.betas", Rule("two numbers in [0, 1), e.g. [0.9, 0.999]",
                     lambda v, _cfg: isinstance(v, list) and len(v) == 2 and all(PROBABILITY.accepts(b, _cfg) for b in v))),
    ("*.momentum", PROBABILITY),
    ("*.alpha", PROBABILITY),
    ("*.rho", PROBABILITY),
    ("*.weight_decay", NON_NEGATIVE),
    ("*.history_size", COUNT),
    ("*.max_iter", COUNT),
    ("*.eps", POSITIVE),
    ("*.line_search_fn", Rule("strong_wolfe, or null for none", lambda v, _cfg: v == "strong_wolfe", nullable=True,
                              names=True)),
    # scheduler
    ("scheduler.gamma", real(0, 1, low_open=True)),
    ("scheduler.factor", FRACTION),
    ("scheduler.eta_min", NON_NEGATIVE),
    ("scheduler.mode", one_of("min", "max")),
    ("scheduler.*", COUNT),  # step_size, patience, T_max
    # pretrain
    ("pretrain.epochs", Rule("an integer >= 1 (0 only with pretrain=none)",
                             lambda v, cfg: _integer(v) and (v >= 1 or (v == 0 and cfg["pretrain"].get("name") == "none")))),
    ("pretrain.anomaly_class", integer(0, "an integer >= 0 (a class of the data), or null for off")),
    ("pretrain.task.decoder_dims", widths(empty_ok=True)),
    ("pretrain.task.generator_dims", widths()),
    ("pretrain.task.mask_prob", FRACTION),
    ("pretrain.task.label_smoothing", PROBABILITY),
    ("pretrain.task.noise_level", NON_NEGATIVE),
    ("pretrain.task.clip_value", POSITIVE),
    ("pretrain.task.beta", NON_NEGATIVE),
    ("pretrain.task.gradient_penalty", NON_NEGATIVE),
    ("pretrain.task.info_weight", NON_NEGATIVE),
    ("pretrain.task.cycle_weight", NON_NEGATIVE),
    ("pretrain.task.identity_weight", NON_NEGATIVE),
    ("pretrain.task.translator_channels", widths()),
    ("pretrain.task.residual_blocks", integer(0)),
    ("pretrain.task.domain", one_of("invert", "rotate")),
    ("pretrain.task.noise", one_of(*NOISES)),
    ("pretrain.task.likelihood", one_of(*LIKELIHOODS)),
    ("pretrain.task.visible", one_of(*VISIBLE_UNITS)),
    ("pretrain.task.loss", one_of(*ADVERSARIAL_LOSSES)),
    ("pretrain.task.decoder", one_of(*GENERATORS)),
    ("pretrain.task.generator", one_of(*GENERATORS)),
    ("pretrain.task.output", one_of(*GENERATOR_OUTPUTS)),
    ("pretrain.task.method", Rule("for pretrain.task._target_ "
                                  + "; ".join(f"{name}: {', '.join(words)}" for name, words in TASK_METHODS.items()),
                                  lambda v, cfg: v in _words(cfg.get("pretrain", {}), "task", TASK_METHODS),
                                  names=True)),
    ("pretrain.task.continuous_weight", NON_NEGATIVE),
    ("pretrain.task.categorical_code", Rule("0 (off) or an integer >= 2", lambda v, _cfg: _integer(v) and v != 1 and v >= 0)),
    ("pretrain.task.continuous_codes", integer(0)),
    ("pretrain.task.sparsity", NON_NEGATIVE),
    ("pretrain.task.link_*_fraction", Rule(
        "a number in [0, 1) (> 0 only on one whole graph: data.batch_size=0 and data.inductive=false)",
        lambda v, cfg: PROBABILITY.accepts(v, cfg) and (v == 0 or not _graph(cfg) or _whole_graph(cfg)))),
    ("pretrain.task.*", COUNT),  # latent_dim, cd_k, n_critic, epochs_per_layer, walk_length, ...
    # finetune
    ("finetune.label_fraction", real(0, 1, low_open=True)),
    ("finetune.freeze_encoder_epochs", integer(0)),
    # evaluate
    ("evaluate.mc_dropout_passes", Rule(
        "an integer >= 0 (0 = off; > 0 needs dropout: regularizer.dropout or model.dropout above 0)",
        lambda v, cfg: _integer(v) and v >= 0 and (v == 0 or _has_dropout(cfg)))),
    ("evaluate.calibration_bins", COUNT),
    # trainer
    ("trainer.max_epochs", COUNT),
    ("trainer.devices", Rule("an integer >= 1, or a list of device indices >= 0",
                             lambda v, _cfg: (_integer(v) and v >= 1) or (isinstance(v, list) and len(v) > 0
                                                                           and all(_integer(d) and d >= 0 for d in v)))),
    ("trainer.accelerator", one_of(*ACCELERATORS)),
    # Lightning's auto strategy on several devices is DDP through a subprocess launcher, which re-runs the command
    # once per device (and could not even find `deepsweep run` as a script: the run was SIGKILLed, left RUNNING).
    ("trainer.strategy", Rule("auto (one device) or ddp_spawn (several: trainer.devices > 1); ddp, fsdp and "
                              "deepspeed re-run the whole command once per device",
                              lambda v, cfg: (v == "auto" and _devices(cfg) <= 1) or v.startswith("ddp_spawn"),
                              names=True)),
    ("trainer.precision", one_of(*PRECISIONS)),
    ("trainer.gradient_clip_val", POSITIVE),
    ("trainer.checkpoint_every_n_epochs", integer(0, "an integer >= 0 (0 = off)")),
    ("trainer.progress", one_of("auto", "bar", "epochs", "none")),
    ("logger.embedding_plot", one_of("auto", "tsne", "pca", "none")),
    ("trainer.*", COUNT),  # steps_per_call, num_threads, jobs_per_gpu
)


def rule_for(key: str) -> Rule | None:
    """The rule of a dotted key (list items share their list's rule); None when no pattern matches."""
    for pattern, rule in RULES:
        if fnmatch.fnmatchcase(key, pattern):
            return rule
    return None


def numeric(value: Any) -> bool:
    """Whether a value is a number or a list of numbers: the fields every one of which needs a rule."""
    return _number(value) or (isinstance(value, list) and bool(value) and all(_number(v) for v in value))
