"""Which modules act differently in training and in evaluation mode, told through public torch attributes.

Monte Carlo dropout samples a trained model with its dropout on and its batch norm off; the fused launcher
refuses models whose modes it cannot stack per member, and its template drops units with masks handed in
(``FedDropout``). Both ask here instead of naming torch's private base
classes (``nn.modules.batchnorm._NormBase``, ``nn.modules.dropout._DropoutNd``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from deepsweep.nn.regularizers import DropConnectLinear, GaussianDropout

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
                 GaussianDropout, DropConnectLinear)


def drops(module: nn.Module) -> bool:
    """A dropout layer (units, channels or weights) that drops something in training."""
    return isinstance(module, DROPOUT_TYPES) and float(module.p) > 0


def keeps_running_stats(module: nn.Module) -> bool:
    """A normalization layer with running statistics (batch norm, instance norm with
    track_running_stats): training mode would use and update the batch's statistics instead."""
    return getattr(module, "running_mean", None) is not None


def sampling_mode(model: nn.Module) -> nn.Module:
    """``model`` with every module in training mode but those keeping running statistics: its dropout
    (layers, and what convs, attention and recurrent layers drop inside) samples, batch norm does not."""
    model.train()
    for module in model.modules():
        if keeps_running_stats(module):
            module.eval()
    return model


class FedDropout(nn.Module):
    """A dropout layer whose masks are handed in (a fused array's template: each member's masks are drawn
    from its own random stream, ``training.fused.MemberStreams``). ``feed.calls``, when a list, records each
    call's site and input shape instead; ``feed.queue``, when a list, holds the masks of this training pass in
    call order (a call past its end is an error: a member would train without dropout unnoticed); when None
    (validation), the layer passes its input through."""

    def __init__(self, site: str, feed: Any) -> None:
        super().__init__()
        self.site, self.feed = site, feed

    def forward(self, x):
        if self.feed.calls is not None:
            self.feed.calls.append((self.site, tuple(x.shape)))
            return x
        if self.feed.queue is None:
            return x
        if not self.feed.queue:
            raise RuntimeError(f"fused array: dropout at {self.site} was called more often than its masks were drawn")
        return x * self.feed.queue.pop(0)
