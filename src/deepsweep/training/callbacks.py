"""The callbacks every fit uses: the best weights kept in memory, and every random stream saved with a resume
checkpoint."""

from __future__ import annotations

import copy
import math
import sys
import time

import lightning as L
import torch

from deepsweep import internals


class BestWeights(L.Callback):
    """Keep the weights of the epoch with the lowest ``monitor`` in memory and restore them when fitting
    ends, so early stopping and overfitting never leave the last (worse) weights behind. In memory,
    because writing a checkpoint file every epoch costs more than these small models take to train."""

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's metrics are logged (the module's on_validation_epoch_end runs after callbacks').
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            return
        score = float(score)
        if not math.isfinite(score):  # never keep the weights of a diverged epoch (log_epoch stops the fit)
            return
        if self.best_score is None or score < self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            # A tensor-by-tensor copy: deepcopy's generic machinery costs more than the copy on small models.
            self._state = {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                           for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._state is not None:
            pl_module.load_state_dict(self._state)
        carried = {"fit/epochs": torch.tensor(float(trainer.current_epoch))}
        if self.best_score is not None:
            # With strategy=ddp_spawn fitting runs in other processes; callback metrics are what Lightning
            # carries back to the one that called fit (the weights, best ones loaded above, come back too).
            carried.update({"best/score": torch.tensor(self.best_score),
                            "best/epoch": torch.tensor(float(self.best_epoch))})
        internals.set_callback_metrics(trainer, carried)

    @staticmethod
    def epochs(trainer: L.Trainer) -> int:
        """Epochs trained, also after a spawned fit (whose loop state stays in the spawned processes)."""
        carried = trainer.callback_metrics.get("fit/epochs")
        return max(trainer.current_epoch, int(carried) if carried is not None else 0)

    def result(self, trainer: L.Trainer) -> tuple[float | None, int | None]:
        """(best score, its epoch), from this callback or, after a spawned fit, from the trainer."""
        if self.best_score is not None:
            return self.best_score, self.best_epoch
        score, epoch = trainer.callback_metrics.get("best/score"), trainer.callback_metrics.get("best/epoch")
        return (float(score), int(epoch)) if score is not None else (None, None)

    # Saved in resume checkpoints (training.resume), so a resumed fit still knows its best epoch so far.
    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "state": self._state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score, self.best_epoch = state_dict["best_score"], state_dict["best_epoch"]
        self._state = state_dict["state"]


def _generator(loader):
    """The shuffling generator of a loader, through its wrappers (Chunked, device placement)."""
    while loader is not None:
        generator = getattr(loader, "generator", None)
        if generator is not None:
            return generator
        loader = getattr(loader, "loader", None)
    return None


def random_states(*loaders):
    """A callback whose state, saved in every resume checkpoint, is every random stream a fit draws from:
    torch's (CPU and CUDA: dropout, noise, sampling), NumPy's, Python's and the loaders' shuffling
    generators. Restored before the resumed fit's first epoch, so the epochs after the checkpoint draw what
    they would have drawn had the fit never stopped: a resumed fit ends with the same weights as an
    uninterrupted one (tests/faults/test_resume.py, bit for bit on CPU)."""
    import random

    import numpy as np

    generators = [g for g in (_generator(loader) for loader in loaders) if g is not None]

    class RandomStates(L.Callback):
        def state_dict(self) -> dict:
            # Plain types and tensors only: Lightning loads checkpoints with torch.load(weights_only=True).
            kind, keys, pos, has_gauss, cached = np.random.get_state()
            numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
            return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": list(random.getstate()),
                    # Only a process that uses CUDA has a CUDA stream to keep, and only its current device's:
                    # asking for every GPU's would start a context on each.
                    "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
                    "loaders": [g.get_state() for g in generators]}

        def load_state_dict(self, state: dict) -> None:
            torch.set_rng_state(state["torch"])
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            version, internal, gauss_next = state["python"]
            random.setstate((version, tuple(internal), gauss_next))
            if state["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state(state["cuda"][0])
            for generator, saved in zip(generators, state["loaders"]):
                generator.set_state(saved)

    return RandomStates()


def _sweep_job() -> str:
    """``job 3 ``: in a sweep's job, the prefix that tells its lines from those of the jobs running beside it.
    Read from Hydra only where Hydra runs the process (a DVC stage never imports it)."""
    module = sys.modules.get("hydra.core.hydra_config")
    if module is None or not module.HydraConfig.initialized():
        return ""
    hydra = module.HydraConfig.get()
    return f"job {hydra.job.num} " if str(hydra.mode).endswith("MULTIRUN") and hydra.job.get("num") is not None else ""


class EpochLines(L.Callback):
    """One line per epoch on stderr, where a progress bar cannot draw (a log file, DVC's output, CI):
    ``finetune epoch 2 (3/20): train/loss 0.41, val/acc 0.93, val/loss 0.25 (0.42 s)``: the epoch's index, counted
    from 0 as MLflow's steps, curves.csv, ``best_epoch`` and a non-finite error count it, then how many of the
    epochs are done; in a sweep's job, ``job 3 finetune epoch 2 (3/20): ...``. Printed when the next epoch
    starts (and when fitting ends): the task logs its training metrics after the callbacks' epoch end."""

    def __init__(self, stage: str) -> None:
        self.stage = f"{_sweep_job()}{stage}"
        self._start: float | None = None

    def _print(self, trainer: L.Trainer) -> None:
        if self._start is None:
            return
        shown = ", ".join(f"{key} {float(value):.4g}" for key, value in sorted(trainer.callback_metrics.items())
                          if "/" in key and value.numel() == 1)
        done = trainer.current_epoch  # the next epoch's index: the epochs done
        print(f"{self.stage} epoch {done - 1} ({done}/{trainer.max_epochs}): {shown} "
              f"({time.perf_counter() - self._start:.2f} s)", file=sys.stderr, flush=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer)
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer)
        self._start = None


