"""Build the objects a config describes. Every object-building group carries a ``_target_`` that Hydra
instantiates; this module adds the runtime arguments a YAML file cannot know (input shape, classes,
the layer factory), so stages stay a few readable lines."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deepsweep.config import ConfigError, build


def _target_kind(node: DictConfig) -> str:
    from hydra.utils import get_class

    target = node.get("_target_")
    return getattr(get_class(target), "kind", "tensor") if target else "any"


def check_compatible(cfg: DictConfig) -> None:
    """Data, model family and pretraining task must agree on the kind of data (tensor or graph)."""
    from deepsweep.config import compose, options

    data_kind = _target_kind(cfg.data)

    def matching(group: str, path: str = "") -> str:
        names = []
        for option in options(group):
            node = compose([f"{group}={option}"])[group]
            node = node.get(path) if path else node
            if _target_kind(node) in (data_kind, "any"):
                names.append(option)
        return ", ".join(names)

    if _target_kind(cfg.model) != data_kind:
        raise ConfigError(
            f"model={cfg.model.name} does not read {data_kind} data (data={cfg.data.name}); "
            f"models for it: {matching('model')}"
        )
    if cfg.pretrain.name != "none" and _target_kind(cfg.pretrain.task) != data_kind:
        raise ConfigError(
            f"pretrain={cfg.pretrain.name} does not apply to {data_kind} data (data={cfg.data.name}); "
            f"pretraining for it: {matching('pretrain', 'task')}"
        )
    if data_kind == "graph" and int(cfg.data.batch_size) > 0:
        check_neighbor_sampling(cfg)


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


def create_layers(cfg: DictConfig):
    from deepsweep.nn.layers import Layers

    return Layers(activation=build(cfg.activation), regularization=build(cfg.regularizer))


def create_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int, vocab_size: int | None = None):
    """The family named by ``cfg.model``, with ``cfg.init`` applied to its weights. ``vocab_size`` is
    given for token data (text) and read by the sequence families."""
    extra = {} if vocab_size is None else {"vocab_size": vocab_size}
    try:
        model = build(cfg.model, input_shape=list(input_shape), num_classes=num_classes, layers=create_layers(cfg),
                      **extra)
    except ValueError as exc:  # a family's own shape checks name the offending model.* key
        raise ConfigError(str(exc)) from exc
    build(cfg.init)(model)
    # Family-specific starting values that no generic scheme knows (e.g. LSTM forget-gate bias).
    if hasattr(model, "after_init"):
        model.after_init()
    return model


def create_optimizer(cfg: DictConfig, stage: str = "finetune"):
    """The optimizer group as a factory of optimizers; the pretrain stage applies ``pretrain.optimizer``."""
    from deepsweep.config import stage_optimizer

    return build(stage_optimizer(cfg) if stage == "pretrain" else cfg.optimizer)


def create_scheduler(cfg: DictConfig, max_epochs: int):
    node = cfg.scheduler
    if node.get("T_max", "absent") is None:
        node = OmegaConf.merge(node, {"T_max": max(1, max_epochs)})
    return build(node)


def set_threads(cfg: DictConfig, job_threads: int | None = None) -> int:
    """torch threads for this process: trainer.num_threads, else what the launcher gave this job
    (``deepsweep.launch.job_threads``), else every core."""
    import torch

    threads = cfg.trainer.num_threads or job_threads or os.cpu_count() or 1
    torch.set_num_threads(int(threads))
    return int(threads)


def check_accelerator(cfg: DictConfig) -> None:
    """Fail before any work when the trainer asks for a device this machine does not have."""
    import torch

    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no CUDA device is visible on this machine; "
            "use trainer=cpu (or trainer.accelerator=auto)"
        )


def quiet_lightning() -> None:
    """Keep Lightning's start-up banners (GPU/TPU availability, tips) out of every stage's output."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def place_on_device(trainer, *loaders):
    """``loaders`` with their in-memory data moved once to the trainer's accelerator, where it trains on
    one (a GPU): Lightning would otherwise copy every batch from host memory, which on a small model
    costs more than its step. Data-parallel strategies, the CPU and data too big for the device keep
    the data where it is (Lightning moves each batch, as before)."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    device = trainer.strategy.root_device if isinstance(trainer.strategy, SingleDeviceStrategy) else None
    if device is None or device.type == "cpu":
        return loaders
    return tuple(loader.to(device) for loader in loaders)


def strategy(cfg: DictConfig) -> str:
    """trainer.strategy, checked: data-parallel training must keep the stage in this process (ddp_spawn)."""
    name = str(cfg.trainer.get("strategy") or "auto")
    if name.startswith(("ddp", "fsdp", "deepspeed")) and not name.startswith("ddp_spawn"):
        raise ConfigError(
            f"trainer.strategy={name}: this launcher re-runs the whole command once per device, and a stage "
            "would then record and write its outputs once per device; use trainer.strategy=ddp_spawn"
        )
    if name.startswith("ddp_spawn"):
        import torch.multiprocessing

        # The in-memory datasets go to the spawned processes with the loaders; sharing them through files
        # rather than one descriptor per tensor keeps process start-up from failing on descriptor limits.
        torch.multiprocessing.set_sharing_strategy("file_system")
    return name


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


def create_trainer(cfg: DictConfig, max_epochs: int, logger: Any, callbacks: list, root_dir: str,
                   manual_optimization: bool = False):
    """``manual_optimization``: the task steps its optimizer itself (and clips its own gradients, which
    Lightning refuses to do for it then)."""
    import lightning as L

    quiet_lightning()
    t = cfg.trainer
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=strategy(cfg),
        precision=t.precision,
        gradient_clip_val=None if manual_optimization else t.gradient_clip_val,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        # Best weights are kept in memory (tasks.common.BestWeights) and saved once by the stage; the only
        # checkpoints written are the opt-in resume ones (stages.checkpoints).
        enable_checkpointing=any(type(c).__name__ == "ModelCheckpoint" for c in callbacks),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # tasks log per epoch only; this just silences the 'few batches' warning
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        default_root_dir=root_dir,
    )
