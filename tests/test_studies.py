"""Studies: each runs its small budget end to end (a real sweep, its MLflow runs read back) into a page."""

from __future__ import annotations

import re

import pytest

from conftest import deepsweep_cli
from deepsweep.studies import NAMES

pytestmark = pytest.mark.slow


def test_study_list_names_each_claim():
    result = deepsweep_cli("study", "--list")
    assert result.returncode == 0, result.stderr
    # Every module of deepsweep/studies is a study: adding one is that module alone.
    names = ["activations", "anomaly", "batch_norm", "gan_stability", "gnn_depth", "initialization", "labels_needed",
             "optimizers", "pretraining", "regularization", "vanishing_gradients"]
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == names
    assert deepsweep_cli("study", "adam_vs_sgd").stderr.strip() == (
        f"deepsweep: error: study: unknown study 'adam_vs_sgd'; allowed: {', '.join(names)}")


@pytest.mark.parametrize("name,figure", [("regularization", "regularization_curves.png")])
def test_small_budget_writes_the_page(tmp_path, isolated_tracking, name, figure):
    """End to end for one study (a sweep costs ~30 s here); the optimizers' analysis is checked below on
    rows worked by hand, and `deepsweep study optimizers --budget small` runs the same way."""
    result = deepsweep_cli("study", name, "--budget", "small", "--out", str(tmp_path),
                           env={"MLFLOW_TRACKING_URI": f"sqlite:///{isolated_tracking}"})
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / f"{name}.md").read_text()
    assert page.startswith("# Study: ") and "**Claim**" in page and "**Held:** " in page
    assert f"![{figure[:-4]}]({figure})" in page and (tmp_path / figure).stat().st_size > 10_000
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) == 2 and all("+/-" in row for row in rows), page
    # --reuse rebuilds the page from the same sweep's runs: nothing runs, the same table comes back.
    again = deepsweep_cli("study", name, "--budget", "small", "--out", str(tmp_path), "--reuse",
                          env={"MLFLOW_TRACKING_URI": f"sqlite:///{isolated_tracking}"})
    assert again.returncode == 0 and "sweep progress" not in again.stderr, again.stderr[-2000:]
    assert [line for line in (tmp_path / f"{name}.md").read_text().splitlines() if line.startswith("| `")] == rows


def _skip_without_its_data(sweeps: list[list[str]]) -> None:
    """Skip, naming the folder, where a study's data set comes from ../shared/data and that is not beside the
    project (as requires_shared does for the other tests): its jobs would fail on the download, not on the study."""
    from conftest import SHARED_DATA
    from deepsweep.cli.main import _sweep_points
    from deepsweep.config import compose
    from deepsweep.data.downloads import CATALOG

    for overrides in sweeps:
        name = str(compose(_sweep_points(overrides)[0]).data.name)
        if name in CATALOG:
            folder = CATALOG[name].folder.split("/")[0]
            if not (SHARED_DATA / folder).is_dir():
                pytest.skip(f"needs ../shared/data/{folder}")


# Every study but regularization (its own test above also checks --reuse): a new study module is tested with no edit here.
@pytest.mark.parametrize("name", [n for n in NAMES if n != "regularization"])
def test_each_study_runs_its_small_budget_into_a_page_with_a_verdict(tmp_path, isolated_tracking, name, monkeypatch):
    """Every study's whole path on its small budget (regularization's above): its sweeps run, its runs are read
    back, its table has a row per compared setting and its verdict is computed (the worked-by-hand tests below
    check each verdict rule)."""
    from deepsweep import studies

    _skip_without_its_data(studies.load(name).parts("small"))
    # The sweeps in this test's folder, not the project's outputs/sweeps (where a user's own small run goes).
    monkeypatch.setattr(studies, "sweep_dir", lambda study, budget, part=0: tmp_path / "sweeps" / f"{study}_{part}")
    # In this process (`deepsweep study` itself is run by the regularization test above): the sweeps are
    # still their own `deepsweep run -m` processes, but each study saves one interpreter start (~5 s).
    page = studies.run(name, "small", out=tmp_path).read_text()
    held = page.split("**Held:** ", 1)[1].split(".", 1)[0]
    assert held in ("yes", "no", "in part"), page
    figures = re.findall(r"^!\[[^]]*\]\(([^)]+\.png)\)$", page, re.M)
    assert figures and all((tmp_path / figure).stat().st_size > 5_000 for figure in figures), page
    table = [line for line in page.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) >= 2 and all(line.count("|") == table[0].count("|") for line in table), page
    sweeps = studies.load(name).parts("small")
    assert all(f"`deepsweep run -m {' '.join(part)}`" in page for part in sweeps)


