"""Resume equals an uninterrupted run: a fit that stops after a resume checkpoint and is run again ends with the
same weights, bit for bit on CPU, because the checkpoint holds every random stream (torch, NumPy, Python and
the loader's shuffling), and the checkpoint goes only once the stage's output is committed."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from deepsweep.training import callbacks, resume as checkpoints

# Dropout and a denoising (masking) autoencoder: the global torch stream, and the loader's shuffle.
OVERRIDES = ("pretrain=denoising_autoencoder", "pretrain.epochs=4", "regularizer=dropout", "trainer.num_threads=1",
             "trainer.checkpoint_every_n_epochs=1", "logger.log_checkpoints=false", "data.batch_size=256")


class Crash(L.Callback):
    """Stops the fit after epoch ``at`` is checkpointed (a kill there, but in-process)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.at:
            raise RuntimeError(f"crash after epoch {self.at}")


def encoder(folder):
    return torch.load(folder / "pretrain" / "encoder.pt", weights_only=True)["encoder"]


@pytest.mark.slow
def test_a_resumed_fit_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, compose, monkeypatch):
    import mlflow

    from deepsweep.stages.pipeline import execute

    cfg = compose(*OVERRIDES)
    clean = tmp_path / "clean"
    execute("prepare", cfg, clean)
    execute("pretrain", cfg, clean)

    resumed = tmp_path / "resumed"
    execute("prepare", cfg, resumed)
    original = checkpoints.Resume.callbacks
    with monkeypatch.context() as patch:  # not monkeypatch.undo(): it would end the test's tracking isolation too
        patch.setattr(checkpoints.Resume, "callbacks", lambda self, *loaders: [*original(self, *loaders), Crash(at=1)])
        with pytest.raises(RuntimeError, match="crash after epoch 1"):
            execute("pretrain", cfg, resumed)
    # The failed stage left no output but kept its checkpoint.
    assert not (resumed / "pretrain").exists()
    assert (resumed / "pretrain.resume" / "last.ckpt").is_file()

    execute("pretrain", cfg, resumed)
    last = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["attributes.start_time DESC"])[0]
    assert last.data.tags["deepsweep.resumed_from"].endswith("last.ckpt")
    assert not (resumed / "pretrain.resume").exists()  # gone once the output is committed
    a, b = encoder(clean), encoder(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_without_the_random_states_the_resumed_fit_differs(tmp_path, compose, monkeypatch):
    """The control: the same crash and resume with the random states left out gives other weights, so the
    test above checks what it claims."""
    from deepsweep.stages.pipeline import execute

    cfg = compose(*OVERRIDES)
    clean = tmp_path / "clean"
    execute("prepare", cfg, clean)
    execute("pretrain", cfg, clean)

    monkeypatch.setattr(callbacks, "random_states", lambda *loaders: L.Callback())
    resumed = tmp_path / "resumed"
    execute("prepare", cfg, resumed)
    original = checkpoints.Resume.callbacks
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.Resume, "callbacks", lambda self, *loaders: [*original(self, *loaders), Crash(at=1)])
        with pytest.raises(RuntimeError):
            execute("pretrain", cfg, resumed)
    execute("pretrain", cfg, resumed)
    a, b = encoder(clean), encoder(resumed)
    assert not all(torch.equal(a[k], b[k]) for k in a)