def learning_rates(optimizers) -> dict[str, float]:
    """Each optimizer's current learning rate under Lightning's names: ``lr-Adam``, ``/pg2`` per further
    parameter group, ``-1`` for a second optimizer of a class."""
    values: dict[str, float] = {}
    for optimizer in optimizers:
        name = f"lr-{type(optimizer).__name__}"
        taken = len({key.split("/")[0] for key in values
                     if key.split("/")[0] == name or key.split("/")[0].startswith(f"{name}-")})
        name = name if not taken else f"{name}-{taken}"
        for index, group in enumerate(optimizer.param_groups):
            values[name if index == 0 else f"{name}/pg{index + 1}"] = float(group["lr"])
    return values


class EpochLearningRates(L.Callback):
    """Each optimizer's learning rate at the start of every epoch (``learning_rates``), with the epoch as its
    step. Lightning's ``LearningRateMonitor`` steps these by optimizer steps, so in curves.csv and MLflow they
    landed on other epochs' rows (the value of epoch 1 on the row of epoch 2, rows past the last epoch)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.logger is not None:
            trainer.logger.log_metrics({**learning_rates(trainer.optimizers), "epoch": trainer.current_epoch})


class CurveHistory(L.Callback):
    """Keeps a logger's per-epoch history (what ``curves.csv`` is written from) in resume checkpoints, so a
    resumed fit's curves start at epoch 0, not at the epoch it resumed from."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def state_dict(self) -> dict:
        return {"history": {int(epoch): dict(metrics) for epoch, metrics in self.logger.history.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        restored = {int(epoch): dict(metrics) for epoch, metrics in state_dict.get("history", {}).items()}
        self.logger.history = {**restored, **self.logger.history}


class LayerStatistics(L.Callback):
    """Per layer with weights (linear and convolution layers, in the model's order): the standard deviation
    of its input, which is what the layer before it put out (the data for the first), and the norm of the
    gradient of the loss with respect to its weights; measured on one fixed batch before training (step 0)
    and after each of the first ``epochs`` epochs (step k), as the MLflow metrics ``layer/input_std/<i>`` and
    ``layer/grad_norm/<i>``: the curves of Glorot & Bengio (2010) and He et al. (2015) for any config
    (``logger.layer_stats``). The gradient needs a task with a ``criterion`` on the model's output (the
    classifiers); for others only the inputs are measured.

    Nothing the fit does changes: the model is measured in eval mode (no dropout draw, no batch-norm
    statistics update), the random state is put back, and so are the gradients it found."""

    LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)

    def __init__(self, batch, logger, epochs: int = 1) -> None:
        self.batch, self.logger, self.epochs = batch, logger, epochs

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:  # a resumed fit measured its start already
            self.logger.log_metrics(self.measure(pl_module), step=0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch < self.epochs:
            self.logger.log_metrics(self.measure(pl_module), step=trainer.current_epoch + 1)

    def measure(self, task: L.LightningModule) -> dict[str, float]:
        model = task.model
        layers = [m for m in model.modules() if isinstance(m, self.LAYERS)]
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in self.batch[:2])
        inputs: dict[int, torch.Tensor] = {}

        def keep_input(i: int):
            def hook(module, args, output) -> None:  # returns None: a hook's return value replaces the output
                inputs.setdefault(i, args[0].detach())
            return hook

        hooks = [layer.register_forward_hook(keep_input(i)) for i, layer in enumerate(layers)]
        parameters = list(model.parameters())
        grads = [p.grad for p in parameters]
        cpu_state = torch.get_rng_state()
        cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        training = model.training
        try:
            model.eval()
            for p in parameters:
                p.grad = None
            with torch.enable_grad():
                output = model(x)
                criterion = getattr(task, "criterion", None)
                if criterion is not None:
                    criterion(output, y).backward()
            metrics = {f"layer/input_std/{i:02d}": float(value.float().std()) for i, value in sorted(inputs.items())}
            metrics.update({f"layer/grad_norm/{i:02d}": float(layer.weight.grad.norm())
                            for i, layer in enumerate(layers) if layer.weight.grad is not None})
        finally:
            for hook in hooks:
                hook.remove()
            model.train(training)
            for p, grad in zip(parameters, grads):
                p.grad = grad
            torch.set_rng_state(cpu_state)
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)
        return metrics