def test_a_difference_counts_only_beyond_the_spread_over_seeds(monkeypatch, tmp_path):
    """The verdict rule on numbers worked by hand: rmsprop below SGD by more than either spread, momentum not."""
    from deepsweep import studies
    from deepsweep.studies import optimizers

    assert studies.clearly_below([0.10, 0.12], [0.20, 0.22])
    assert not studies.clearly_below([0.10, 0.30], [0.20, 0.22])  # mean lower, but within its own spread

    def row(name: str, lr: str, loss: float) -> dict:
        return {"params": {"optimizer.name": name, "optimizer.lr": lr},
                "metrics": {"finetune.best_val_loss": loss, "evaluate.accuracy": 0.9}, "stage_runs": {}}

    rows = [row("sgd", "0.1", 0.20), row("sgd", "0.1", 0.22), row("rmsprop", "0.01", 0.10), row("rmsprop", "0.01", 0.12),
            row("momentum", "0.1", 0.10), row("momentum", "0.1", 0.30)]
    curve = {"sgd": [(0, 0.5, 0.1), (1, 0.21, 0.2)], "rmsprop": [(0, 0.3, 0.1), (1, 0.11, 0.2)],
             "momentum": [(0, 0.4, 0.1), (1, 0.2, 0.2)]}
    monkeypatch.setattr(optimizers, "mean_curve", lambda rows, metric: curve[rows[0]["params"]["optimizer.name"]])
    finding = optimizers.analyze(rows, tmp_path, "full")
    assert finding.held == "in part"
    assert "lower by more than the spread over seeds: rmsprop; within the spread of SGD's or above it: momentum" \
        in finding.measured
    assert "| `rmsprop` | 0.01 | 0.110 +/- 0.014 | 0.900 +/- 0.000 | 2 (0.20 s) |" in finding.table


def test_activations_verdict_compares_saturating_units_with_every_rectifier_at_the_greatest_depth(monkeypatch, tmp_path):
    """Worked by hand: at 16 layers sigmoid is below both rectifiers beyond the spread, tanh is not: in part."""
    from deepsweep.studies import activations

    def row(name: str, depth: int, accuracy: float) -> dict:
        return {"params": {"activation.name": name, "model.hidden_dims": activations.hidden_dims(depth).replace(",", ", ")},
                "metrics": {"evaluate.accuracy": accuracy}, "stage_runs": {}}

    values = {("sigmoid", 2): (0.95, 0.96), ("sigmoid", 16): (0.10, 0.12), ("tanh", 2): (0.95, 0.95),
              ("tanh", 16): (0.90, 0.70), ("relu", 2): (0.96, 0.96), ("relu", 16): (0.93, 0.94),
              ("gelu", 2): (0.96, 0.97), ("gelu", 16): (0.94, 0.94)}
    rows = [row(name, depth, v) for (name, depth), pair in values.items() for v in pair]
    monkeypatch.setattr(activations, "mean_curve", lambda rows, metric: [(0, 1.0, 0.1), (1, 0.5, 0.2)])
    finding = activations.analyze(rows, tmp_path, "full")
    assert finding.held == "in part"
    assert "sigmoid 0.955 -> 0.110" in finding.measured
    assert finding.measured.endswith("below every rectifier by more than the spread over seeds: sigmoid.")
    assert "| `tanh` | 0.950 +/- 0.000 | 0.800 +/- 0.141 | 0.500 +/- 0.000 |" in finding.table
    assert (tmp_path / "activations_depth.png").stat().st_size > 10_000


