"""The benchmark's parts (`make bench` itself is not a test: timings belong in a benchmark)."""

from __future__ import annotations

import pytest
import torch

from deepsweep import bench


def test_steady_rate_reads_the_sweep_progress_lines():
    log = "\n".join([
        "[2026-01-01 10:00:00,000][HYDRA] Launching 3 jobs",
        "[2026-01-01 10:00:05,000][deepsweep][INFO] - sweep progress: 1 jobs done (job 0 finished)",
        "[2026-01-01 10:00:07,000][deepsweep][INFO] - sweep progress: 2 jobs done (job 1 finished)",
        "[2026-01-01 10:00:09,000][deepsweep][INFO] - sweep progress: 3 jobs done (job 2 finished)",
    ])
    assert bench.steady_jobs_per_min(log) == pytest.approx(30.0)  # 2 jobs in the 4 s after the first
    assert bench.steady_jobs_per_min(log.splitlines()[1]) is None


def test_loops_run_on_the_device_the_trainer_names(compose):
    assert bench.device_of(compose()) == torch.device("cpu")
    assert bench.device_of(compose("trainer=gpu")) == torch.device("cuda")


@pytest.mark.parametrize("trainer", ["cpu", "gpu"])
def test_both_loops_train_the_same_workload(compose, trainer):
    if trainer == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU here; the same test runs the loops on one where there is")
    import mlflow

    mlflow.set_experiment("bench")  # as bench.main does (an earlier test's experiment is not in this store)
    cfg = compose(f"trainer={trainer}")
    data = bench.tensor_data(cfg)
    assert bench.raw_loop(cfg, data, 1, 64, 0) > 0
    assert bench.deepsweep_loop(cfg, data, 1, 64, 0) > 0


def test_profile_writes_both_loops_sorted_both_ways(tmp_path):
    path = bench.profile("Tiny MLP", {"raw": lambda: sum(range(1000)), "deepsweep": lambda: sorted(range(1000))},
                         tmp_path)
    text = path.read_text()
    assert path.name == "profile_tiny_mlp.txt"
    assert "=== Tiny MLP: raw loop ===" in text and "=== Tiny MLP: deepsweep loop ===" in text
    assert text.count("Ordered by: internal time") == 2 and text.count("Ordered by: cumulative time") == 2
