"""The activation group: maxout's pieces, and the families that widen their layers for it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepsweep.config import ConfigError, validate
from deepsweep.constraints import MAXOUT_FAMILIES
from deepsweep.factory import build_model
from deepsweep.nn.layers import Maxout


def test_maxout_takes_the_largest_piece_of_each_unit():
    # Two units of three pieces each, for one input; then a feature map of 2 units x 2 pieces.
    x = torch.tensor([[1.0, -2.0, 0.5, -1.0, -3.0, -0.5]])
    assert Maxout(3)(x).tolist() == [[1.0, -0.5]]
    maps = torch.arange(16.0).view(1, 4, 2, 2) * torch.tensor([1.0, -1.0, -1.0, 1.0]).view(1, 4, 1, 1)
    assert torch.equal(Maxout(2)(maps), torch.stack([maps[:, 0], maps[:, 3]], dim=1))


@pytest.mark.parametrize("model", MAXOUT_FAMILIES)
def test_maxout_families_widen_every_layer_before_it(compose, model):
    cfg = compose(f"model={model}", "activation=maxout", "activation.pieces=3", "pretrain=none")
    validate(cfg)
    net = build_model(cfg, (1, 28, 28), 10)
    plain = build_model(compose(f"model={model}", "pretrain=none"), (1, 28, 28), 10)
    assert sum(isinstance(m, Maxout) for m in net.modules()) > 0
    widths = [m.out_features if isinstance(m, nn.Linear) else m.out_channels
              for m in net.encoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    plain_widths = [m.out_features if isinstance(m, nn.Linear) else m.out_channels
                    for m in plain.encoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert widths == [3 * w for w in plain_widths]
    assert net(torch.rand(2, 1, 28, 28)).shape == plain(torch.rand(2, 1, 28, 28)).shape
    assert net.encoder(torch.rand(2, 1, 28, 28)).shape == plain.encoder(torch.rand(2, 1, 28, 28)).shape


def test_maxout_is_refused_by_name_where_no_layer_widens_for_it(compose):
    from deepsweep.factory import check_compatible

    with pytest.raises(ConfigError, match=r"activation\.pieces: .*mlp, lenet, vgg, inception"):
        validate(compose("model=resnet", "activation=maxout", "pretrain=none"))
    # The default autoencoder's decoder has dense layers of its own: refused before the first stage.
    with pytest.raises(ConfigError, match="activation=maxout: pretrain=autoencoder builds layers of its own"):
        check_compatible(compose("activation=maxout"))
    with pytest.raises(ValueError, match="maxout works with mlp, lenet, vgg, inception"):
        build_model(compose("model=resnet", "activation=maxout"), (1, 8, 8), 10)
