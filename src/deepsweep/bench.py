"""``make bench``: deepsweep's training path against a minimal hand-written PyTorch loop.

Same model (built by the same factory, same init), data already in memory, batch size, epochs, threads
and seed; both validate once per epoch. Prints the median ratio deepsweep/raw over repeats, samples/s
and peak RSS, and writes bench/results.json and docs/benchmarks.md. Not part of the test suite.

    python -m deepsweep.bench [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from deepsweep import factory, paths
from deepsweep.config import build, compose
from deepsweep.data.loaders import InMemoryLoader, TensorSplit
from deepsweep.data.sources import IdxImages


def _mnist(train_subset: int) -> tuple[TensorSplit, TensorSplit]:
    splits = IdxImages(root="../shared/data/mnist/raw", train_subset=train_subset).load()
    t = lambda s: TensorSplit(torch.from_numpy(s.x), torch.from_numpy(s.y))  # noqa: E731
    return t(splits.train), t(splits.val)


def raw_loop(cfg, train: TensorSplit, val: TensorSplit, epochs: int, batch: int, seed: int) -> float:
    """The baseline: what a careful researcher writes by hand."""
    torch.manual_seed(seed)
    model = factory.create_model(cfg, tuple(train.x.shape[1:]), 10)
    opt = build(cfg.optimizer)(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), batch):
            idx = order[i : i + batch]
            loss = torch.nn.functional.cross_entropy(model(train.x[idx]), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(val), batch):
                torch.nn.functional.cross_entropy(model(val.x[i : i + batch]), val.y[i : i + batch])
    return time.perf_counter() - start


def deepsweep_loop(cfg, train: TensorSplit, val: TensorSplit, epochs: int, batch: int, seed: int) -> float:
    """The finetune stage's path: ClassifyTask + Lightning Trainer + in-memory loader + MLflow logger."""
    import lightning as L
    import mlflow

    from deepsweep.tasks.classify import ClassifyTask
    from deepsweep.tasks.common import BestWeights
    from deepsweep.tracking.lightning import MlflowRunLogger

    L.seed_everything(seed, verbose=False)
    model = factory.create_model(cfg, tuple(train.x.shape[1:]), 10)
    task = ClassifyTask(model, factory.create_optimizer(cfg), None, build(cfg.regularizer))
    with mlflow.start_run(run_name="bench") as run:
        trainer = factory.create_trainer(cfg, epochs, MlflowRunLogger(run.info.run_id), [BestWeights()], "/tmp")
        start = time.perf_counter()
        trainer.fit(task, InMemoryLoader(train, batch, shuffle=True, seed=seed), InMemoryLoader(val, batch))
        return time.perf_counter() - start


