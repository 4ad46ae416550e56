"""Fused sweeps: the jobs of a sweep that differ only in values (seed, init, learning rate and its schedule,
weight decay, dropout probability, L1/L2, early stopping), trained together as one stacked model in one process
(``hydra/launcher=fused``).

Small models leave a GPU idle: one job per process spends its time on kernel launches, Python and start-up.
HFTA (Wang et al., MLSys 2021) fused same-shape jobs horizontally. Here each member keeps its own weights
(built by the ordinary factory from its own seed, so its init is its unfused job's), stacked into one tensor
per parameter name with the members that share its optimizer setting, which that optimizer steps: torch's
optimizers update each element on its own, so a member's slice steps as its job's weights would. Every step
runs one ``torch.func.vmap`` of ``functional_call`` over the stacked weights and each member's own batch (each
member's data order comes from its own seeded loader). The summed loss's gradient reaches each member's slice
as its own loss's gradient, so each member's update is its unfused job's (tests/test_fused.py: the same
per-epoch validation loss within float tolerance). A member's dropout masks come from its own random stream: the
state its job's generator had when its fit began, advanced by the same draws (``MemberStreams``), so they
are its unfused job's masks bit for bit. A full-batch graph is one input shared by every member (the weights,
masks and running statistics are stacked). Recurrent layers run as ``StackableRecurrent``: vmap has no
batching rule for ATen's fused recurrent kernels.

Each member stays an ordinary job to the user: the launcher runs the jobs one after another as Hydra's
basic launcher does; the first member whose finetune stage reaches its fit trains the whole array
(``member_fit``, which the stage reaches through ``training.arrays``), and every member's stage then
*replays* its own result: its per-epoch metrics into its own MLflow run, its curves, its best weights, its
early stop, its failure (a member whose loss goes non-finite fails alone and leaves the array). What is not
fused (``unfusable``) runs as a separate job.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from deepsweep.errors import NonFiniteError, check_finite

log = logging.getLogger("deepsweep")

# Keys whose values may differ between the members of one array: they change numbers, never a shape.
PER_MEMBER_KEYS = (
    "seed", "init", "optimizer", "scheduler", "experiment_name", "optimized_metric", "logger",
    "regularizer.name", "regularizer.l1", "regularizer.l2", "regularizer.early_stopping_patience", "regularizer.dropout",
    "finetune.freeze_encoder_epochs", "trainer.gradient_clip_val", "trainer.num_threads", "trainer.progress",
    "trainer.steps_per_call", "trainer.jobs_per_gpu",
)

# What a member is built as (the finetune stage's own set-up): (task, train loader, validation loader).
BuildMember = Callable[[DictConfig], tuple[Any, Any, Any]]


@dataclass
class Member:
    """One member as its finetune stage builds it, and the state of the random generator its fit would
    start from (what the member's dropout masks are drawn from)."""

    task: Any
    train_loader: Any
    val_loader: Any
    rng_state: Any


def build_members(cfgs: Sequence[DictConfig], build: BuildMember) -> list[Member]:
    """Each member built by the stage's own ``build`` (which seeds the generators and draws the init), with
    the generator state right after it: where the member's unfused fit would start drawing dropout masks."""
    members = []
    for cfg in cfgs:
        task, train_loader, val_loader = build(cfg)
        members.append(Member(task, train_loader, val_loader, _rng_state(_device(cfg))))
    return members


def unfusable(cfg: DictConfig) -> str | None:
    """Why this job cannot be a member of a fused array (it then runs as a job of its own), or None."""
    from hydra.utils import get_class

    from deepsweep.config import fine_tunes_pretrained_encoder
    from deepsweep.kinds import declared_kind, declared_target

    if fine_tunes_pretrained_encoder(cfg):
        return (f"pretrain={cfg.pretrain.name}: each member would fine-tune its own pretrained encoder; a fused "
                "array fine-tunes from scratch (pretrain=none or finetune.load_pretrained=false)")
    kind = declared_kind(str(cfg.data._target_))
    if kind not in ("tensor", "graph", "sequence"):
        return f"data={cfg.data.name}: {kind} data is not fused; tensor data, sequences and full-batch graphs are"
    if kind == "sequence" and not str(cfg.model._target_).endswith(".Recurrent"):
        return (f"model={cfg.model.name} on sequences: only the recurrent families (rnn, lstm, gru) are fused "
                "(a Transformer draws its dropout inside torch)")
    if kind == "sequence" and cfg.model.get("tbptt_steps"):
        return f"model.tbptt_steps={cfg.model.tbptt_steps}: truncated BPTT carries state between chunks; not fused"
    if declared_target(str(cfg.data._target_)) != "class":
        return f"data={cfg.data.name}: only classification is fused so far"
    if _device(cfg).type == "cpu" and getattr(get_class(str(cfg.model._target_)), "convolutional", False):
        return (f"model={cfg.model.name} on a CPU: stacked convolutions run as one grouped convolution, slower on "
                "a CPU than each job's own (8 LeNets on 10,000 MNIST images: 21.7 s of training against 14.9 s, "
                "docs/benchmarks.md at commit ad2bd5b); on a GPU they are fused")
    if _device(cfg).type == "cpu" and kind == "sequence":
        return (f"model={cfg.model.name} on a CPU: a stacked recurrent layer steps through time in a Python loop "
                "of vmapped ops where each job's own loops in C++, no faster on a CPU (8 GRUs on 50-step "
                "sequences: 19.7 s against 19.2 s one after another on an AMD EPYC at 44b9f92, 36.8 s against "
                "31.8 s on an Intel Xeon at 582e523, docs/benchmarks.md); on a GPU they are fused")
    if kind == "graph" and int(cfg.data.get("batch_size") or 0) and cfg.data.get("num_neighbors"):
        return (f"data.batch_size={cfg.data.batch_size}: each member would sample its own neighbourhoods; arrays "
                "train full-batch graphs (data.batch_size=0)")
    if kind == "graph" and float(cfg.finetune.label_fraction) < 1:
        return (f"finetune.label_fraction={cfg.finetune.label_fraction} on a graph: each member's seed labels other "
                "nodes, and an array shares one graph batch")
    if kind == "graph" and cfg.model.get("aggr") == "lstm":
        return "model.aggr=lstm: torch.func.vmap has no batching rule for the LSTM aggregator (aten::lstm)"
    if str(cfg.trainer.accelerator) not in ("cpu", "gpu", "cuda", "auto"):
        return f"trainer.accelerator={cfg.trainer.accelerator}: arrays train on the CPU or a CUDA GPU"
    if float(cfg.model.get("attention_dropout", 0) or 0) > 0:
        return (f"model.attention_dropout={cfg.model.attention_dropout}: torch-geometric draws it inside the "
                "attention layer, out of reach of a member's own random stream")
    if float(cfg.regularizer.dropout) > 0 and cfg.regularizer.dropout_kind != "standard":
        return (f"regularizer.dropout_kind={cfg.regularizer.dropout_kind}: only standard dropout (per sequence in a "
                "recurrent encoder) is drawn per member")
    if str(cfg.optimizer.get("_target_", "")).endswith("LBFGS"):
        return "optimizer=lbfgs: its line search re-evaluates one member's loss alone"
    if str(cfg.trainer.strategy) != "auto" or str(cfg.trainer.devices) not in ("1", "[0]", "auto"):
        return f"trainer.strategy={cfg.trainer.strategy}, devices={cfg.trainer.devices}: one device per array"
    if str(cfg.trainer.precision) not in ("32", "32-true"):
        return f"trainer.precision={cfg.trainer.precision}: arrays train in 32-bit"
    if int(cfg.trainer.get("checkpoint_every_n_epochs") or 0):
        return "trainer.checkpoint_every_n_epochs: a fused array writes no resume checkpoints"
    if cfg.logger.get("layer_stats", False):
        return "logger.layer_stats: per-layer statistics are drawn per job"
    return None


def shape_key(cfg: DictConfig) -> str:
    """The config with every per-member key taken out: jobs with equal keys may share an array."""
    shape = copy.deepcopy(cfg)
    OmegaConf.set_struct(shape, False)
    for key in PER_MEMBER_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(shape, parent) if parent else shape
        if isinstance(node, DictConfig) and leaf in node:
            del node[leaf]
    return OmegaConf.to_yaml(shape, resolve=True)


def plan(cfgs: Sequence[DictConfig | None], max_members: int) -> tuple[list[list[int]], dict[int, str]]:
    """Arrays (lists of job positions, at most ``max_members`` each, in job order) and the jobs that run
    alone with the reason. A ``None`` config (one that failed validation) runs alone: its job reports why."""
    groups: dict[str, list[int]] = {}
    alone: dict[int, str] = {}
    for position, cfg in enumerate(cfgs):
        reason = "its config is invalid" if cfg is None else unfusable(cfg)
        if reason:
            alone[position] = reason
        else:
            groups.setdefault(shape_key(cfg), []).append(position)
    arrays = [members[i : i + max_members] for members in groups.values() for i in range(0, len(members), max_members)]
    for array in [a for a in arrays if len(a) == 1]:  # nothing to fuse it with: an ordinary job
        arrays.remove(array)
        alone[array[0]] = "no other job of the sweep has its shapes"
    return arrays, alone


@dataclass
class MemberResult:
    """One member's fit: what its unfused job's ``fit`` would have logged, kept and returned."""

    history: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> train/loss, val/loss, ...
    best_score: float | None = None
    best_epoch: int | None = None
    epochs: int = 0
    state: dict[str, Any] | None = None  # the best epoch's weights (the model's state dict, on the CPU)
    error: str | None = None  # why it left the array (non-finite loss)


class FusedArray:
    """The members of one array (their validated job configs, in job order) and, once trained, their results."""

    def __init__(self, cfgs: Sequence[DictConfig]) -> None:
        self.cfgs = list(cfgs)
        self.id = uuid.uuid4().hex[:12]
        self.current = 0  # the member whose job runs now (set by the launcher)
        self.results: list[MemberResult] | None = None
        self.broken: str | None = None  # why the array fell back to separate fits
        self.fit_seconds = 0.0

    def train(self, build: BuildMember) -> None:
        # Building the members seeds every generator anew; the stage that trains the array goes on from its own
        # state (its own fit, if the array falls back, draws its dropout masks as its job would).
        with _kept_random_states(_device(self.cfgs[self.current])):
            try:
                members = build_members(self.cfgs, build)
                start = time.perf_counter()
                self.results = train_members(self.cfgs, members)
                self.fit_seconds = time.perf_counter() - start
            except Unfusable as exc:
                self.broken = str(exc)
            except Exception as exc:  # the array's own failure: every member falls back to a fit of its own
                log.exception("fused array %s failed; its members are fitted one by one", self.id)
                self.broken = f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _kept_random_states(device) -> Iterator[None]:
    """torch's (and the device's), NumPy's and Python's random states and Lightning's seed variable, as they
    were before the block."""
    import os
    import random

    import numpy as np

    python, numpy, seed = random.getstate(), np.random.get_state(), os.environ.get("PL_GLOBAL_SEED")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)
            if seed is None:
                os.environ.pop("PL_GLOBAL_SEED", None)
            else:
                os.environ["PL_GLOBAL_SEED"] = seed


