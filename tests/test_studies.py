"""Studies: each runs its small budget end to end (a real sweep, its MLflow runs read back) into a page."""

from __future__ import annotations

import pytest

from conftest import deepsweep_cli

pytestmark = pytest.mark.slow


def test_study_list_names_each_claim():
    result = deepsweep_cli("study", "--list")
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["optimizers", "regularization"]
    assert deepsweep_cli("study", "adam_vs_sgd").stderr.strip() == (
        "deepsweep: error: study: unknown study 'adam_vs_sgd'; allowed: optimizers, regularization")


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
