"""Every private library name deepsweep relies on (deepsweep/internals.py) still exists and still does what
it is used for. A failure names the library version that changed it: fix deepsweep.internals, nothing else."""

from __future__ import annotations

import lightning
import pytest
import torch
import torch_geometric

LIGHTNING = f"lightning {lightning.__version__}"
PYG = f"torch-geometric {torch_geometric.__version__}"


def test_lightning_optimizer_keeps_the_manual_step_hooks():
    from lightning.pytorch.core.optimizer import LightningOptimizer

    wrapped = LightningOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    for name in ("_on_before_step", "_on_after_step"):
        assert callable(getattr(wrapped, name, None)), (
            f"{LIGHTNING}: LightningOptimizer.{name} is gone; internals.plain_optimizer_step calls it around the "
            "torch step (use optimizer.step() there instead)")


def test_plain_optimizer_step_counts_global_steps_as_step_would(tmp_path):
    from deepsweep.internals import plain_optimizer_step

    class Manual(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(self.layer(batch[0]).pow(2).mean())
            plain_optimizer_step(optimizer)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Manual()
    before = module.layer.weight.detach().clone()
    trainer = lightning.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(5, 2)), batch_size=1))
    assert trainer.global_step == 5, f"{LIGHTNING}: the manual step hooks no longer count global_step"
    assert not torch.equal(before, module.layer.weight), f"{LIGHTNING}: LightningOptimizer.optimizer is not the torch optimizer"


def test_callback_metrics_is_the_trainers_live_dict(tmp_path):
    from deepsweep.internals import set_callback_metrics

    trainer = lightning.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    set_callback_metrics(trainer, {"val/loss": torch.tensor(0.5)})
    assert float(trainer.callback_metrics["val/loss"]) == 0.5, (
        f"{LIGHTNING}: trainer.callback_metrics returns a copy; internals.set_callback_metrics must write where "
        "early stopping reads (or tasks log with self.log again)")


def test_neighbor_sampler_still_samples_through_its_private_kernel():
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader
    from torch_geometric.sampler import NeighborSampler

    from deepsweep.data.sampling import sample_neighbors
    from deepsweep.internals import torch_neighbor_sampler

    assert callable(getattr(NeighborSampler, "_sample", None)), (
        f"{PYG}: NeighborSampler._sample is gone; internals.torch_neighbor_sampler overrides it")
    calls = []

    def counted(*args):
        calls.append(args)
        return sample_neighbors(*args)

    graph = Data(x=torch.arange(4.0).unsqueeze(1), edge_index=torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]]), num_nodes=4)
    loader = NeighborLoader(graph, [1], batch_size=2, neighbor_sampler=torch_neighbor_sampler(counted)(graph, [1]))
    batches = list(loader)
    assert calls and len(batches) == 2, f"{PYG}: NeighborLoader no longer reaches NeighborSampler._sample"
    with pytest.raises(NotImplementedError, match="sampling with replacement"):
        torch_neighbor_sampler(counted)(graph, [1], replace=True).sample_from_nodes(
            __import__("torch_geometric.sampler", fromlist=["NodeSamplerInput"]).NodeSamplerInput(None, torch.tensor([0])))


def test_a_failed_hydra_job_keeps_its_exception_where_job_outcome_reads_it():
    import hydra
    from hydra.core.utils import JobReturn, JobStatus

    from deepsweep.internals import job_outcome

    error = ValueError("the job's own error")
    failed = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED)
    failed.return_value = error  # the public setter
    assert job_outcome(failed) is error, (
        f"hydra-core {hydra.__version__}: JobReturn no longer keeps a failed job's exception in _return_value; "
        "internals.job_outcome must read it elsewhere")
    with pytest.raises(ValueError):  # why the public property is not used: it raises (and prints) the error
        failed.return_value