class Unfusable(RuntimeError):
    """A member's built model holds what an array cannot stack (another dropout kind, a recurrent layer with
    inner dropout or a carried state)."""


@contextlib.contextmanager
def active(array: FusedArray) -> Iterator[FusedArray]:
    """Within this block, the finetune stage of ``array.cfgs[array.current]`` is a member of ``array``
    (installed where the stage asks, ``training.arrays``)."""
    from deepsweep.training import arrays

    with arrays.installed(lambda cfg, task, out, run_id, build: member_fit(array, cfg, task, out, run_id, build)):
        yield array


def member_fit(array: FusedArray, cfg: DictConfig, task: Any, out: Path, run_id: str | None, build: BuildMember):
    """The ``FitResult`` of this stage's task as a member of ``array`` (training the array first if no member
    has yet), with its metrics recorded as its own fit records them; None where the stage is not the member
    the launcher runs now, or the array fell back (the stage then fits alone)."""
    if OmegaConf.to_yaml(cfg, resolve=True) != OmegaConf.to_yaml(array.cfgs[array.current], resolve=True):
        log.warning("fused array %s: this stage's config is not its member's; fitted alone", array.id)
        return None
    if array.results is None and array.broken is None:
        array.train(build)
    if array.broken is not None:
        log.warning("fused array %s: fitted alone: %s", array.id, array.broken)
        return None
    return _replay(array, array.results[array.current], task, out, run_id)