def test_batch_norm_counts_settings_reached_only_with_it_and_epochs_where_both_did(monkeypatch, tmp_path):
    """Worked by hand: at lr 2.0 only batch norm reaches the target (plain SGD diverged: no finished rows); at
    lr 0.1 both do, batch norm in 2 epochs against 5-6: held."""
    from deepsweep.studies import batch_norm

    def row(kind: str, lr: str, seed: int, epochs: int) -> dict:
        return {"params": {"regularizer.name": kind, "optimizer.lr": lr, "seed": str(seed),
                           "model.hidden_dims": "[64, 64]"}, "metrics": {}, "stage_runs": {}, "reach": epochs}

    rows = [row("none", "0.1", 0, 5), row("none", "0.1", 1, 6), row("batchnorm", "0.1", 0, 2),
            row("batchnorm", "0.1", 1, 2), row("batchnorm", "2.0", 0, 3), row("batchnorm", "2.0", 1, 4)]
    monkeypatch.setattr(batch_norm, "mean_curve", lambda rows, metric: [
        (e, 0.95 if e + 1 >= rows[0]["reach"] else 0.5, 0.1 * e) for e in range(batch_norm.EPOCHS)])
    finding = batch_norm.analyze(rows, tmp_path, "full")
    assert finding.held == "yes"
    assert "with batch norm only in: 2 layers at lr 2.0; without it only in: none" in finding.measured
    assert "sooner by more than the spread over seeds in 2 layers at lr 0.1, later in none" in finding.measured
    assert "| 2 | 2.0 | never (0/2) | 3.5 +/- 0.7 (2/2) |" in finding.table
    assert (tmp_path / "batch_norm_epochs.png").stat().st_size > 10_000


def test_gnn_depth_holds_for_a_family_only_when_accuracy_falls_and_embeddings_grow_alike(tmp_path):
    """Worked by hand: GCN falls in both beyond the spread; GAT's embeddings grow alike but its accuracy
    stays within the spread: in part."""
    from deepsweep.studies import gnn_depth

    def row(family: str, layers: int, accuracy: float, mad: float) -> dict:
        return {"params": {"model.name": family, "model.hidden_dims": gnn_depth.hidden_dims(layers).replace(",", ", ")},
                "metrics": {"evaluate.accuracy": accuracy, "evaluate.embedding_mad": mad}, "stage_runs": {}}

    rows = [row("gcn", 2, 0.81, 0.80), row("gcn", 2, 0.80, 0.82), row("gcn", 16, 0.30, 0.05), row("gcn", 16, 0.32, 0.06),
            row("gat", 2, 0.80, 0.70), row("gat", 2, 0.78, 0.72), row("gat", 16, 0.70, 0.20), row("gat", 16, 0.85, 0.22)]
    finding = gnn_depth.analyze(rows, tmp_path, "full")
    assert finding.held == "in part"
    assert "test accuracy: gcn 0.805 -> 0.310; gat 0.790 -> 0.775; embedding MAD at 2, 16 layers: gcn 0.810, 0.055; gat 0.710, 0.210" in finding.measured
    assert "accuracy fell for gcn and the embeddings grew alike for gcn, gat." in finding.measured
    assert "| `gcn` | 16 | 0.310 +/- 0.014 | 0.055 +/- 0.007 | 2 |" in finding.table
    assert (tmp_path / "gnn_depth.png").stat().st_size > 10_000


