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


@pytest.mark.parametrize("name,figure", [("optimizers", "optimizers_loss.png"),
                                         ("regularization", "regularization_curves.png")])
def test_small_budget_writes_the_page(tmp_path, isolated_tracking, name, figure):
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