def _replay(array: FusedArray, result: MemberResult, task: Any, out: Path, run_id: str | None):
    import mlflow

    from deepsweep.training.fit import CURVES_FILE, FitResult, write_curves

    if result.state is not None:
        task.model.load_state_dict(result.state)
    if run_id is not None:
        from deepsweep.training.mlflow_logger import MlflowRunLogger

        logger = MlflowRunLogger(run_id)
        for epoch in sorted(result.history):
            logger.log_metrics({**result.history[epoch], "epoch": epoch})
        logger.flush()
        write_curves(Path(out) / CURVES_FILE, logger.history)
        mlflow.set_tags({"deepsweep.fused_array": array.id, "deepsweep.fused_members": str(len(array.cfgs))})
    if result.error is not None:
        raise NonFiniteError(result.error)
    last = result.history[max(result.history)] if result.history else {}
    best = result.history.get(result.best_epoch, {}) if result.best_epoch is not None else {}
    return FitResult(best_score=result.best_score, best_epoch=result.best_epoch, epochs=result.epochs,
                     last_metrics=dict(last), fit_seconds=array.fit_seconds / len(array.cfgs),
                     val_metrics={k: v for k, v in best.items() if k.startswith("val/")})


def _device(cfg: DictConfig):
    """The device a member's own fit would train on (``auto``: a CUDA GPU where there is one, as Lightning picks)."""

    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        devices = cfg.trainer.devices
        index = int(devices[0]) if OmegaConf.is_list(devices) else 0
        return torch.device("cuda", index)
    return torch.device("cpu")


def _rng_state(device):
    """The state of the generator a fit on ``device`` draws its dropout masks from."""

    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device, state) -> None:

    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _dropout_sites(model: Any) -> dict[str, float]:
    """Where ``model`` drops units in training, and with which probability (``nn.Dropout``, and a recurrent
    encoder's per-sequence ``LockedDropout``); other dropout kinds are refused by name. (Batch norm needs nothing here: its running statistics are buffers, stacked
    per member like the weights and updated in place by the vmapped forward pass.)"""
    from deepsweep.models.sequence import LockedDropout
    from deepsweep.nn.modes import drops

    sites = {}
    for name, module in model.named_modules():
        if type(module) in (nn.Dropout, LockedDropout) and module.p > 0:
            sites[name] = float(module.p)
        elif drops(module):
            raise Unfusable(f"{name} is a {type(module).__name__}: only standard and variational (per-sequence) "
                            "dropout masks are drawn per member")
    return sites