def test_initialization_reads_each_layers_statistics_and_holds_per_activation(monkeypatch, tmp_path):
    """Worked by hand, 2 hidden layers: He keeps ReLU's activation std (ratio 1.0) where the small normal loses
    it (0.05) and trains better; for tanh Xavier keeps it but accuracy is within the spread: in part."""
    from deepsweep.studies import initialization

    stds = {"he_normal": [1.0, 0.8, 0.8], "normal": [1.0, 0.02, 0.001], "xavier_uniform": [1.0, 0.6, 0.5]}

    def row(activation: str, init: str, accuracy: float) -> dict:
        return {"params": {"activation.name": activation, "init.name": init, "model.hidden_dims": "[64, 64]"},
                "metrics": {"evaluate.accuracy": accuracy}, "stage_runs": {"finetune": init}}

    def history(row, metric, stage="finetune"):
        kind, layer = metric.split("/")[1], int(metric.split("/")[2])
        value = stds[row["stage_runs"]["finetune"]][layer] if kind == "input_std" else 1.0 / (layer + 1)
        return [(0, value, 0.0), (1, value / 2, 1.0)]

    monkeypatch.setattr(initialization, "history", history)
    rows = [row("relu", "he_normal", 0.95), row("relu", "he_normal", 0.94), row("relu", "normal", 0.10),
            row("relu", "normal", 0.11), row("tanh", "xavier_uniform", 0.90), row("tanh", "xavier_uniform", 0.80),
            row("tanh", "normal", 0.86), row("tanh", "normal", 0.84)]
    finding = initialization.analyze(rows, tmp_path, "full")
    assert finding.held == "in part"
    assert "relu: `he_normal` keeps 1.00 of the first hidden layer's activation std at the last, `normal` (std 0.01) 0.05" \
        in finding.measured
    assert "| relu | `normal` | 0.050 +/- 0.000 | 1 | 0.105 +/- 0.007 |" in finding.table
    assert (tmp_path / "initialization_layers.png").stat().st_size > 10_000


def test_labels_needed_holds_when_pretraining_beats_scratch_at_few_labels_and_the_gain_shrinks(tmp_path):
    """Worked by hand: the autoencoder beats scratch at 1% beyond the spread and by less at 100%; the GAN does
    not at 1%: in part."""
    from deepsweep.studies import labels_needed

    def row(method: str, fraction: str, accuracy: float) -> dict:
        return {"params": {"pretrain.name": method, "finetune.label_fraction": fraction},
                "metrics": {"evaluate.accuracy": accuracy, "finetune.n_train_labels": 180 if fraction == "0.01" else 18000},
                "stage_runs": {}}

    rows = [row("none", "0.01", 0.60), row("none", "0.01", 0.62), row("none", "1.0", 0.97), row("none", "1.0", 0.97),
            row("autoencoder", "0.01", 0.80), row("autoencoder", "0.01", 0.82), row("autoencoder", "1.0", 0.98),
            row("autoencoder", "1.0", 0.98), row("gan", "0.01", 0.58), row("gan", "0.01", 0.66),
            row("gan", "1.0", 0.96), row("gan", "1.0", 0.96)]
    finding = labels_needed.analyze(rows, tmp_path, "full")
    assert finding.held == "in part"
    assert "With 180 labels (1%), training from scratch reached 0.610 test accuracy; autoencoder +0.200; gan +0.010" \
        in finding.measured
    assert finding.measured.endswith("at 1%: autoencoder; of those, a smaller gain at 100%: autoencoder.")
    assert "| `gan` | 0.620 +/- 0.057 | 0.960 +/- 0.000 |" in finding.table
    assert (tmp_path / "labels_needed.png").stat().st_size > 10_000


def test_gan_stability_holds_only_where_wgan_gp_covers_more_modes_than_the_gan_beyond_the_spread(monkeypatch, tmp_path):
    """Worked by hand: on the ring WGAN-GP covers 8 and 7 modes, the GAN 2 and 3 (beyond the spread); on MNIST
    both find 10 digits: in part. Then the MNIST GAN finds 4 and 5: yes."""
    from deepsweep.studies import gan_stability

    def row(data: str, method: str, seed: int, value: float) -> dict:
        metric = gan_stability.RING_MODES if data == "ring" else gan_stability.CLASSES
        return {"run_id": f"{data}{method}{seed}", "params": {"data.name": data, "pretrain.name": method, "seed": str(seed)},
                "metrics": {metric: value, gan_stability.RING_QUALITY: 0.5, gan_stability.CLASS_KL: 0.1},
                "stage_runs": {}}

    monkeypatch.setattr(gan_stability, "mean_curve", lambda rows, metric, stage: [(0, 1.0, 0.1), (1, 2.0, 0.2)])
    monkeypatch.setattr(gan_stability, "stage_artifact", lambda row, stage, path, to: None)
    ring = [row("ring", "gan", 0, 2), row("ring", "gan", 1, 3), row("ring", "wgan_gp", 0, 8), row("ring", "wgan_gp", 1, 7)]
    mnist = [row("mnist", m, s, 10) for m in ("gan", "wgan_gp") for s in (0, 1)]
    finding = gan_stability.analyze(ring + mnist, tmp_path, "full")
    assert finding.held == "in part"
    assert "| `gan` | 2.50 +/- 0.71 | 0.500 +/- 0.000 | - | 10.00 +/- 0.00 | 0.100 +/- 0.000 |" in finding.table
    assert "on the ring yes, on MNIST no" in finding.measured
    collapsed = [row("mnist", "gan", 0, 4), row("mnist", "gan", 1, 5)] + mnist[2:]
    assert gan_stability.analyze(ring + collapsed, tmp_path, "full").held == "yes"


