"""CycleGAN: the unpaired domains, the translators' shapes, its losses by hand, what evaluate makes of the
translated test images, and the four stages end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import FAST
from deepsweep.config import ConfigError, validate
from deepsweep.factory import build_model, build_task
from deepsweep.nn.generators import ImageTranslator
from deepsweep.tasks.cycle import to_domain_b


def _task(compose, *overrides):
    cfg = compose("model=lenet", "pretrain=cyclegan", "pretrain.task.translator_channels=[4,8]", *overrides)
    model = build_model(cfg, (1, 8, 8), 10)
    return build_task(cfg, cfg.pretrain.task, model, "pretrain")


def test_domain_b_is_a_fixed_transform_of_other_images(compose):
    x = torch.rand(6, 1, 8, 8)
    assert torch.equal(to_domain_b(x, "invert"), 1 - x)
    assert torch.equal(to_domain_b(x, "rotate")[:, :, 0, :], x[:, :, :, -1])  # a quarter turn, anticlockwise
    task = _task(compose)
    a, b = task.unpaired(x)
    assert torch.equal(a, x) and torch.equal(b, 1 - x.roll(3, dims=0))
    assert all(not torch.equal(b[i], 1 - x[i]) for i in range(6))  # no image meets its own counterpart


@pytest.mark.parametrize("size", [8, 28, 25])
def test_translators_keep_the_image_shape(size):
    translator = ImageTranslator((1, size, size), (8, 16, 32), residual_blocks=1)
    with torch.no_grad():
        out = translator(torch.rand(3, 1, size, size))
    assert out.shape == (3, 1, size, size) and 0 <= float(out.min()) and float(out.max()) <= 1


@torch.no_grad()
def test_cyclegan_losses_by_hand(compose):
    task = _task(compose)
    # Translators that undo each other exactly: the cycle loss is 0; inverting is not the identity.
    task.to_b, task.to_a = nn.Identity(), nn.Identity()
    a = torch.rand(4, 1, 8, 8)
    a, b = task.unpaired(a)
    total, parts = task.translator_loss(a, b)
    assert float(parts["cycle"]) == 0.0 and float(parts["identity"]) == 0.0
    ones = torch.ones(4)
    adversarial = ((task.score_b(a) - ones) ** 2).mean() + ((task.score_a(b) - ones) ** 2).mean()
    assert float(total) == pytest.approx(float(adversarial)) and float(parts["adversarial"]) == pytest.approx(float(adversarial))
    # An inverting pair: each round trip is exact, each identity term is |1 - 2x| on average, twice.
    class Invert(nn.Module):
        def forward(self, x):
            return 1 - x

    task.to_b, task.to_a = Invert(), Invert()
    total, parts = task.translator_loss(a, b)
    identity = (1 - 2 * b).abs().mean() + (1 - 2 * a).abs().mean()
    assert float(parts["cycle"]) == 0.0 and float(parts["identity"]) == pytest.approx(float(identity))
    assert float(total) == pytest.approx(float(parts["adversarial"] + 5.0 * identity))
    d = task.discriminator_loss(a, b, parts["fake_a"], parts["fake_b"])
    expected = 0.5 * (((task.score_a(a) - 1) ** 2).mean() + (task.score_a(parts["fake_a"]) ** 2).mean()
                      + ((task.score_b(b) - 1) ** 2).mean() + (task.score_b(parts["fake_b"]) ** 2).mean())
    assert float(d) == pytest.approx(float(expected))
    # The discriminator of domain B is a copy of the family's encoder with weights of its own.
    assert type(task.encoder_b) is type(task.encoder)
    assert not torch.equal(next(task.encoder_b.parameters()), next(task.encoder.parameters()))


def test_translation_metrics_label_the_saved_images(tmp_path):
    from deepsweep.stages.evaluate import translation_metrics
    from deepsweep.stages.pretrain import TRANSLATED_FILE

    class Brightness(nn.Module):  # class 1 for bright images, 0 for dark ones
        def forward(self, x):
            mean = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([0.5 - mean, mean - 0.5], dim=1)

    target = torch.tensor([1, 1, 0, 0, 1])
    translated = torch.tensor([0.9, 0.1, 0.1, 0.2]).view(4, 1, 1, 1).expand(4, 1, 2, 2)  # 3 of 4 right
    torch.save({"untranslated": (1 - translated).half(), "translated": translated.half(),
                "cycle_error": torch.tensor(0.25)}, tmp_path / TRANSLATED_FILE)
    metrics = translation_metrics(Brightness(), tmp_path, target)
    assert metrics == pytest.approx({"cycle_error": 0.25, "translated_accuracy": 0.75, "untranslated_accuracy": 0.25})
    assert translation_metrics(Brightness(), tmp_path / "absent", target) == {}


def test_cyclegan_refuses_what_it_cannot_translate(compose):
    with pytest.raises(ConfigError, match="pretrain.task.domain: 'mirror' is not allowed; allowed: one of invert, rotate"):
        validate(compose("model=lenet", "pretrain=cyclegan", "pretrain.task.domain=mirror"))
    cfg = compose("data=ecg200", "model=gru", "pretrain=cyclegan")
    with pytest.raises(ConfigError, match="pretrain=cyclegan does not apply to sequence data"):
        from deepsweep.factory import check_compatible

        check_compatible(cfg)


def test_stages_translate_domains_and_label_the_round_trip(compose, tmp_path):
    from deepsweep.stages.pipeline import execute

    cfg = compose("model=lenet", "pretrain=cyclegan", "pretrain.task.translator_channels=[4,8]", *FAST)
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, artifacts)
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    assert {"cycle_error", "translated_accuracy", "untranslated_accuracy"} <= set(metrics)
    assert 0 < metrics["cycle_error"] < 1 and 0 <= metrics["translated_accuracy"] <= 1
    saved = torch.load(artifacts / "pretrain" / "translated.pt", weights_only=True)
    assert saved["translated"].shape == saved["untranslated"].shape == (360, 1, 8, 8)  # every digits test image
    assert {"translations.png", "gan_losses.png"} <= {p.name for p in (artifacts / "pretrain").iterdir()}
