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
def test_both_loops_train_the_same_workload(compose, trainer, monkeypatch):
    """Both loops build the same initial model, train it on every training sample once and validate
    on every validation sample once (the same batches, in train then eval mode), and end with the
    same weights: the same updates, not just something that takes time."""
    if trainer == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU here; the same test runs the loops on one where there is")
    import mlflow

    from deepsweep import factory

    mlflow.set_experiment("bench")  # as bench.main does (an earlier test's experiment is not in this store)
    cfg = compose(f"trainer={trainer}")
    data = bench.tensor_data(cfg)
    built = []  # per loop: its model, its initial weights and the (training?, rows) of every forward call
    build_model = factory.build_model

    def spy(*args, **kwargs):
        model = build_model(*args, **kwargs)
        calls = []
        model.register_forward_pre_hook(lambda module, inputs: calls.append((module.training, len(inputs[0]))))
        built.append((model, {k: v.detach().clone() for k, v in model.state_dict().items()}, calls))
        return model

    monkeypatch.setattr(factory, "build_model", spy)
    assert bench.raw_loop(cfg, data, 1, 64, 0) > 0
    assert bench.deepsweep_loop(cfg, data, 1, 64, 0) > 0
    assert len(built) == 2
    (raw, raw_init, raw_calls), (ours, our_init, our_calls) = built
    train, val = len(data[0]), len(data[1])
    for calls in (raw_calls, our_calls):
        batches = [n for training, n in calls if training]  # one optimizer step each
        assert len(batches) == -(-train // 64) and sum(batches) == train
        assert sum(n for training, n in calls if not training) == val
    assert sorted(our_calls) == sorted(raw_calls)
    for name, weight in raw.state_dict().items():
        assert torch.equal(raw_init[name], our_init[name]), name  # the same initial model
        assert torch.allclose(weight.cpu(), ours.state_dict()[name].cpu(), atol=1e-5), name  # the same updates
    assert any(not torch.equal(w.cpu(), raw_init[k].cpu()) for k, w in raw.state_dict().items())  # it trained


def test_profile_writes_both_loops_sorted_both_ways(tmp_path):
    path = bench.profile("Tiny MLP", {"raw": lambda: sum(range(1000)), "deepsweep": lambda: sorted(range(1000))},
                         tmp_path)
    text = path.read_text()
    assert path.name == "profile_tiny_mlp.txt"
    assert "=== Tiny MLP: raw loop ===" in text and "=== Tiny MLP: deepsweep loop ===" in text
    assert text.count("Ordered by: internal time") == 2 and text.count("Ordered by: cumulative time") == 2


def test_a_partial_run_rewrites_its_own_section_and_keeps_the_others():
    from deepsweep.bench import PROSE_SECTION, splice_section

    document = "\n".join(["# Benchmarks", "", "## Training", "old training", "", "## Fused sweeps", "old fused",
                          "", PROSE_SECTION, "prose", ""])
    fresh = "\n".join(["# Benchmarks", "", "## Training", "(nothing measured)", "", "## Fused sweeps", "new fused",
                       "", PROSE_SECTION, "prose", ""])
    spliced = splice_section(document, fresh, "## Fused sweeps")
    assert "old training" in spliced and "new fused" in spliced and "old fused" not in spliced
    # A section the last full run did not have goes in before the prose.
    fresh_jobs = fresh.replace("## Fused sweeps", "## A job in a warm worker")
    spliced = splice_section(document, fresh_jobs, "## A job in a warm worker")
    assert spliced.index("## A job in a warm worker") < spliced.index(PROSE_SECTION)
    assert "old training" in spliced and "old fused" in spliced


def test_fused_sizes_apply_to_every_sweep_or_to_the_one_named():
    from deepsweep.bench import fused_sizes

    assert fused_sizes("8,32") == ((None, 8), (None, 32))
    assert fused_sizes("mlp:32, gcn:8") == (("mlp", 32), ("gcn", 8))


def test_a_partial_fused_run_replaces_its_own_rows_and_keeps_the_others():
    from deepsweep.bench import merge_rows

    old = [{"sweep": "mlp", "members": 32, "launcher": "fused", "wall_s": 1.0},
           {"sweep": "gcn", "members": 8, "launcher": "fused", "wall_s": 2.0}]
    new = [{"sweep": "gcn", "members": 8, "launcher": "fused", "wall_s": 3.0},
           {"sweep": "gcn", "members": 8, "launcher": "one process", "wall_s": 4.0}]
    assert [r["wall_s"] for r in merge_rows(old, new)] == [1.0, 3.0, 4.0]


def test_a_fused_row_is_compared_with_one_process_of_its_own_commit():
    """Rows kept from another run of the benchmark ran on a machine that may have been faster or slower: no ratio
    across runs, even at one commit."""
    from deepsweep.bench import one_process_rate

    rows = [{"sweep": "mlp", "members": 8, "launcher": "one process", "member_epochs_per_s": 1.0, "commit": "a"},
            {"sweep": "mlp", "members": 32, "launcher": "one process", "member_epochs_per_s": 2.0, "commit": "a"},
            {"sweep": "mlp", "members": 8, "launcher": "fused", "member_epochs_per_s": 3.0, "commit": "a"},
            {"sweep": "mlp", "members": 64, "launcher": "fused", "member_epochs_per_s": 3.0, "commit": "a"},
            {"sweep": "mlp", "members": 8, "launcher": "fused", "member_epochs_per_s": 3.0, "commit": "b"},
            {"sweep": "mlp", "members": 8, "launcher": "fused", "member_epochs_per_s": 3.0, "commit": "a",
             "session": "2026-12-07T20:00:00"}]  # a later run at the same commit
    assert [one_process_rate(rows, r) for r in rows[2:]] == [1.0, 2.0, None, None]


def test_repeated_fused_rows_take_turns_and_keep_the_median_run(monkeypatch, tmp_path):
    """--fused-repeats: the launchers of a sweep run in turn, in reverse order every other round (so no launcher
    is always first), and each row is its median run. The sweeps themselves are stood in for."""
    import subprocess
    import types

    order = []
    # The runs' wall times, in the order they run: fused 5, 2, 3 (median 3); one process 1, 9, 7 (median 7).
    clock = iter(x for w in [5.0, 1.0, 9.0, 2.0, 3.0, 7.0] for x in (0.0, w))

    def fake_run(cmd, **kwargs):
        order.append(next(o for o in cmd if o.startswith("hydra/launcher=")))
        return types.SimpleNamespace(returncode=0, stderr="peak_rss_kb 1024", stdout="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench, "_finetune_seconds", lambda folder: None)
    monkeypatch.setattr(bench.paths, "project_root", lambda: tmp_path)
    rows = bench.fused_sweeps([], torch.device("cpu"), (("gru", 8),), 3, ("gru",),
                              launcher_names=("fused", "one process"), repeats=3)
    assert order == ["hydra/launcher=fused", "hydra/launcher=basic", "hydra/launcher=basic", "hydra/launcher=fused",
                     "hydra/launcher=fused", "hydra/launcher=basic"]
    assert {r["launcher"]: (r["wall_s"], r["repeats"]) for r in rows} == {"fused": (3.0, 3), "one process": (7.0, 3)}
