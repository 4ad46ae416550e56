"""Build the objects a config describes, and check before any work that they fit together. Every
object-building group carries a ``_target_`` that Hydra instantiates (``build``); this module adds the
runtime arguments a YAML file cannot know (input shape, classes, the layer factory), so stages stay a few
readable lines. One word throughout: ``build_<what>``."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deepsweep.errors import ConfigError
from deepsweep.kinds import declared_kind, declared_target


def stage_optimizer(cfg: DictConfig) -> DictConfig:
    """The optimizer group with the pretrain stage's own non-null ``pretrain.optimizer`` fields applied."""
    overrides = {k: v for k, v in (cfg.pretrain.get("optimizer") or {}).items() if v is not None}
    return OmegaConf.merge(cfg.optimizer, overrides) if overrides else cfg.optimizer


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a config node through its ``_target_``; ``name`` labels the option and is not an argument.

    Runtime objects (a model, a layer factory) are passed to the target directly, never through Hydra,
    which would try to turn them into configs."""
    from hydra.utils import instantiate

    if node.get("_target_") is None:
        return None
    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("name", None)
    if not kwargs:
        return instantiate(spec)
    spec.pop("_partial_", None)
    return instantiate(spec, _partial_=True)(**kwargs)


def seed_everything(seed: int) -> int:
    """What ``lightning.seed_everything(seed, workers=False, verbose=False)`` does: Python's, NumPy's and
    torch's generators (CUDA's included) seeded, and ``PL_GLOBAL_SEED`` set so processes Lightning spawns
    (``strategy=ddp_spawn``) seed alike. tests/test_training.py checks the two draw the same numbers."""
    import numpy as np
    import torch

    seed = int(seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PL_SEED_WORKERS"] = "0"
    return seed


def _kind_of(node: DictConfig) -> str:
    """The data kind an option's class declares ("any" for an option that builds nothing)."""
    target = node.get("_target_")
    return declared_kind(target) if target else "any"


def _predicts(node: DictConfig) -> str:
    """What an option's class declares its labels or outputs to be: "class", "mask" or "tokens"."""
    target = node.get("_target_")
    return declared_target(target) if target else "class"


TARGET_WORDS = {"class": "a class per input", "mask": "a class per pixel", "tokens": "an output sequence"}


def check_compatible(cfg: DictConfig) -> None:
    """Data, model family and pretraining task must agree on the kind of data (tensor or graph); data and
    model on what is predicted (a class, a mask, tokens)."""
    from deepsweep.config import compose, options

    data_kind, data_target = _kind_of(cfg.data), _predicts(cfg.data)

    def matching(group: str, path: str = "") -> str:
        names = []
        for option in options(group):
            node = compose([f"{group}={option}"])[group]
            node = node.get(path) if path else node
            if _kind_of(node) in (data_kind, "any") and (path or _predicts(node) == data_target):
                names.append(option)
        return ", ".join(names)

    if _kind_of(cfg.model) != data_kind or _predicts(cfg.model) != data_target:
        raise ConfigError(
            f"model={cfg.model.name} does not read {data_kind} data labelled with {TARGET_WORDS[data_target]} "
            f"(data={cfg.data.name}); models for it: {matching('model')}"
        )
    if cfg.pretrain.name != "none" and _kind_of(cfg.pretrain.task) != data_kind:
        raise ConfigError(
            f"pretrain={cfg.pretrain.name} does not apply to {data_kind} data (data={cfg.data.name}); "
            f"pretraining for it: {matching('pretrain', 'task')}"
        )
    if data_kind == "graph" and int(cfg.data.batch_size) > 0:
        check_neighbor_sampling(cfg)
    check_anomaly_class(cfg, data_target)
    if cfg.activation.get("pieces") and cfg.pretrain.name != "none":
        # Pretraining decoders and generators apply the activation to dense layers of their own, not widened.
        raise ConfigError(f"activation=maxout: pretrain={cfg.pretrain.name} builds layers of its own (a decoder or "
                          "generator) that do not widen for maxout's pieces; use pretrain=none")