def training_workload(name: str, overrides: list[str], train_subset: int, epochs: int, repeats: int) -> dict:
    cfg = compose(["data=mnist", *overrides])
    train, val = _mnist(train_subset)
    batch = int(cfg.data.batch_size)
    # Warm-up: first-call costs (imports, allocator, MKL/oneDNN kernels) are not per-run overhead.
    raw_loop(cfg, train, val, 1, batch, 0)
    deepsweep_loop(cfg, train, val, 1, batch, 0)
    raw, ours = [], []
    for r in range(repeats):
        raw.append(raw_loop(cfg, train, val, epochs, batch, r))
        ours.append(deepsweep_loop(cfg, train, val, epochs, batch, r))
    samples = epochs * len(train)
    return {
        "workload": name,
        "config": " ".join(overrides),
        "train_samples": len(train),
        "epochs": epochs,
        "batch_size": batch,
        "raw_s": statistics.median(raw),
        "deepsweep_s": statistics.median(ours),
        "ratio": statistics.median(o / r for o, r in zip(ours, raw)),
        "raw_samples_per_s": samples / statistics.median(raw),
        "deepsweep_samples_per_s": samples / statistics.median(ours),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _timed(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=paths.project_root())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup(repeats: int) -> list[dict]:
    exe = [sys.executable, "-m", "deepsweep"]
    return [
        {"command": "deepsweep options", "seconds": _timed([*exe, "options"], repeats)},
        {"command": "deepsweep run --cfg job", "seconds": _timed([*exe, "run", "--cfg", "job"], repeats)},
        {"command": "deepsweep params -o -", "seconds": _timed([*exe, "params", "-o", "-"], repeats)},
    ]


def sweep_throughput(jobs: int) -> dict:
    """The same small sweep (jobs x a few epochs on digits) with 1 process, then one per core."""
    values = ",".join(str(s) for s in range(jobs))
    common = [sys.executable, "-m", "deepsweep", "run", "-m", f"seed={values}", "trainer.max_epochs=5",
              "pretrain.epochs=2"]
    out = {}
    for label, n_jobs in (("sequential", 1), ("parallel", os.cpu_count() or 1)):
        start = time.perf_counter()
        subprocess.run([*common, f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir=bench/sweep_{label}"],
                       check=True, capture_output=True, cwd=paths.project_root())
        out[f"{label}_s"] = time.perf_counter() - start
        out[f"{label}_jobs_per_min"] = 60 * jobs / out[f"{label}_s"]
    out["jobs"] = jobs
    out["speedup"] = out["sequential_s"] / out["parallel_s"]
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {device}, torch {torch.__version__}, torch threads {torch.get_num_threads()}"


def markdown(results: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (`python -m deepsweep.bench`) on: {results['machine']}.",
        "Rerun it to refresh this file; the numbers below are from that run, not edited by hand.",
        "",
        "## Training: deepsweep vs a hand-written PyTorch loop",
        "",
        "Same model, init, data in memory, batch size, epochs, threads and seed; both validate every epoch.",
        f"Median of {results['repeats']} repeats after one warm-up epoch each.",
        "",
        "| workload | train samples x epochs | raw s | deepsweep s | ratio deepsweep/raw | deepsweep samples/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in results["training"]:
        lines.append(
            f"| {w['workload']} | {w['train_samples']} x {w['epochs']} | {w['raw_s']:.2f} | {w['deepsweep_s']:.2f} | "
            f"{w['ratio']:.3f} | {w['deepsweep_samples_per_s']:.0f} | {w['peak_rss_mb']:.0f} |"
        )
    lines += ["", "## Start-up (config only, nothing trained)", "", "| command | seconds |", "|---|---|"]
    lines += [f"| `{s['command']}` | {s['seconds']:.2f} |" for s in results["startup"]]
    if results.get("sweep"):
        s = results["sweep"]
        lines += [
            "", "## Sweep throughput", "",
            f"{s['jobs']} jobs (`deepsweep run -m seed=...`, digits, 5 fine-tuning + 2 pretraining epochs, MLflow on).",
            "", "| launcher | seconds | jobs/min |", "|---|---|---|",
            f"| joblib, 1 process | {s['sequential_s']:.1f} | {s['sequential_jobs_per_min']:.1f} |",
            f"| joblib, one process per core | {s['parallel_s']:.1f} | {s['parallel_jobs_per_min']:.1f} |",
            "", f"Speed-up: {s['speedup']:.2f}x.",
        ]
    lines += [
        "",
        "## What stands between these numbers and the targets",
        "",
        "- Per-step overhead is fixed: with the MLP's ~1 ms steps it shows, with LeNet's larger steps it fades.",
        "  `python -m cProfile` of the deepsweep loop shows where it goes: Lightning's hook dispatch",
        "  (`trainer/call.py`, module attribute bookkeeping on every hook) and, until tasks stopped calling",
        "  `self.log` every step, Lightning's result collection (now one `self.log` per epoch).",
        "- Sweep jobs of a few seconds: the parallel launcher's worker processes each import torch, Lightning",
        "  and MLflow before their first job, while one process runs every job after a single import; jobs",
        "  this small cannot amortize that start-up on two cores.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, no sweep (a smoke run)")
    args = parser.parse_args()
    root = paths.project_root()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'bench' / 'mlflow.db'}")
    (root / "bench").mkdir(exist_ok=True)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("bench")
    cfg_threads = factory.set_threads(compose([]))
    n = 2000 if args.quick else None
    training = [
        training_workload("MLP on MNIST", ["model=mlp"], n or 60000, 1 if args.quick else 2, args.repeats),
        training_workload("LeNet on MNIST", ["model=lenet"], n or 10000, 1, args.repeats),
    ]
    for w in training:
        print(f"{w['workload']}: raw {w['raw_s']:.2f}s, deepsweep {w['deepsweep_s']:.2f}s, ratio {w['ratio']:.3f}")
    results = {
        "machine": machine(),
        "threads": cfg_threads,
        "repeats": args.repeats,
        "training": training,
        "startup": startup(1 if args.quick else 3),
        "sweep": None if args.quick else sweep_throughput(8),
    }
    (root / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    if not args.quick:
        (root / "docs").mkdir(exist_ok=True)
        (root / "docs" / "benchmarks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
