"""VAE and RBM/DBN pretraining: the mechanics their papers define."""

from __future__ import annotations

import pytest
import torch

from deepsweep.data.sources import Digits
from deepsweep.factory import create_model
from deepsweep.stages.pipeline import execute
from deepsweep.tasks.rbm import RBM, DeepBeliefTask
from deepsweep.tasks.variational import VariationalTask, gaussian_kl


def test_kl_term_matches_the_closed_form_and_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))


def test_vae_loss_is_reconstruction_plus_beta_kl(compose):
    model = create_model(compose(), (1, 8, 8), 10)
    x = torch.rand(16, 1, 8, 8)
    for beta in (0.0, 1.0, 4.0):
        task = VariationalTask(model, optimizer=None, beta=beta)
        task.losses = lambda batch: (torch.tensor(2.0), torch.tensor(3.0))
        assert task.training_step((x, None), 0).item() == pytest.approx(2.0 + beta * 3.0)
    # And the reparametrized sample lets gradients reach the encoder.
    task = VariationalTask(model, optimizer=None)
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


def test_dbn_trains_layer_by_layer_and_hands_weights_to_the_mlp(compose, tmp_path):
    cfg = compose("pretrain=dbn", "pretrain.epochs=4", "pretrain.task.epochs_per_layer=2", "model.hidden_dims=[32,16]",
                  "optimizer=sgd", "activation=sigmoid", "trainer.max_epochs=1")
    artifacts = tmp_path / "artifacts"
    execute("prepare", cfg, artifacts)

    seen = []
    original = RBM.contrastive_divergence

    def spy(self, v0, k):
        seen.append(v0.shape[1])
        return original(self, v0, k)

    RBM.contrastive_divergence = spy
    try:
        execute("pretrain", cfg, artifacts)
    finally:
        RBM.contrastive_divergence = original
    half = len(seen) // 2
    assert set(seen[:half]) == {64} and set(seen[half:]) == {32}  # layer 1 first, then layer 2 on its output
    encoder = torch.load(artifacts / "pretrain" / "encoder.pt", weights_only=True)["encoder"]
    assert encoder["1.0.weight"].shape == (32, 64) and encoder["2.0.weight"].shape == (16, 32)
    assert encoder["1.0.weight"].abs().mean() > 0.01 * 0.5  # moved away from the small random start


def test_dbn_refuses_non_mlp_families(compose):
    model = create_model(compose("model=lenet"), (1, 8, 8), 10)
    with pytest.raises(ValueError, match="pretrain=dbn initializes the hidden layers of model=mlp"):
        DeepBeliefTask(model, optimizer=None)


def test_vae_pipeline_saves_sample_grids(compose, tmp_path):
    cfg = compose("pretrain=vae", "pretrain.epochs=1", "trainer.max_epochs=1")
    for stage in ("prepare", "pretrain", "finetune"):
        execute(stage, cfg, tmp_path / "artifacts")
    for name in ("samples.png", "interpolation.png"):
        assert (tmp_path / "artifacts" / "pretrain" / name).stat().st_size > 0