class MemberStreams:
    """Each member's dropout masks, drawn from its own random stream as its unfused job draws them.

    The array's template model has a ``nn.modes.FedDropout`` wherever a member drops; a plain forward pass records
    the shape each of them sees (once per input shape). Before every step, each member's generator state is
    put in place, every mask is drawn into its slice of a stacked buffer by the draw its job's ``nn.Dropout``
    makes over that shape (``_draw``: equal masks), and the state is kept for the next step. A member that
    does not drop at a site gets ones and draws nothing, as its job would."""

    def __init__(self, template: Any, sites: list[dict[str, float]], states: list[Any], device) -> None:
        from deepsweep.models.sequence import LockedDropout
        from deepsweep.nn.modes import FedDropout

        self.feed = _Feed()
        self.template, self.sites, self.states, self.device = template, sites, list(states), device
        self.shapes: dict[tuple, list[tuple[str, tuple[int, ...]]]] = {}
        self.buffers: dict[tuple, list[Any]] = {}
        # Variational dropout (a recurrent encoder's LockedDropout) draws one mask per sequence, (N, 1, H), and
        # multiplies every step by it: the fed mask has that shape and broadcasts as its does.
        self.locked: set[str] = set()
        for name in sorted(set().union(*sites), key=len, reverse=True):  # children before their parents
            parent_name, _, leaf = name.rpartition(".")
            parent = template.get_submodule(parent_name) if parent_name else template
            if isinstance(getattr(parent, leaf), LockedDropout):
                self.locked.add(name)
            setattr(parent, leaf, FedDropout(name, self.feed))
        self.active = any(sites)

    def masks(self, members: Sequence[int], inputs: tuple) -> tuple:
        """One stacked mask per dropout call of a forward pass on ``inputs`` (one member's), members first;
        ones for ``members`` not listed (they left the array)."""

        if not self.active:
            return ()
        key = tuple(tuple(t.shape) for t in inputs)
        if key not in self.shapes:
            with torch.no_grad(), self.feed.recording() as calls:
                self.template(*inputs)
            self.shapes[key] = [(name, (shape[0], 1, shape[2]) if name in self.locked else shape)
                                for name, shape in calls]
        calls = self.shapes[key]
        n = len(self.sites)
        # One buffer per call and input shape, refilled every step (the last step's backward is done with it):
        # a fresh stack of masks for 8 members of Cora's input layer is 125 MB, and allocating it anew costs
        # the page faults of a fresh mapping every step.
        if key not in self.buffers:
            self.buffers[key] = [torch.empty((n, *shape), device=self.device) for _, shape in calls]
        stacked = self.buffers[key]
        # The members' states are put in place and read back; the process's own stream is left as it was.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for i, sites in enumerate(self.sites):
                drawing = i in members and bool(sites)
                if drawing:
                    _set_rng_state(self.device, self.states[i])
                for (name, shape), mask in zip(calls, stacked):
                    if drawing and name in sites:
                        self._draw(mask[i], sites[name], per_sequence=name in self.locked)
                    else:
                        mask[i].fill_(1.0)
                if drawing:
                    self.states[i] = _rng_state(self.device)
        return tuple(stacked)

    def _draw(self, out, p: float, per_sequence: bool = False) -> None:
        """``out`` := the mask ``nn.Dropout(p)`` multiplies its input by, drawn as it draws it. On the CPU that
        is ATen's ``_dropout_impl``: Bernoulli(1 - p) noise over the input's shape, divided by 1 - p (drawn in
        place here, in the stacked buffer); on a GPU, the fused ``native_dropout`` kernel, so the mask is that
        kernel's output on ones. ``per_sequence``: a ``LockedDropout`` mask, which it draws as Bernoulli noise
        divided by 1 - p on any device."""

        if out.device.type == "cpu" or per_sequence:
            out.bernoulli_(1 - p).div_(1 - p)
        else:
            out.copy_(torch.nn.functional.dropout(torch.ones_like(out), p, True))


class _Feed:
    """What the template's dropout layers do in the current forward pass: record their input shapes, apply
    the masks handed in (in call order), or nothing (validation)."""

    def __init__(self) -> None:
        self.calls: list | None = None
        self.queue: list | None = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[list]:
        self.calls = []
        try:
            yield self.calls
        finally:
            self.calls = None

    @contextlib.contextmanager
    def feeding(self, masks: Sequence[Any]) -> Iterator[None]:
        """Hand ``masks`` to this training pass's dropout calls, which must use every one of them."""
        self.queue = list(masks)
        try:
            yield
            if self.queue:
                raise RuntimeError(f"fused array: {len(self.queue)} dropout masks drawn but not used")
        finally:
            self.queue = None


# torch.optim classes that update each element of a tensor from that element's own gradient and state: a member's
# slice of a stacked tensor then steps as its job's own tensor would. Any other optimizer is not stacked.
ELEMENTWISE_OPTIMIZERS = ("ASGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Rprop",
                          "SGD")


@dataclass
class _Optimizer:
    """The members that share an optimizer setting, a schedule and a linear-probing length, and their weights:
    one leaf per parameter name holding every such member's tensor stacked (``weights``), which ``optimizer``
    steps (and its learning-rate schedule, if any; ``plateau``: the schedule steps on its one member's
    validation loss)."""

    optimizer: Any
    scheduler: Any
    members: list[int]
    weights: dict[str, Any]
    freeze_encoder_epochs: int
    plateau: bool = False
    # Each member's L1 and L2 coefficients and gradient clip (inf: none), on the weights' device, made once: a
    # tensor built from a list every step would be a host-to-device copy the host waits for. None: no member has one.
    l1: Any = None
    l2: Any = None
    clip: Any = None