def check_anomaly_class(cfg: DictConfig, data_target: str) -> None:
    """``pretrain.anomaly_class`` needs a pretraining that scores inputs, data with a class per input, and one of
    its classes: checked before prepare runs, where the data source knows its classes without reading a file
    (its ``num_classes``); the pretrain stage checks the rest against the prepared data."""
    from deepsweep.kinds import declared

    anomaly_class = cfg.pretrain.get("anomaly_class")
    if anomaly_class is None:
        return
    if not declared(str(cfg.pretrain.task.get("_target_")), "scores_anomalies"):
        raise ConfigError(f"pretrain.anomaly_class: pretrain={cfg.pretrain.name} gives no anomaly score; "
                          "the autoencoders, vae and dbn do")
    if data_target != "class":
        raise ConfigError(f"pretrain.anomaly_class: data={cfg.data.name} labels each input with "
                          f"{TARGET_WORDS[data_target]}, not a class; anomaly detection needs a class per input")
    check_class_of(cfg, int(anomaly_class), getattr(build(cfg.data), "num_classes", None))


def check_class_of(cfg: DictConfig, anomaly_class: int, num_classes: int | None) -> None:
    if num_classes is not None and not 0 <= anomaly_class < num_classes:
        raise ConfigError(f"pretrain.anomaly_class: {anomaly_class} is not a class of data={cfg.data.name} "
                          f"(0..{num_classes - 1})")


def check_neighbor_sampling(cfg: DictConfig) -> None:
    """Mini-batches of a graph sample one hop per graph conv: a hop fewer leaves the outer conv reading
    neighbours that were never sampled, a hop more samples nodes no conv reads."""
    fanouts = cfg.data.get("num_neighbors")
    convs = len(cfg.model.hidden_dims) + 1  # the hidden convs and the output conv
    if not fanouts or any(not isinstance(f, int) or (f < 1 and f != -1) for f in fanouts):
        raise ConfigError(f"data.num_neighbors: data.batch_size={cfg.data.batch_size} samples neighbourhoods and "
                          f"needs one fan-out per hop (an int >= 1, or -1 for all neighbours), got {fanouts}")
    if len(fanouts) != convs:
        raise ConfigError(f"data.num_neighbors: {len(fanouts)} hop(s) {list(fanouts)} for model={cfg.model.name} "
                          f"with {convs} graph convs (model.hidden_dims={list(cfg.model.hidden_dims)} plus the "
                          f"output conv); give {convs} fan-outs, e.g. {[25] + [10] * (convs - 1)}")


def build_layers(cfg: DictConfig):
    from deepsweep.nn.layers import Layers

    return Layers(activation=build(cfg.activation), regularization=build(cfg.regularizer))


def build_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int, vocab_size: int | None = None,
                encoder: Path | None = None, seed: int | None = None):
    """The family named by ``cfg.model``, its weights initialized by ``cfg.init`` from seed ``cfg.seed`` (or
    ``seed``): the same config gives the same starting weights in whatever process and after whatever ran
    before. ``vocab_size`` is given for token data (text) and read by the sequence families; ``encoder``,
    a pretrained encoder file (``stages.pretrain.ENCODER_FILE``) loaded into the model's encoder."""
    seed_everything(cfg.seed if seed is None else seed)
    extra = {} if vocab_size is None else {"vocab_size": vocab_size}
    try:
        model = build(cfg.model, input_shape=list(input_shape), num_classes=num_classes, layers=build_layers(cfg),
                      **extra)
    except ValueError as exc:  # a family's own shape checks name the offending model.* key
        raise ConfigError(str(exc)) from exc
    build(cfg.init)(model)
    # Family-specific starting values that no generic scheme knows (e.g. LSTM forget-gate bias).
    if hasattr(model, "after_init"):
        model.after_init()
    if encoder is not None:
        load_encoder(model, encoder)
    return model


