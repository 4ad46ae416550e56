"""Segmentation: the U-Net family, the shapes and MNIST masks, the per-pixel task, Dice and IoU by hand, and the
four stages end to end with a pretrained contracting path."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from conftest import FAST
from deepsweep.config import ConfigError, validate
from deepsweep.data.segmentation import MnistSegmentation, SyntheticShapes
from deepsweep.factory import build_model, check_compatible
from deepsweep.metrics import segmentation_metrics
from deepsweep.nn.losses import DiceLoss


def test_iou_and_dice_of_known_masks():
    # 2 x 4 pixels; (true, predicted): (0,0) (0,0) (0,1) (1,1) (1,1) (1,0) (2,2) (2,1). Per class 0, 1, 2:
    # TP 2, 2, 1; FP 1, 2, 0; FN 1, 1, 1. Class 3 is neither present nor predicted: left out of the means.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 2, 2]])
    predicted = torch.tensor([[0, 0, 1, 1], [1, 0, 2, 1]])
    scores = segmentation_metrics(predicted, target, 4)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 8)
    tp, fp, fn = [2, 2, 1], [1, 2, 0], [1, 1, 1]
    iou = [t / (t + p + n) for t, p, n in zip(tp, fp, fn)]
    dice = [2 * t / (2 * t + p + n) for t, p, n in zip(tp, fp, fn)]
    assert scores["mean_iou"] == pytest.approx(sum(iou) / 3)
    assert scores["dice"] == pytest.approx(sum(dice) / 3)
    assert [scores[f"iou/{c}"] for c in range(4)] == pytest.approx([*iou, 0.0])


def test_dice_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([0, 1, 1])
    p = logits.softmax(dim=1)
    g = torch.nn.functional.one_hot(target, 2).float()
    dice = [(2 * (p[:, c] * g[:, c]).sum() + 1) / (p[:, c].sum() + g[:, c].sum() + 1) for c in range(2)]
    assert DiceLoss(smooth=1.0)(logits, target) == pytest.approx(float(1 - sum(dice) / 2))
    assert float(DiceLoss(smooth=0.0)(torch.tensor([[50.0, 0.0], [0.0, 50.0]]), torch.tensor([0, 1]))) < 1e-6


@pytest.mark.parametrize("size", [28, 25])
def test_unet_scores_every_pixel_and_its_encoder_gives_the_bottleneck(compose, size):
    cfg = compose("model=unet", "data=shapes", "pretrain=none")
    net = build_model(cfg, (1, size, size), 4)
    x = torch.rand(2, 1, size, size)
    assert net(x).shape == (2, 4, size, size)  # odd sizes come back whole through the skips
    assert net.encoder(x).shape == (2, net.feature_dim)

def test_unet_scores_are_local(compose):
    # Two levels: a pixel's score reads a neighbourhood of about 20 pixels across, through the skip at full
    # size and the pooled level. A change to one pixel changes the scores near it, not in a far corner.
    net = build_model(compose("model=unet", "data=shapes", "model.channels=[4,8]", "pretrain=none"), (1, 41, 41), 4)
    x = torch.rand(1, 1, 41, 41)
    y = x.clone()
    y[0, 0, 20, 20] += 1.0
    changed = (net(y) - net(x)).abs().sum(dim=1)[0] > 1e-6
    assert changed[20, 20] and changed[20, 22] and not changed[0, 0] and not changed[40, 40]


def test_shapes_are_deterministic_and_a_class_is_a_shape_not_a_brightness():
    splits = SyntheticShapes(size=24, num_samples=60, split_seed=3).load()
    again = SyntheticShapes(size=24, num_samples=60, split_seed=3).load()
    assert np.array_equal(splits.train.x, again.train.x) and np.array_equal(splits.test.y, again.test.y)
    assert splits.train.y.shape[1:] == (24, 24) and set(np.unique(splits.train.y)) == {0, 1, 2, 3}
    assert splits.class_names == ["background", "circle", "square", "triangle"]
    assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (42, 6, 12)
    # Each class's pixels span bright and dim shapes: no threshold separates them.
    x, y = splits.train.x[:, 0], splits.train.y
    for shape in (1, 2, 3):
        means = [x[i][y[i] == shape].mean() for i in range(len(y)) if (y[i] == shape).sum() > 10]
        assert max(means) - min(means) > 0.25


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_mnist_masks_are_the_digit_pixels_labelled_with_the_digit(tmp_path):
    rng = np.random.default_rng(0)
    images = (rng.random((20, 28, 28)) > 0.8) * 255
    labels = np.arange(20) % 10
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[:n])
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[:n])
    splits = MnistSegmentation(root=str(tmp_path), labels="digit", background="stripes", val_fraction=0.25).load()
    assert len(splits.class_names) == 11 and len(splits.val.y) == 5 and len(splits.test.y) == 10
    ink = images[5:20] > 127
    assert np.array_equal(splits.train.y, ink * (labels[5:20, None, None] + 1))
    # The digit stays on top of the background: its pixels are white, the others below 0.6.
    assert (splits.train.x[:, 0][ink] == 1.0).all() and (splits.train.x[:, 0][~ink] <= 0.6).all()
    binary = MnistSegmentation(root=str(tmp_path), val_fraction=0.25).load()
    assert binary.class_names == ["background", "digit"] and np.array_equal(binary.train.y, ink.astype(np.int64))


def test_models_and_data_must_agree_on_what_is_labelled(compose):
    with pytest.raises(ConfigError, match=r"model=mlp does not read tensor data labelled with a class per pixel "
                                          r"\(data=shapes\); models for it: unet"):
        check_compatible(compose("data=shapes", "pretrain=none"))
    with pytest.raises(ConfigError, match=r"model=unet does not read tensor data labelled with a class per input "
                                          r"\(data=digits\); models for it: .*lenet.*mlp"):
        check_compatible(compose("model=unet"))
    with pytest.raises(ConfigError, match="data.threshold: 1.5 is out of range"):
        validate(compose("data=mnist_segmentation", "model=unet", "data.threshold=1.5"))


def test_stages_segment_with_a_pretrained_contracting_path(compose, tmp_path):
    from deepsweep.stages.pipeline import execute

    cfg = compose("data=shapes", "model=unet", "data.num_samples=120", "data.size=16", "model.channels=[4,8]",
                  "loss=dice", *FAST, "logger.figures=true")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, artifacts)
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    assert {"pixel_accuracy", "mean_iou", "dice", "iou/background", "iou/triangle", "test_reconstruction_error"} <= set(metrics)
    assert 0 < metrics["mean_iou"] <= metrics["dice"] <= 1
    assert (artifacts / "evaluate" / "segmentation.png").stat().st_size > 0
    assert json.loads((artifacts / "prepare" / "meta.json").read_text())["target"] == "mask"
    curves = (artifacts / "finetune" / "curves.csv").read_text().splitlines()
    assert "val_miou" in curves[0].split(",")


def test_augmenting_images_without_their_masks_is_refused():
    from omegaconf import OmegaConf

    from deepsweep.data.augment import augmentation

    data = OmegaConf.create({"name": "mnist_segmentation", "_target_": "deepsweep.data.segmentation.MnistSegmentation",
                             "augment": {"shift": 2, "rotate": 0.0, "hflip": False, "cutout": 0}})
    with pytest.raises(ConfigError, match="data.augment: data=mnist_segmentation labels each input with a mask"):
        augmentation(data)
