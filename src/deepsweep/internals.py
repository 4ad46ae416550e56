"""Every use of a library's private name lives here, and only here.

Each function says which public behaviour it replaces and what that saves, measured. Each is held by a
test (tests/test_internals.py) that fails with the library's version in its message when the private
name it relies on changes or disappears: an upgrade then fails loudly in one place, never silently in
a training loop. Nothing here is imported at start-up cost: Lightning and torch-geometric are imported
by the functions that use them.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Mapping


def plain_optimizer_step(optimizer: Any) -> None:
    """One optimizer step of a manually optimized LightningModule without Lightning's step machinery.

    Public: ``LightningOptimizer.step()``, which wraps the torch step in a closure and dispatches it
    through the strategy, the precision plugin and an ``on_before_optimizer_step`` hook: about 0.3 ms a
    step, more than a small model's whole step on a GPU (``make bench``, MLP and LeNet rows, with and
    without). Used only on one device at 32-bit precision with no module or callback overriding those
    hooks (``tasks.common.LossTask.on_fit_start``). The private ``_on_before_step``/``_on_after_step``
    are the manual loop's own hooks around the step: they count ``trainer.global_step`` as
    ``step()`` would."""
    optimizer._on_before_step()
    optimizer.optimizer.step()
    optimizer._on_after_step()


def job_outcome(job_return: Any) -> Any:
    """What a Hydra sweep job returned, or the exception a failed one raised, read without raising it.

    Public: ``JobReturn.return_value``, which for a failed job writes Hydra's "Error executing job with
    overrides" line to stderr and raises the job's exception: the sweep's progress line
    (``tracking.sweep.MlflowSweepCallback.on_job_end``) and the stop of an Optuna search whose metric is
    missing (``tracking.sweep.stop_on_unranked``) only look at it. The private name is the dataclass field
    ``JobReturn._return_value`` behind that property."""
    return job_return._return_value


def set_callback_metrics(trainer: Any, metrics: Mapping[str, Any]) -> None:
    """Put epoch values where ``LightningModule.log`` would put them: the trainer's callback metrics, which
    early stopping, best weights and plateau schedules read.

    Public: ``self.log``, which costs about 0.5 ms a value on CPU (it moves its result state to the
    value's device on every call): the four values of a classifier's epoch cost a third of a full-batch
    GCN epoch on Cora on a GPU. This relies on ``trainer.callback_metrics`` being the trainer's live dict
    (a property over its logger connector), not a copy."""
    trainer.callback_metrics.update(metrics)


@functools.lru_cache(maxsize=4)
def torch_neighbor_sampler(kernel: Callable) -> type:
    """torch-geometric's ``NeighborSampler`` with its sampling kernel replaced by ``kernel`` (plain torch:
    ``deepsweep.data.sampling.sample_neighbors``), for machines without pyg-lib or torch-sparse (no
    wheels for this torch): the loader, its batches and everything downstream stay PyG's own.

    Public alternative: a ``BaseSampler`` of our own passed to ``NodeLoader``, which would re-implement
    the node/edge attribute slicing, relabelling and seed handling ``NeighborSampler`` does. The private
    name is ``NeighborSampler._sample``, the kernel call behind ``sample_from_nodes``."""
    from torch_geometric.sampler import NeighborSampler, SamplerOutput
    from torch_geometric.sampler.base import SubgraphType

    class TorchNeighborSampler(NeighborSampler):
        """PyG's NeighborSampler with the homogeneous, directional, uniform kernel in plain torch."""

        def __init__(self, data, num_neighbors: list[int], **kwargs) -> None:
            with warnings.catch_warnings():  # the "install pyg-lib" deprecation: this class is the replacement
                warnings.simplefilter("ignore", UserWarning)
                super().__init__(data, num_neighbors, **kwargs)

        def _sample(self, seed, seed_time=None, **kwargs):
            unsupported = {
                "heterogeneous graphs": isinstance(seed, dict),
                "induced subgraphs": self.subgraph_type == SubgraphType.induced,
                "disjoint subgraphs": self.disjoint,
                "sampling with replacement": self.replace,
                "temporal sampling": seed_time is not None or self.node_time is not None or self.edge_time is not None,
                "weighted sampling": self.edge_weight is not None,
            }
            missing = [name for name, needed in unsupported.items() if needed]
            if missing:
                raise NotImplementedError(f"{', '.join(missing)}: the plain-torch neighbour sampler does uniform "
                                          "directional sampling of one node type; install pyg-lib for the rest")
            node, row, col, edge, nodes_per_hop, edges_per_hop = kernel(
                self.colptr, self.row, seed.long(), self.num_neighbors.get_mapped_values())
            if self.sample_direction == "backward":
                row, col = col, row
            return SamplerOutput(node=node, row=row, col=col, edge=edge, batch=None,
                                 num_sampled_nodes=nodes_per_hop, num_sampled_edges=edges_per_hop)

    return TorchNeighborSampler