def _optimizers(tasks: Sequence[Any], models: Sequence[Any], names: Sequence[str]) -> list[_Optimizer]:
    """One optimizer per distinct optimizer, schedule and linear-probing setting, over stacked copies of the
    weights of the members that share it. The update is elementwise, so a member's slice steps as its own
    weights would with an optimizer of its own. An array of 32 MLPs with one setting steps 6 tensors, not 192,
    and its step stacks nothing: 8.5 ms a step against 13.1 ms when each member kept its own weights, stacked
    anew every step (``python tools/fused_step_time.py 32``: 32 digits MLPs, one thread, AMD EPYC). A schedule
    that steps on a member's own validation loss (plateau) gets an optimizer per member; members that freeze
    their encoder for other numbers of epochs get their own, as the frozen weights' optimizer state starts
    later."""

    def key(factory) -> str:
        return repr((getattr(factory, "func", factory), getattr(factory, "args", ()),
                     sorted(getattr(factory, "keywords", {}).items())))

    def steps_on_a_metric(schedule) -> bool:  # built on a throwaway optimizer: whatever makes the schedule
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        return isinstance(schedule(probe), torch.optim.lr_scheduler.ReduceLROnPlateau)

    groups: dict[str, list[int]] = {}
    plateau: dict[str, bool] = {}
    for i, task in enumerate(tasks):
        schedule = task.scheduler_factory
        alone = schedule is not None and steps_on_a_metric(schedule)
        name = (key(task.optimizer_factory) + key(schedule) + f"freeze{task.freeze_encoder_epochs}"
                + (f"#{i}" if alone else ""))
        groups.setdefault(name, []).append(i)
        plateau[name] = alone
    merged = []
    own = [dict(model.named_parameters()) for model in models]
    for name, members in groups.items():
        task = tasks[members[0]]
        weights = {n: torch.stack([own[i][n].detach() for i in members]).requires_grad_(own[members[0]][n].requires_grad)
                   for n in names}
        optimizer = task.optimizer_factory(list(weights.values()))
        kind = type(optimizer)
        if not kind.__module__.startswith("torch.optim") or kind.__name__ not in ELEMENTWISE_OPTIMIZERS:
            raise Unfusable(f"{kind.__module__}.{kind.__name__}: not known to update each weight on its own, so "
                            "members' stacked weights cannot share it")
        scheduler = task.scheduler_factory(optimizer) if task.scheduler_factory is not None else None
        device = next(iter(weights.values())).device

        def per_member(values: list[float]):
            return torch.tensor(values, device=device) if any(v != 0 for v in values) else None

        clip = per_member([float(tasks[i].gradient_clip_val or 0) or math.inf for i in members])
        merged.append(_Optimizer(optimizer, scheduler, members, weights, int(task.freeze_encoder_epochs), plateau[name],
                                 l1=per_member([float(tasks[i].regularization.l1) for i in members]),
                                 l2=per_member([float(tasks[i].regularization.l2) for i in members]),
                                 clip=None if clip is None or bool(clip.isinf().all()) else clip))
    return merged


class _StackedWeights:
    """The members' weights as the array's forward pass takes them, one (members, ...) tensor per name in member
    order, from the optimizers' stacked leaves (joined and put in member order where there are several), and
    what goes back to each member's own model."""

    def __init__(self, optimizers: Sequence[_Optimizer], names: Sequence[str], n: int, device) -> None:
        self.optimizers, self.names = list(optimizers), list(names)
        order = [i for group in self.optimizers for i in group.members]
        position = {member: k for k, member in enumerate(order)}
        self.reorder = (None if order == list(range(n)) else
                        torch.tensor([position[i] for i in range(n)], device=device))
        self.where = {i: (group, k) for group in self.optimizers for k, i in enumerate(group.members)}

    def stacked(self) -> dict[str, Any]:
        if len(self.optimizers) == 1 and self.reorder is None:
            return dict(self.optimizers[0].weights)
        joined = {name: torch.cat([group.weights[name] for group in self.optimizers]) for name in self.names}
        return joined if self.reorder is None else {k: v.index_select(0, self.reorder) for k, v in joined.items()}

    def per_member(self, values: Callable[[_Optimizer], Any]):
        """One value per member in member order, from ``values(group)``: a vector over the group's members."""
        joined = torch.cat([values(group) for group in self.optimizers])
        return joined if self.reorder is None else joined.index_select(0, self.reorder)

    def copy_to(self, i: int, model: Any) -> None:
        """Member ``i``'s current weights into its own model."""
        group, k = self.where[i]
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(group.weights[name][k])


def _penalties(group: _Optimizer):
    """Each of the group's members' L1/L2 penalty (``nn.regularizers.Regularization.penalty``: weight matrices and
    kernels its fit trains now, biases and norm scales excluded), from the group's stacked weights; exactly 0
    for a member without one (never 0 x an overflowed sum)."""
    first = next(iter(group.weights.values()))
    total = first.new_zeros(len(group.members))
    for weight in group.weights.values():
        if weight.ndim < 3 or not weight.requires_grad:  # a member's own tensor has ndim - 1; frozen: not trained
            continue
        for coefficients, size in ((group.l1, lambda w: w.abs()), (group.l2, lambda w: w.pow(2))):
            if coefficients is not None:
                total = total + torch.where(coefficients != 0, coefficients * size(weight).flatten(1).sum(1), 0.0)
    return total


def _clip_gradients(group: _Optimizer) -> None:
    """``torch.nn.utils.clip_grad_norm_`` for each member of the group with a ``gradient_clip_val`` over its
    own slice of the stacked gradients: scaled by max_norm / (its total 2-norm + 1e-6), at most 1."""
    grads = [w.grad for w in group.weights.values() if w.grad is not None]
    if group.clip is None or not grads:
        return
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
    scale = torch.where(group.clip.isinf(), 1.0, (group.clip / (norms + 1e-6)).clamp(max=1.0))  # inf: no clip
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.ndim - 1)))


