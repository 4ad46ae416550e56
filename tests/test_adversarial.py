"""GANs: the losses their papers define, WGAN's Lipschitz constraints, conditioning, and the
discriminator as a pretrained feature extractor."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from deepsweep.config import ConfigError
from deepsweep.factory import build_model
from deepsweep.stages.pipeline import execute
from deepsweep.tasks.adversarial import AdversarialTask, gradient_penalty
from deepsweep.tasks.common import TaskSetup


def _task(compose, **kwargs) -> AdversarialTask:
    model = build_model(compose("model.hidden_dims=[32,16]"), (1, 8, 8), 10)
    return AdversarialTask(model, TaskSetup(None), **kwargs)


def test_generator_loss_is_non_saturating_and_label_smoothing_is_one_sided(compose):
    torch.manual_seed(0)
    task = _task(compose, label_smoothing=0.1)
    real, fake = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    s_real, s_fake = task.score(real), task.score(fake)
    # -log D(G(z)), not log(1 - D(G(z))): its gradient is largest where D rejects the sample.
    assert torch.allclose(task.generator_loss(fake, None), -F.logsigmoid(s_fake).mean())
    expected = (F.binary_cross_entropy_with_logits(s_real, torch.full_like(s_real, 0.9))
                + F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake)))
    assert torch.allclose(task.discriminator_loss(real, fake, None), expected)


def test_wgan_gp_critic_loss_adds_lambda_times_the_penalty(compose):
    real, fake = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    task = _task(compose, loss="wasserstein", gradient_penalty=10.0)
    torch.manual_seed(3)
    with_penalty = task.discriminator_loss(real, fake, None)
    torch.manual_seed(3)  # the same interpolation points
    penalty = gradient_penalty(task.score, real, fake)
    expected = task.score(fake).mean() - task.score(real).mean() + 10.0 * penalty
    assert penalty > 0 and torch.allclose(with_penalty, expected)


def test_gradient_penalty_matches_the_closed_form_for_a_linear_critic():
    w = torch.tensor([3.0, 4.0])  # ||grad|| = 5 everywhere
    penalty = gradient_penalty(lambda x: x @ w, torch.randn(6, 2), torch.randn(6, 2))
    assert penalty.item() == pytest.approx((5 - 1) ** 2)


def test_wgan_clipping_keeps_every_critic_weight_in_range_and_n_critic_spaces_generator_steps(compose, tmp_path,
                                                                                             monkeypatch):
    cfg = compose("pretrain=wgan", "pretrain.epochs=1", "pretrain.task.n_critic=3", "model.hidden_dims=[32,16]")
    execute("prepare", cfg, tmp_path / "artifacts")
    calls = []
    original = AdversarialTask.generator_loss
    monkeypatch.setattr(AdversarialTask, "generator_loss",
                        lambda self, fake, y: calls.append(1) or original(self, fake, y))
    captured = {}
    monkeypatch.setattr(AdversarialTask, "on_fit_end", lambda self: captured.setdefault("task", self))
    execute("pretrain", cfg, tmp_path / "artifacts")
    task = captured["task"]
    weights = torch.cat([p.detach().flatten() for p in task.discriminator_parameters()])
    assert weights.abs().max() <= 0.01 + 1e-7
    train_size = len(torch.load(tmp_path / "artifacts" / "prepare" / "train.pt", weights_only=True)["y"])
    batches = -(-train_size // 64)
    assert len(calls) == batches // 3  # one generator step per n_critic critic steps (validation excluded)


def test_conditional_generator_and_projection_discriminator_read_the_label(compose):
    torch.manual_seed(0)
    task = _task(compose, conditional=True).eval()
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    rng = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert not torch.allclose(task.generate(4, y0, rng()), task.generate(4, y1, rng()))
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        task.embed.weight[1] += 1.0
    assert not torch.allclose(task.score(x, y0), task.score(x, y1))


@pytest.mark.parametrize("overrides, message", [
    (["pretrain=wgan", "pretrain.task.clip_value=null"], "loss=wasserstein needs a Lipschitz constraint"),
    (["pretrain.task.clip_value=0.01"], "apply to loss=wasserstein"),
    (["optimizer=lbfgs"], "optimizer=lbfgs: pretrain=gan steps its optimizers by hand"),
    (["pretrain.task.loss=minimax"], "pretrain.task.loss: unknown loss 'minimax'; allowed: vanilla, wasserstein"),
    (["pretrain.task.generator=rnn"], "pretrain.task.generator: unknown kind 'rnn'; allowed: dense, conv"),
    (["pretrain.task.output=tanh"], "pretrain.task.output: unknown output 'tanh'; allowed: sigmoid, linear"),
])
def test_bad_gan_settings_name_the_key_before_training(compose, tmp_path, overrides, message):
    cfg = compose("pretrain=gan", *overrides)
    execute("prepare", cfg, tmp_path / "artifacts")
    with pytest.raises(ConfigError, match=message):
        execute("pretrain", cfg, tmp_path / "artifacts")


def test_pretrain_optimizer_overrides_fields_of_the_chosen_optimizer_only(compose):
    from deepsweep.config import validate
    from deepsweep.factory import stage_optimizer

    cfg = compose("pretrain=gan", "optimizer=adam", "+pretrain.optimizer.betas=[0.5,0.999]")
    merged = stage_optimizer(validate(cfg))
    assert merged.lr == 0.0002 and list(merged.betas) == [0.5, 0.999] and cfg.optimizer.lr == 0.001
    from deepsweep.factory import build_optimizer

    assert build_optimizer(cfg, stage="pretrain").keywords["lr"] == 0.0002  # what the pretrain stage builds
    assert build_optimizer(cfg).keywords["lr"] == 0.001  # fine-tuning keeps the group's
    assert stage_optimizer(compose()).lr == compose().optimizer.lr  # lr: null keeps the group's value
    with pytest.raises(ConfigError, match="pretrain.optimizer.betas: optimizer=sgd has no field 'betas'"):
        validate(compose("pretrain=gan", "optimizer=sgd", "+pretrain.optimizer.betas=[0.5,0.999]"))


def test_dcgan_discriminator_features_pretrain_and_fine_tune(compose, tmp_path):
    cfg = compose("experiment=digits_dcgan", "pretrain.epochs=1", "trainer.max_epochs=1")
    model = build_model(cfg, (1, 28, 28), 10)
    assert model.feature_dim == 64 * 7 * 7  # two stride-2 convs: 28 -> 14 -> 7
    norms = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    assert norms(model) == 1 and norms(build_model(compose("model=dcgan", "model.batch_norm=false"), (1, 8, 8), 10)) == 0
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune"):
        execute(stage, cfg, artifacts)
    for name in ("samples.png", "gan_losses.png", "encoder.pt"):
        assert (artifacts / "pretrain" / name).stat().st_size > 0
    saved = torch.load(artifacts / "pretrain" / "encoder.pt", weights_only=True)["encoder"]
    tuned = torch.load(artifacts / "finetune" / "model.pt", weights_only=True)["state_dict"]
    assert set(saved) <= {k.removeprefix("encoder.") for k in tuned}


def test_mode_coverage_and_class_coverage_on_hand_made_samples():
    from deepsweep.metrics import class_coverage, mode_coverage

    centers = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    # 30 samples on mode 0, 20 on mode 1 (2.9 std off: still high quality), 5 on mode 2 (too few to cover it at
    # 10% of 100), 10 near mode 3 but 3.1 std off and 35 between modes: not high quality.
    samples = torch.cat([centers[0].repeat(30, 1), (centers[1] + torch.tensor([0.058, 0.0])).repeat(20, 1),
                         centers[2].repeat(5, 1), (centers[3] + torch.tensor([0.0, 0.062])).repeat(10, 1),
                         torch.tensor([[1.0, 1.0]]).repeat(35, 1)])
    assert mode_coverage(samples, centers, std=0.02, min_share=0.1) == {"modes_covered": 2.0, "high_quality": 0.55}
    assert mode_coverage(samples, centers, std=0.02, min_share=0.05)["modes_covered"] == 3.0
    # Labels 0 x 50, 1 x 50 of 4 classes: two covered; KL from uniform = sum 0.5 log(0.5 * 4) = log 2.
    coverage = class_coverage(torch.tensor([0] * 50 + [1] * 50), 4)
    assert coverage["classes_covered"] == 2.0 and coverage["class_kl"] == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert class_coverage(torch.arange(4).repeat(25), 4)["class_kl"] == pytest.approx(0.0)


def test_ring_data_is_drawn_from_its_seed_and_its_modes_go_to_meta():
    from deepsweep.data.points import GaussianRing

    splits, meta = GaussianRing(num_train=800).load()
    again, _ = GaussianRing(num_train=800).load()
    assert torch.equal(torch.from_numpy(splits.train.x), torch.from_numpy(again.train.x))
    centers = torch.tensor(meta["modes"])
    assert centers.shape == (8, 2) and torch.allclose(centers.norm(dim=1), torch.full((8,), 2.0))
    x, y = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)
    # every point lies near its label's centre: the farthest of 800 two-dimensional draws within 5 std of 0.02
    assert (x - centers[y]).norm(dim=1).max() < 5 * 0.02 and set(y.tolist()) == set(range(8))


def test_gan_on_the_ring_logs_mode_coverage_each_epoch_and_evaluate_labels_its_samples(compose, tmp_path):
    import json

    import mlflow

    from deepsweep.stages.pretrain import GENERATED_FILE
    from deepsweep.tracking.runs import tracking_uri

    cfg = compose("experiment=ring_gan", "pretrain.epochs=3", "data.num_train=1000", "trainer.max_epochs=1")
    artifacts = tmp_path / "artifacts"
    summary = {stage: execute(stage, cfg, artifacts) for stage in ("prepare", "pretrain", "finetune", "evaluate")}
    assert json.loads((artifacts / "prepare" / "meta.json").read_text())["mode_std"] == 0.02
    samples = torch.load(artifacts / "pretrain" / GENERATED_FILE, weights_only=True)["samples"]
    assert samples.shape == (1000, 2)
    assert (artifacts / "pretrain" / "samples_over_training.png").stat().st_size > 10_000
    mlflow.set_tracking_uri(tracking_uri(cfg))
    client = mlflow.MlflowClient()
    pretrain = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string="tags.`deepsweep.stage` = 'pretrain'")[0]
    covered = client.get_metric_history(pretrain.info.run_id, "samples/modes_covered")
    assert sorted(m.step for m in covered) == [0, 1, 2] and all(0 <= m.value <= 8 for m in covered)
    # the stage's summary holds the last epoch's value
    assert summary["pretrain"]["samples_modes_covered"] == max(covered, key=lambda m: m.step).value
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    # the fine-tuned classifier's labels of exactly those samples
    from deepsweep.metrics import class_coverage

    model = build_model(cfg, (2,), 8)
    model.load_state_dict(torch.load(artifacts / "finetune" / "model.pt", weights_only=True)["state_dict"])
    with torch.no_grad():
        expected = class_coverage(model.eval()(samples).argmax(dim=1), 8)
    assert metrics["generated_classes_covered"] == expected["classes_covered"]
    assert metrics["generated_class_kl"] == pytest.approx(expected["class_kl"])


# --- InfoGAN ---------------------------------------------------------------------------------------------------

def test_matched_accuracy_takes_the_best_one_to_one_matching():
    from deepsweep.metrics import matched_accuracy

    # Category 0 is class 1 twice, category 1 is class 0 twice, category 2 (class 0 once) is left unmatched.
    categories, target = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([1, 1, 0, 0, 0])
    assert matched_accuracy(categories, target, 3, 2) == pytest.approx(4 / 5)
    assert matched_accuracy(torch.tensor([2, 0, 1]), torch.tensor([0, 1, 2]), 3, 3) == 1.0


def test_infogan_information_term_by_hand(compose):
    torch.manual_seed(0)
    task = _task(compose, categorical_code=4, continuous_codes=2, info_weight=1.0, continuous_weight=0.1)
    category, continuous = torch.tensor([0, 3, 1]), torch.tensor([[0.5, -0.5], [0.0, 1.0], [-1.0, 0.2]])
    fake = task.generate(3, codes=(category, continuous))
    inferred = task.q_head(task.encoder(fake))
    expected = (F.cross_entropy(inferred[:, :4], category)
                + 0.1 * 0.5 * (inferred[:, 4:] - continuous).pow(2).sum(1).mean())
    assert torch.allclose(task.info_loss(fake, category, continuous), expected)
    # The codes enter the generator: another category, another input from the same z.
    rng = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    task.eval()
    other = (torch.tensor([1, 3, 1]), continuous)
    assert not torch.allclose(task.generate(3, generator=rng(), codes=(category, continuous)),
                              task.generate(3, generator=rng(), codes=other))
    assert task.infers_categories and not _task(compose).infers_categories


def test_infogan_codes_become_inferable_when_generator_and_q_share_the_information_term(compose):
    """The mutual-information game alone (generator and Q both minimizing info_loss): Q learns to tell the
    category a generated input was made from, far above chance (1/4)."""
    torch.manual_seed(0)
    task = _task(compose, categorical_code=4, continuous_codes=1)
    optimizer = torch.optim.Adam([*task.generator.parameters(), *task.q_head.parameters(),
                                  *task.encoder.parameters()], lr=0.01)
    for _ in range(60):
        codes = task.draw_codes(64)
        loss = task.info_loss(task.generate(64, codes=codes), *codes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    task.eval()
    codes = task.draw_codes(256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        inferred = task.categories_of(task.generate(256, codes=codes))
    assert (inferred == codes[0]).float().mean() > 0.9


def test_infogan_and_conditional_exclude_each_other(compose):
    with pytest.raises(ValueError, match="a conditional GAN reads the labels, InfoGAN infers its codes"):
        _task(compose, conditional=True, categorical_code=10)
