"""Autoencoders, VAE and RBM/DBN pretraining: the mechanics their papers define."""

from __future__ import annotations

import pytest
import torch

from deepsweep.data.sources import Digits
from deepsweep.factory import build_model
from deepsweep.stages.pipeline import execute
from deepsweep.nn.generators import ConvGenerator
from deepsweep.tasks.rbm import RBM, DeepBeliefTask
from deepsweep.tasks.reconstruct import ReconstructTask, StackedAutoencoderTask, TiedDecoder
from deepsweep.tasks.variational import VariationalTask, gaussian_kl
from deepsweep.tasks.common import TaskSetup


def test_kl_term_matches_the_closed_form_and_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))


def test_vae_loss_is_reconstruction_plus_beta_kl(compose):
    model = build_model(compose(), (1, 8, 8), 10)
    x = torch.rand(16, 1, 8, 8)
    for beta in (0.0, 1.0, 4.0):
        task = VariationalTask(model, TaskSetup(None), beta=beta)
        task.losses = lambda batch: (torch.tensor(2.0), torch.tensor(3.0))
        assert task.training_step((x, None), 0).item() == pytest.approx(2.0 + beta * 3.0)
    # And the reparametrized sample lets gradients reach the encoder.
    task = VariationalTask(model, TaskSetup(None))
    sum(task.losses(x)).backward()
    assert all(p.grad is not None for p in task.encoder.parameters())


def _digits_x() -> torch.Tensor:
    return torch.from_numpy(Digits().load().train.x).flatten(1)


def test_cd_k_lowers_the_free_energy_of_the_data():
    torch.manual_seed(0)
    x = _digits_x()
    rbm = RBM(64, 32)
    opt = torch.optim.SGD(rbm.parameters(), lr=0.1)
    noise = torch.rand_like(x)
    before = rbm.free_energy(x).mean().item()
    for _ in range(3):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            rbm.contrastive_divergence(x[i : i + 64], k=2)
            opt.step()
    after = rbm.free_energy(x).mean().item()
    assert after < before - 1.0
    assert rbm.free_energy(x).mean() < rbm.free_energy(noise).mean()  # data is more probable than noise


def test_gaussian_visible_units_reconstruct_real_values():
    rbm = RBM(4, 3, visible_type="gaussian")
    h = torch.ones(2, 3)
    assert torch.allclose(rbm.visible_mean(h), h @ rbm.weight + rbm.visible_bias)
    with pytest.raises(ValueError, match="pretrain.task.visible: unknown unit type 'poisson'"):
        RBM(4, 3, visible_type="poisson")


def test_dbn_trains_layer_by_layer_and_hands_weights_to_the_mlp(compose, tmp_path, monkeypatch):
    cfg = compose("pretrain=dbn", "pretrain.epochs=4", "pretrain.task.epochs_per_layer=2", "model.hidden_dims=[32,16]",
                  "optimizer=sgd", "activation=sigmoid", "trainer.max_epochs=1")
    artifacts = tmp_path / "artifacts"
    execute("prepare", cfg, artifacts)

    seen = []
    original = RBM.contrastive_divergence

    def spy(self, v0, k):
        seen.append(v0.shape[1])
        return original(self, v0, k)

    monkeypatch.setattr(RBM, "contrastive_divergence", spy)
    execute("pretrain", cfg, artifacts)
    half = len(seen) // 2
    assert set(seen[:half]) == {64} and set(seen[half:]) == {32}  # layer 1 first, then layer 2 on its output
    encoder = torch.load(artifacts / "pretrain" / "encoder.pt", weights_only=True)["encoder"]
    assert encoder["1.0.weight"].shape == (32, 64) and encoder["2.0.weight"].shape == (16, 32)
    assert encoder["1.0.weight"].abs().mean() > 0.01 * 0.5  # moved away from the small random start


def test_dbn_refuses_non_mlp_families(compose):
    model = build_model(compose("model=lenet"), (1, 8, 8), 10)
    with pytest.raises(ValueError, match="pretrain=dbn works on the dense layer stack of model=mlp"):
        DeepBeliefTask(model, TaskSetup(None))


def test_vae_pipeline_saves_sample_grids(compose, tmp_path):
    cfg = compose("pretrain=vae", "pretrain.epochs=1", "trainer.max_epochs=1")
    for stage in ("prepare", "pretrain", "finetune"):
        execute(stage, cfg, tmp_path / "artifacts")
    for name in ("samples.png", "interpolation.png"):
        assert (tmp_path / "artifacts" / "pretrain" / name).stat().st_size > 0