class StackableRecurrent(nn.Module):
    """Stands in for an ``nn.RNN``/``nn.LSTM``/``nn.GRU`` in a fused array's template: the same parameters
    under the same names, the same recurrence written step by step in ops ``torch.func.vmap`` can batch
    (it has no batching rule for ``aten::lstm``, ``aten::gru`` or ``aten::rnn_tanh``).

    Each step follows ATen's native cell (``aten/src/ATen/native/RNN.cpp``): the input projections of every
    step first, then per step ``linear_hh(h) + projected input``, chunked into the gates in its order (LSTM:
    i, f, g, o; GRU: r, z, n, with n = tanh(x_n + r * h_n) and h' = (h - n) * z + n). A job's own layer may
    take oneDNN's kernel instead, so a member's outputs are its job's to float rounding (tests/test_fused.py).

    Each step is a few vmapped ops of a Python loop, where a job's own layer runs its steps in ATen's C++
    loop. On a 2-core CPU that loop costs about what stacking saves, or more: 8 GRU jobs on 50-step sequences
    (3 epochs) spent 8.8 s in finetune as one array against 10.4 s one after another, and the sweep took
    19.5 s against 21.8 s on an AMD EPYC at 8d45f38, 19.7 s against 19.2 s at 44b9f92 (on an Intel Xeon at
    582e523: 17.5 s against 13.9 s, 36.8 s against 31.8 s; ``python -m deepsweep.bench --only fused
    --fused-sizes gru:8 --fused-sweeps gru``, docs/benchmarks.md). So the fused launcher fuses recurrent
    members on a GPU only (``unfusable``); what it buys there is not measured yet."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.mode, self.hidden_size, self.num_layers = rnn.mode, rnn.hidden_size, rnn.num_layers
        self.directions = 2 if rnn.bidirectional else 1
        for name, param in rnn.named_parameters():
            self.register_parameter(name, param)

    def _direction(self, x, layer: int, suffix: str, reverse: bool):
        linear = torch.nn.functional.linear
        w_ih, w_hh = getattr(self, f"weight_ih_l{layer}{suffix}"), getattr(self, f"weight_hh_l{layer}{suffix}")
        b_ih, b_hh = getattr(self, f"bias_ih_l{layer}{suffix}", None), getattr(self, f"bias_hh_l{layer}{suffix}", None)
        projected = linear(x, w_ih, b_ih)  # (N, T, gates x H): every step's input projection at once
        h = c = x.new_zeros(x.shape[0], self.hidden_size)
        outputs = []
        for t in range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1]):
            gates = linear(h, w_hh, b_hh)
            if self.mode == "LSTM":
                i, f, g, o = (gates + projected[:, t]).chunk(4, 1)
                c = f.sigmoid() * c + i.sigmoid() * g.tanh()
                h = o.sigmoid() * c.tanh()
            elif self.mode == "GRU":
                x_r, x_z, x_n = projected[:, t].chunk(3, 1)
                h_r, h_z, h_n = gates.chunk(3, 1)
                r, z = (h_r + x_r).sigmoid(), (h_z + x_z).sigmoid()
                n = (x_n + h_n * r).tanh()
                h = (h - n) * z + n
            else:
                h = (gates + projected[:, t]).tanh() if self.mode == "RNN_TANH" else (gates + projected[:, t]).relu()
            outputs.append(h)
        if reverse:
            outputs.reverse()
        return torch.stack(outputs, 1), h, c

    def forward(self, x, state=None):
        if state is not None:
            raise Unfusable("a recurrent layer fed a carried state (truncated BPTT) is not fused")
        last_h, last_c = [], []
        for layer in range(self.num_layers):
            runs = []
            for direction in range(self.directions):
                out, h, c = self._direction(x, layer, "_reverse" if direction else "", reverse=bool(direction))
                runs.append(out)
                last_h.append(h)
                last_c.append(c)
            x = torch.cat(runs, dim=2) if len(runs) > 1 else runs[0]
        return x, ((torch.stack(last_h), torch.stack(last_c)) if self.mode == "LSTM" else torch.stack(last_h))


def _stackable_recurrent_layers(template: Any) -> None:
    """Swap each recurrent layer of ``template`` for a ``StackableRecurrent`` over the same parameters."""
    for name, module in list(template.named_modules()):
        if isinstance(module, nn.RNNBase):
            if not module.batch_first or module.dropout or getattr(module, "proj_size", 0):
                raise Unfusable(f"{name}: only batch-first recurrent layers without inner dropout or projections "
                                "are fused")
            parent_name, _, leaf = name.rpartition(".")
            parent = template.get_submodule(parent_name) if parent_name else template
            setattr(parent, leaf, StackableRecurrent(module))


def _graph_batch(loaders: Sequence[Any]) -> tuple:
    """The one full-graph batch every member trains on ((x, edge_index), selected nodes, their labels);
    members whose graphs or node masks differ cannot share it."""

    batches = [next(iter(loader)) for loader in loaders]  # a full graph: one batch, no random draw
    for batch in batches[1:]:
        if not all(a is b or torch.equal(a, b) for a, b in zip(batches[0], batch)):
            raise Unfusable("the members' graph batches differ (their labelled nodes)")
    x, edge_index, y, mask = batches[0]
    index = mask.nonzero().flatten()
    return (x, edge_index), index, y.index_select(0, index)


def _member_batches(loaders: Sequence[Any], device) -> Callable[[], Iterator[tuple[Any, Any]]]:
    """An epoch's training steps as (x, y), each stacked over the members (members first). Where every member's
    loader is an ``InMemoryLoader`` over the very same split without augmentation, the split is moved to
    ``device`` once and each step is one gather by the members' own epoch orders, each drawn from the member's
    own generator as its job's loader draws it: 2 gathers a step instead of 64 and two stacks for 32 members,
    and one copy of the split on a GPU, not 32 (MNIST's training split is 170 MB: the 32-member array's 194 MB
    of GPU memory a member in docs/benchmarks_gpu.md is mostly those copies; not measured again yet). On a CPU
    the step costs the same either way (``python tools/fused_step_time.py 32``: 8.46 against 8.48 ms).
    Otherwise each member's loader gives its batch, and they are stacked."""
    from deepsweep.data.loaders import InMemoryLoader

    first = loaders[0]
    if all(isinstance(loader, InMemoryLoader) and loader.augment is None and loader.batch_size == first.batch_size
           and loader.split.x is first.split.x and loader.split.y is first.split.y for loader in loaders):
        shared = first.to(device).split

        def gathered() -> Iterator[tuple[Any, Any]]:
            orders = torch.stack([loader.epoch_order() for loader in loaders]).to(shared.x.device)
            for start in range(0, orders.shape[1], first.batch_size):
                index = orders[:, start : start + first.batch_size]
                yield shared.x[index].to(device), shared.y[index].to(device)

        return gathered
    moved = [loader.to(device) for loader in loaders]

    def stacked() -> Iterator[tuple[Any, Any]]:
        for batches in zip(*moved):
            yield torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])

    return stacked


