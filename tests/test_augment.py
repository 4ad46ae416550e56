"""Image augmentation of training batches: each transform by hand, seeded, and kept out of validation."""

from __future__ import annotations

import pytest
import torch

from deepsweep.data.augment import Augment, augmentation
from deepsweep.data.loaders import InMemoryLoader, TensorSplit


def _images(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 6, 7, generator=torch.Generator().manual_seed(0))


def _shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """x moved right by dx and down by dy pixels, zeros coming in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_shift_moves_each_image_by_whole_pixels_with_zeros_coming_in():
    x = _images()
    out = Augment(shift=2)(x, torch.Generator().manual_seed(1))
    moves = []
    for image, result in zip(x, out):
        match = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                 if torch.allclose(result, _shifted(image, dx, dy), atol=1e-6)]
        assert len(match) == 1
        moves.append(match[0])
    assert len(set(moves)) > 3  # each image draws its own shift


def test_flip_mirrors_about_half_and_rotation_keeps_the_centre():
    x = _images(200)
    out = Augment(hflip=True)(x, torch.Generator().manual_seed(2))
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-6) for o, i in zip(out, x)]
    assert all(m or torch.allclose(o, i, atol=1e-6) for m, o, i in zip(mirrored, out, x))
    assert 70 < sum(mirrored) < 130
    # A rotation turns about the centre: a centred blob keeps its mass and stays centred.
    blob = torch.zeros(1, 1, 9, 9)
    blob[..., 3:6, 3:6] = 1.0
    turned = Augment(rotate=45)(blob.repeat(8, 1, 1, 1), torch.Generator().manual_seed(3))
    assert torch.allclose(turned.sum((1, 2, 3)), torch.full((8,), 9.0), rtol=0.15)
    assert torch.allclose(turned[..., 4, 4], torch.ones(8))


def test_cutout_zeroes_one_square_of_its_side():
    x = torch.ones(64, 1, 10, 10)
    out = Augment(cutout=4)(x, torch.Generator().manual_seed(4))
    zeros = (out == 0).sum((1, 2, 3))
    assert zeros.max() == 16 and zeros.min() > 0  # whole squares inside, cut ones at the border
    for image in out[zeros == 16]:
        rows, cols = (image[0] == 0).nonzero().unbind(1)
        assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3


def test_the_loader_augments_seeded_and_keeps_its_shuffle_order():
    split = TensorSplit(_images(40), torch.arange(40))
    plain = [y for _, y in InMemoryLoader(split, 8, shuffle=True, seed=5)]
    runs = [[(x, y) for x, y in InMemoryLoader(split, 8, shuffle=True, seed=5, augment=Augment(shift=1, cutout=2))]
            for _ in range(2)]
    assert torch.equal(torch.cat([y for _, y in runs[0]]), torch.cat(plain))  # the same order as without
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*runs))  # the same seed, the same images
    assert not all(torch.equal(x, split.x[y]) for x, y in runs[0])


def test_only_training_loaders_augment(compose, tmp_path):
    from deepsweep.stages import finetune
    from deepsweep.stages.pipeline import execute

    cfg = compose("pretrain=none", "data.augment.shift=1", "data.augment.cutout=3")
    assert augmentation(cfg.data) == Augment(shift=1, cutout=3)
    assert augmentation(compose("pretrain=none").data) is None  # all off by default
    execute("prepare", cfg, tmp_path / "a")
    from deepsweep.data.loaders import PreparedData

    data = PreparedData.load(tmp_path / "a" / "prepare")
    _, train, val = finetune.build(cfg, data, {"pretrain": tmp_path / "a" / "pretrain"})
    assert train.augment == Augment(shift=1, cutout=3) and val.augment is None
    x, y = next(iter(val))
    assert torch.equal(x, data.val.x[: len(x)])


def test_bad_augmentation_values_are_named(compose):
    from deepsweep.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"data\.augment\.rotate"):
        validate(compose("data.augment.rotate=400"))
    with pytest.raises(ConfigError, match=r"data\.augment\.shift"):
        validate(compose("data.augment.shift=-1"))