def test_conv_decoder_reaches_the_image_shape():
    for shape in [(1, 28, 28), (1, 8, 8), (3, 10, 12)]:
        out = ConvGenerator(16, shape, channels=(32, 16))(torch.randn(4, 16))
        assert out.shape == (4, *shape)
        assert 0 <= out.min() and out.max() <= 1  # sigmoid output for [0, 1] pixels
    with pytest.raises(ValueError, match="needs image inputs"):
        ConvGenerator(16, (64,))


def test_conv_autoencoder_decodes_through_transposed_convs(compose):
    model = build_model(compose("model=lenet"), (1, 8, 8), 10)
    task = ReconstructTask(model, TaskSetup(None), decoder="conv", decoder_dims=[32, 16])
    assert isinstance(task.decoder, ConvGenerator)
    x = torch.rand(4, 1, 8, 8)
    assert task(x).shape == x.shape


def test_tied_decoder_owns_only_biases_and_uses_the_encoder_weights(compose):
    model = build_model(compose("model.hidden_dims=[32,16]"), (1, 8, 8), 10)
    task = ReconstructTask(model, TaskSetup(None), tied=True)
    assert isinstance(task.decoder, TiedDecoder)
    assert sorted(n for n, _ in task.decoder.named_parameters()) == ["biases.0", "biases.1"]
    x = torch.rand(8, 1, 8, 8)
    assert task(x).shape == x.shape
    # The reconstruction's gradient reaches the first encoder weight through the decoder as well: it
    # differs from the gradient through the encoder alone.
    first = model.encoder[1][0].weight
    (task(x) - x).pow(2).mean().backward()
    both = first.grad.clone()
    first.grad = None
    code = model.encoder(x)
    (task.decoder(code.detach()) - x).pow(2).mean().backward()
    assert first.grad is not None and not torch.allclose(first.grad, both)
    with pytest.raises(ValueError, match="pretrain.task.tied=true works on the dense layer stack of model=mlp"):
        ReconstructTask(build_model(compose("model=lenet"), (1, 8, 8), 10), TaskSetup(None), tied=True)


def test_sparsity_adds_l1_of_the_code_to_the_loss(compose):
    model = build_model(compose(), (1, 8, 8), 10)
    x = torch.rand(16, 1, 8, 8)
    torch.manual_seed(0)
    plain = ReconstructTask(model, TaskSetup(None)).training_step((x, None), 0)
    torch.manual_seed(0)  # the same decoder
    sparse = ReconstructTask(model, TaskSetup(None), sparsity=0.5)
    expected = plain + 0.5 * model.encoder(x).abs().sum(1).mean()
    assert torch.allclose(sparse.training_step((x, None), 0), expected)


def test_stacked_autoencoder_trains_layer_by_layer_then_end_to_end(compose, tmp_path, monkeypatch):
    cfg = compose("pretrain=stacked_autoencoder", "pretrain.epochs=3", "pretrain.task.epochs_per_layer=1",
                  "model.hidden_dims=[32,16]")
    execute("prepare", cfg, tmp_path / "artifacts")
    snapshots = []
    original = StackedAutoencoderTask.on_train_epoch_end

    def snapshot(self):
        original(self)
        snapshots.append([b[0].weight.detach().clone() for b in self.blocks])

    monkeypatch.setattr(StackedAutoencoderTask, "on_train_epoch_end", snapshot)
    execute("pretrain", cfg, tmp_path / "artifacts")
    initial = [w.clone() for w in snapshots[0]]
    moved = lambda a, b: not torch.equal(a, b)  # noqa: E731
    assert len(snapshots) == 3
    # epoch 0 trained block 0 only (block 1 still at init: compare epoch 1's block 0 with epoch 0's)
    assert moved(snapshots[1][1], initial[1]) and not moved(snapshots[1][0], initial[0])  # epoch 1: block 1 alone
    assert moved(snapshots[2][0], snapshots[1][0]) and moved(snapshots[2][1], snapshots[1][1])  # epoch 2: both
    encoder = torch.load(tmp_path / "artifacts" / "pretrain" / "encoder.pt", weights_only=True)["encoder"]
    assert torch.equal(encoder["1.0.weight"], snapshots[2][0])