def _on_device(graphs: Sequence[tuple], device) -> list[tuple]:
    """``_graph_batch`` tuples on ``device``, each tensor moved once (a graph's training and validation batches
    share its features and edges)."""
    moved: dict[int, Any] = {}

    def move(tensor):
        if id(tensor) not in moved:  # the tensors stay alive in ``graphs``: their ids are not reused meanwhile
            moved[id(tensor)] = tensor.to(device)
        return moved[id(tensor)]

    return [((move(x), move(edge_index)), move(index), move(y)) for (x, edge_index), index, y in graphs]


def train_members(cfgs: Sequence[DictConfig], members: Sequence[Member]) -> list[MemberResult]:
    """Fit the members (``build_members``) as one stacked model; what each one's ``training.fit`` would do
    alone: per-epoch train/val loss, val accuracy and macro F1, best weights by val/loss, early stopping by
    its own patience, a stop at its first non-finite epoch value."""
    from torch.func import functional_call, vmap
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    from deepsweep.training.callbacks import learning_rates

    device = _device(cfgs[0])
    tasks = [member.task for member in members]
    models = [task.model for task in tasks]
    sites = [_dropout_sites(model) for model in models]
    for model in models:
        model.to(device).train()
    # A graph task (tasks.classify.NodeClassifyTask) trains every member on the whole graph at every step:
    # the members' graphs are compared where they are, and one copy is moved to the device.
    graph, val_graph = None, None
    if getattr(tasks[0], "kind", None) == "graph":
        graph, val_graph = _on_device([_graph_batch([member.train_loader for member in members]),
                                       _graph_batch([members[0].val_loader])], device)
        train_batches, val_loader = None, None
    else:
        train_batches = _member_batches([member.train_loader for member in members], device)
        val_loader = members[0].val_loader.to(device)  # not shuffled, the same split: one for all
    n = len(models)
    # The template runs every member's forward pass: a copy of the member that drops at the most places.
    shaped = max(range(n), key=lambda i: len(sites[i]))
    if not all(set(s) <= set(sites[shaped]) for s in sites):
        raise Unfusable("the members drop units at different layers")
    template, criterion = copy.deepcopy(models[shaped]), tasks[0].criterion  # the loss group is a shape key
    names = [name for name, _ in template.named_parameters()]
    if any([name for name, _ in model.named_parameters()] != names for model in models):
        raise Unfusable("the members' parameters differ in name")
    _stackable_recurrent_layers(template)
    streams = MemberStreams(template, sites, [member.rng_state for member in members], device)
    # Running statistics (batch norm), stacked: the vmapped forward pass updates each member's slice in place
    # in training, and reads it in evaluation; ``keep_statistics`` copies a member's slice back to its model.
    buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in models]) for name, _ in template.named_buffers()}
    own_buffers = [dict(model.named_buffers()) for model in models]

    def keep_statistics(i: int) -> None:
        with torch.no_grad():
            for name, buffer in own_buffers[i].items():
                buffer.copy_(buffers[name][i])
    optimizers = _optimizers(tasks, models, names)
    weights = _StackedWeights(optimizers, names, n, device)
    encoder = {f"encoder.{name}" for name, _ in models[0].encoder.named_parameters()}
    penalized = any(t.regularization.l1 or t.regularization.l2 for t in tasks)
    classes = int(template.num_classes)

    def keep_weights(i: int) -> None:
        """Member ``i``'s weights and running statistics, as they are now, into its own model."""
        weights.copy_to(i, models[i])
        keep_statistics(i)

    def member_loss(params, member_buffers, masks, inputs, index, y):
        if masks is None:  # validation: no dropout
            logits = functional_call(template, (params, member_buffers), inputs)
        else:
            with streams.feed.feeding(masks):
                logits = functional_call(template, (params, member_buffers), inputs)
        if index is not None:  # a graph: the model sees every node, the loss only the split's
            logits = logits.index_select(0, index)
        return criterion(logits, y), logits

    # Each member its own batch, or one graph for all (then only the weights and masks are stacked).
    train_step = vmap(member_loss, in_dims=(0, 0, 0, 0, None, 0) if graph is None else (0, 0, 0, None, None, None))
    validate = vmap(member_loss, in_dims=(0, 0, None, None, None, None))  # the same validation batch for all

    results = [MemberResult() for _ in range(n)]
    active = list(range(n))
    patience = [t.regularization.early_stopping_patience for t in tasks]
    stop_best = [math.inf] * n
    waits = [0] * n
    steps = 0
    epochs = int(cfgs[0].trainer.max_epochs)
    for epoch in range(epochs):
        if not active:
            break
        for group in optimizers:  # linear probing first (ClassifyTask.on_train_epoch_start)
            for name in encoder:
                group.weights[name].requires_grad_(epoch >= group.freeze_encoder_epochs)
        for group in optimizers:  # training.callbacks.EpochLearningRates: the rate this epoch trains with
            if group.scheduler is not None:
                rates = learning_rates([group.optimizer])
                for i in group.members:
                    if i in active:
                        results[i].history.setdefault(epoch, {}).update(rates)
        train_losses, train_counts = [], []
        for batch in [graph] if graph is not None else train_batches():
            if graph is not None:
                inputs, index, y = batch
                masks = streams.masks(active, inputs)
            else:
                (x, y), index = batch, None
                inputs = (x,)
                masks = streams.masks(active, (x[0],))
            losses, _ = train_step(weights.stacked(), buffers, masks, inputs, index, y)
            if penalized:
                losses = losses + weights.per_member(_penalties)
            train_losses.append(losses.detach())
            train_counts.append(y.shape[0] if graph is not None else y.shape[1])
            for group in optimizers:
                group.optimizer.zero_grad(set_to_none=True)
            # A member that left is out of the summed loss (a non-finite one's slice may still get NaN gradients
            # through the shared ops). Its slice may go on moving (momentum, NaN), each slice on its own: its
            # results and weights were kept when it left.
            (losses.sum() if len(active) == n else losses[torch.tensor(active, device=device)].sum()).backward()
            for group in optimizers:
                _clip_gradients(group)
                group.optimizer.step()
            steps += 1
        train_mean = _weighted_means(train_losses, train_counts)

        template.eval()  # batch norm reads the running statistics, as a fit validates
        with torch.no_grad():
            params = weights.stacked()
            val_losses, val_counts, predicted, targets = [], [], [], []
            val_batches = [val_graph] if val_graph is not None else [((x,), None, y) for x, y in val_loader]
            for inputs, index, y in val_batches:
                losses, logits = validate(params, buffers, None, inputs, index, y)
                val_losses.append(losses)
                val_counts.append(len(y))
                predicted.append(logits.argmax(dim=-1))
                targets.append(y)
            val_mean = _weighted_means(val_losses, val_counts)
            predicted, target = torch.cat(predicted, dim=1), torch.cat(targets)
            acc = torch.stack([multiclass_accuracy(predicted[i], target, classes, average="micro", validate_args=False)
                               for i in range(n)])
            f1 = torch.stack([multiclass_f1_score(predicted[i], target, classes, average="macro", validate_args=False)
                              for i in range(n)])
        template.train()
        table = torch.stack([val_mean, acc, f1, train_mean], dim=1).tolist()  # one device sync per epoch
        for i in list(active):
            val_loss, val_acc, val_f1, train_loss = table[i]
            result = results[i]
            try:  # in the order a fit logs them: validation first, then the training epoch's mean
                check_finite({"val/loss": val_loss}, epoch, steps)
                check_finite({"val/acc": val_acc, "val/f1": val_f1}, epoch, steps)
                result.history.setdefault(epoch, {}).update({"val/loss": val_loss, "val/acc": val_acc, "val/f1": val_f1})
                check_finite({"train/loss": train_loss}, epoch, steps)
            except NonFiniteError as exc:
                result.error, result.epochs = str(exc), epoch
                active.remove(i)
                keep_weights(i)
                continue
            result.history[epoch]["train/loss"] = train_loss
            result.epochs = epoch + 1
            if result.best_score is None or val_loss < result.best_score:  # training.callbacks.BestWeights
                result.best_score, result.best_epoch = val_loss, epoch
                keep_weights(i)
                result.state = {k: v.detach().to("cpu", copy=True) for k, v in models[i].state_dict().items()}
            if patience[i] is not None:  # Lightning's EarlyStopping(min_delta=0, mode="min")
                if val_loss < stop_best[i]:
                    stop_best[i], waits[i] = val_loss, 0
                else:
                    waits[i] += 1
                    if waits[i] >= int(patience[i]):
                        active.remove(i)
                        keep_weights(i)
        for group in optimizers:  # at the epoch's end, after validation, as tasks.common steps them
            if group.scheduler is None:
                continue
            if group.plateau:
                member = group.members[0]
                if results[member].error is None:
                    group.scheduler.step(table[member][0])
            else:
                group.scheduler.step()
    for i, model in enumerate(models):
        if i in active:  # the others' were kept when they left
            keep_weights(i)
        model.to("cpu")
    return results


def _weighted_means(values: list[Any], counts: list[int]):
    """Per member, the sample-weighted mean over an epoch's batches: ``tasks.common.EpochMean`` over
    per-member vectors."""
    from deepsweep.tasks.common import EpochMean

    mean = EpochMean()
    for value, count in zip(values, counts):
        mean.update(value, count)
    return mean.pop()