class ModeCoverage(L.Callback):
    """After each training epoch, ``samples`` inputs generated from the same codes every epoch (a task that
    ``generates_inputs``) against the modes of the data (``meta.json``'s ``modes`` and ``mode_std``, which
    ``data=ring`` writes): ``samples/modes_covered`` and ``samples/high_quality`` (``metrics.mode_coverage``)
    as per-epoch MLflow metrics and in the stage's summary, and ``snapshots`` (epoch -> the first 500
    samples) for the scatter figure of training. The generator is sampled in eval mode (batch-norm running
    statistics) from its own random stream, so the fit's streams are untouched."""

    def __init__(self, centers, std: float, samples: int = 2500, kept: int = 500) -> None:
        self.centers, self.std = torch.as_tensor(centers, dtype=torch.float32), float(std)
        self.samples, self.kept = samples, kept
        self.snapshots: dict[int, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from deepsweep.metrics import mode_coverage

        training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                x = pl_module.generate(self.samples, generator=torch.Generator().manual_seed(0)).float().cpu()
        finally:
            pl_module.train(training)
        x = x.flatten(1)
        values = {f"samples/{k}": v for k, v in mode_coverage(x, self.centers, self.std).items()}
        self.snapshots[trainer.current_epoch] = x[: self.kept]
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
        if trainer.logger is not None:
            trainer.logger.log_metrics(values, step=trainer.current_epoch)