def test_anomaly_detection_leaves_the_class_out_of_pretraining_and_scores_it(compose, tmp_path, monkeypatch):
    """Pretraining trains and validates on the 9 other digits only; every test input gets a score, digit
    3 scores higher than the others, and the metrics are that score's ROC-AUC and the others' mean."""
    from sklearn.metrics import roc_auc_score

    from deepsweep.data.loaders import PreparedData
    from deepsweep.stages.pretrain import SCORES_FILE

    cfg = compose("pretrain.anomaly_class=3", "pretrain.epochs=5", "trainer.max_epochs=1")
    seen = {"training_loss": [], "validation_batch": []}

    def spy(name):
        original = getattr(ReconstructTask, name)
        return lambda self, batch: seen[name].append(batch[1]) or original(self, batch)

    for name in seen:
        monkeypatch.setattr(ReconstructTask, name, spy(name))
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        metrics = execute(stage, cfg, tmp_path / "artifacts")
    for labels in seen.values():
        assert 3 not in torch.cat(labels).tolist() and len(torch.cat(labels).unique()) == 9
    scores = torch.load(tmp_path / "artifacts" / "pretrain" / SCORES_FILE, weights_only=True)["scores"]
    is_three = PreparedData.load(tmp_path / "artifacts" / "prepare").test.y == 3
    assert len(scores) == len(is_three) and is_three.any()
    assert scores[is_three].mean() > scores[~is_three].mean()  # digit 3 reconstructs worse than the digits the AE saw
    assert metrics["anomaly_roc_auc"] > 0.6  # measured 0.75
    assert metrics["anomaly_roc_auc"] == pytest.approx(roc_auc_score(is_three, scores), abs=1e-6)
    assert metrics["test_reconstruction_error"] == pytest.approx(scores[~is_three].mean().item())
    assert 0 < metrics["test_reconstruction_error"] < 0.2


def test_anomaly_class_must_be_a_class_and_needs_a_scoring_task(compose, tmp_path):
    from deepsweep.config import ConfigError
    from deepsweep.factory import check_compatible

    # Refused before prepare runs: the data source knows its classes without reading a file.
    with pytest.raises(ConfigError, match=r"pretrain.anomaly_class: 10 is not a class of data=digits \(0..9\)"):
        execute("prepare", compose("pretrain.anomaly_class=10"), tmp_path / "artifacts")
    assert not (tmp_path / "artifacts" / "prepare").exists()
    with pytest.raises(ConfigError, match=r"pretrain.anomaly_class: 8 is not a class of data=ring \(0..7\)"):
        check_compatible(compose("data=ring", "pretrain.anomaly_class=8"))
    with pytest.raises(ConfigError, match=r"pretrain.anomaly_class: pretrain=cyclegan gives no anomaly score"):
        check_compatible(compose("pretrain=cyclegan", "pretrain.anomaly_class=1"))
    with pytest.raises(ConfigError, match=r"data=shapes labels each input with a class per pixel, not a class"):
        check_compatible(compose("data=shapes", "model=unet", "pretrain.anomaly_class=1"))
    check_compatible(compose("data=ring", "pretrain.anomaly_class=7"))
    # The pretrain stage checks the class against the prepared data too (a source that cannot tell before).
    cfg = compose("pretrain.anomaly_class=3")
    execute("prepare", cfg, tmp_path / "artifacts")
    with pytest.raises(ConfigError, match=r"pretrain.anomaly_class: 12 is not a class of data=digits \(0..9\)"):
        from deepsweep.stages import pretrain

        pretrain.run(compose("pretrain.anomaly_class=12"), tmp_path / "out", {"prepare": tmp_path / "artifacts" / "prepare"}, "")


@pytest.mark.parametrize("overrides", [
    ["pretrain=denoising_autoencoder", "trainer.gradient_clip_val=0.1"],  # masking noise: the RNG in step
    ["pretrain=vae", "scheduler=step", "scheduler.step_size=1"],
    ["pretrain=stacked_autoencoder", "pretrain.task.epochs_per_layer=1"],
    ["data=karate", "model=gcn", "pretrain=dgi"],
])
def test_pretraining_with_several_steps_per_call_makes_the_same_updates(compose, tmp_path, overrides):
    encoders = []
    for steps in (1, 4):
        cfg = compose(*overrides, "pretrain.epochs=3", f"trainer.steps_per_call={steps}")
        artifacts = tmp_path / f"steps{steps}"
        execute("prepare", cfg, artifacts)
        execute("pretrain", cfg, artifacts)
        encoders.append(torch.load(artifacts / "pretrain" / "encoder.pt", weights_only=True)["encoder"])
    for name, weight in encoders[0].items():
        assert torch.allclose(weight, encoders[1][name], atol=1e-6), name


def test_gradient_clipping_is_refused_where_pretraining_steps_by_hand(compose, tmp_path):
    from deepsweep.config import ConfigError

    cfg = compose("pretrain=gan", "trainer.gradient_clip_val=1.0")
    execute("prepare", cfg, tmp_path / "a")
    with pytest.raises(ConfigError, match="trainer.gradient_clip_val: pretrain=gan steps its optimizers by hand"):
        execute("pretrain", cfg, tmp_path / "a")