def load_encoder(model, path: Path) -> None:
    """Copy pretrained encoder weights into ``model.encoder``; a mismatch names the differing keys."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretrained encoder; run the pretrain stage (or set pretrain=none)")
    saved = torch.load(path, weights_only=True)
    missing, unexpected = [], []
    own = model.encoder.state_dict()
    missing = sorted(set(own) - set(saved["encoder"]))
    unexpected = sorted(set(saved["encoder"]) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(saved["encoder"]) if own[k].shape != saved["encoder"][k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path}: the pretrained encoder (model={saved['model']}) does not fit this model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}; "
            "pretrain and finetune must use the same model, activation and regularizer"
        )
    model.encoder.load_state_dict(saved["encoder"])


def build_optimizer(cfg: DictConfig, stage: str = "finetune"):
    """The optimizer group as a factory of optimizers; the pretrain stage applies ``pretrain.optimizer``."""
    return build(stage_optimizer(cfg) if stage == "pretrain" else cfg.optimizer)


def build_scheduler(cfg: DictConfig, max_epochs: int):
    node = cfg.scheduler
    if node.get("T_max", "absent") is None:
        node = OmegaConf.merge(node, {"T_max": max(1, max_epochs)})
    return build(node)


def set_threads(cfg: DictConfig, job_threads: int | None = None) -> int:
    """torch threads for this process: trainer.num_threads, else what the launcher gave this job
    (``deepsweep.launch.job_threads``), else every core; ``OMP_NUM_THREADS``, where set, caps the last two as
    it caps torch's own default (e.g. processes that already share the cores: the test suite's workers)."""
    import torch

    share = job_threads or os.cpu_count() or 1
    threads = cfg.trainer.num_threads or min(share, omp_threads() or share)
    torch.set_num_threads(int(threads))
    return int(threads)


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive integer; None where it is unset or not one (OpenMP ignores it then)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def check_accelerator(cfg: DictConfig) -> None:
    """Fail before any work when the trainer asks for a device this machine does not have. torch is imported
    only to answer that (1.6-2.3 s here): a CPU config is refused or accepted without it."""
    accelerator = cfg.trainer.accelerator
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no CUDA device is visible on this machine; "
            "use trainer=cpu (or trainer.accelerator=auto)"
        )


def steps_per_call(cfg: DictConfig) -> int:
    """``trainer.steps_per_call``, or 1 where optimizer steps need Lightning's automatic optimization:
    L-BFGS (its line search re-evaluates the loss through a closure) and data-parallel strategies (DDP
    expects one backward pass per forward call of the wrapped module)."""
    steps = int(cfg.trainer.get("steps_per_call", 1))
    if steps < 1:
        raise ConfigError(f"trainer.steps_per_call: must be >= 1, got {steps}")
    if cfg.optimizer.name == "lbfgs" or str(cfg.trainer.strategy) != "auto":
        return 1
    return steps


def build_task_setup(cfg: DictConfig, stage: str = "finetune"):
    """What every task is given besides its model (``tasks.common.TaskSetup``), for ``stage``'s epochs."""
    from deepsweep.tasks.common import TaskSetup

    epochs = int(cfg.pretrain.epochs if stage == "pretrain" else cfg.trainer.max_epochs)
    return TaskSetup(optimizer=build_optimizer(cfg, stage), scheduler=build_scheduler(cfg, epochs),
                     regularization=build(cfg.regularizer), activation=build(cfg.activation),
                     steps_per_call=steps_per_call(cfg), gradient_clip_val=cfg.trainer.gradient_clip_val,
                     loss=build(cfg.loss), seed=int(cfg.seed),
                     name=f"pretrain={cfg.pretrain.name}" if stage == "pretrain" else stage)


def build_task(cfg: DictConfig, task: DictConfig | type, model, stage: str, **options: Any):
    """The task ``task`` names, for ``model``, with the set-up of ``stage`` (``build_task_setup``): a config node
    whose ``_target_`` is a ``tasks.common.Task`` (the pretraining objectives), or the class itself with its
    ``options`` (the supervised task of a kind of data). The task's own checks (ValueError naming the key)
    become ConfigError."""
    setup = build_task_setup(cfg, stage)
    try:
        if isinstance(task, type):
            return task(model, setup, **options)
        return build(task, model=model, setup=setup, **options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