def test_vanishing_gradients_holds_when_each_gated_cell_beats_the_rnn_at_the_longest_length(tmp_path):
    from deepsweep.studies import vanishing_gradients

    def row(cell: str, length: int, accuracy: float, bias: str = "None") -> dict:
        return {"params": {"model.name": cell, "data.length": str(length), "model.forget_bias": bias},
                "metrics": {"evaluate.accuracy": accuracy}, "stage_runs": {}}

    base = [row(c, 10, 1.0) for c in ("rnn", "lstm", "gru") for _ in range(2)]
    long = [row("rnn", 100, 0.50), row("rnn", 100, 0.52), row("lstm", 100, 0.49), row("lstm", 100, 0.51),
            row("gru", 100, 0.95), row("gru", 100, 0.97), row("gru", 100, 0.99, "1.0"), row("gru", 100, 0.98, "1.0")]
    finding = vanishing_gradients.analyze(base + long, tmp_path, "full")
    assert finding.held == "in part"  # the GRU does, the plain LSTM does not
    assert "Above the RNN beyond the spread over seeds: gru, gru, forget_bias=1." in finding.measured
    assert finding.table.splitlines()[0] == "| length | rnn | lstm | gru | gru, forget_bias=1 |"
    long[2:4] = [row("lstm", 100, 0.90), row("lstm", 100, 0.92)]
    assert vanishing_gradients.analyze(base + long, tmp_path, "full").held == "yes"


def test_pretraining_separates_what_a_probe_sees_from_what_fine_tuning_keeps(tmp_path):
    from deepsweep.studies import pretraining

    def row(method: str, probe: float, tuned: float) -> dict:
        metrics = {f"evaluate.{k}": v for k, v in (("probe_accuracy", probe), ("accuracy", tuned))}
        metrics.update({f"evaluate.{k}": 0.9 for k in ("probe_f1_macro", "probe_roc_auc", "f1_macro", "roc_auc")})
        return {"params": {"pretrain.name": method}, "metrics": metrics, "stage_runs": {}}

    rows = [row("none", 0.80, 0.90), row("none", 0.82, 0.91), row("autoencoder", 0.90, 0.90), row("autoencoder", 0.91, 0.92)]
    finding = pretraining.analyze(rows, tmp_path, "full")
    assert finding.held == "in part"
    assert "above it beyond the spread over seeds: autoencoder" in finding.measured
    assert "above `none` beyond the spread: none." in finding.measured
    assert len([line for line in finding.table.splitlines() if line.startswith("| `")]) == 2


def test_anomaly_holds_for_a_method_above_chance_beyond_the_spread_over_held_out_digits(tmp_path):
    from deepsweep.studies import anomaly

    def row(method: str, digit: int, auc: float) -> dict:
        return {"params": {"pretrain.name": method, "pretrain.anomaly_class": str(digit)},
                "metrics": {"evaluate.anomaly_roc_auc": auc}, "stage_runs": {}}

    rows = [row("autoencoder", 0, 0.90), row("autoencoder", 1, 0.80), row("vae", 0, 0.90), row("vae", 1, 0.30)]
    finding = anomaly.analyze(rows, tmp_path, "full")
    assert finding.held == "in part"  # the VAE's 0.60 mean lies within its spread (0.42) of chance
    assert "| `autoencoder` (reconstruction error) | 0.90 | 0.80 | 0.850 +/- 0.071 |" in finding.table
    assert "Above chance beyond the spread over digits: autoencoder." in finding.measured
    assert "vae 1 (0.30)" in finding.measured
