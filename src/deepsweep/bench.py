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
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from deepsweep import factory, paths
from deepsweep.config import build, compose
from deepsweep.data.loaders import GraphData, InMemoryLoader, TensorSplit
from deepsweep.data.sources import load_splits


def tensor_data(cfg, train_subset: int | None = None) -> tuple[TensorSplit, TensorSplit, int, int | None]:
    """(train, val, classes, vocabulary size) of ``cfg.data`` read by its own source, as the prepare stage does."""
    source = build(cfg.data)
    if train_subset is not None:
        source.train_subset = train_subset
    splits, extra = load_splits(source)
    t = lambda s: TensorSplit(torch.from_numpy(s.x), torch.from_numpy(s.y))  # noqa: E731
    return t(splits.train), t(splits.val), len(splits.class_names), extra.get("vocab_size")


def raw_loop(cfg, data, epochs: int, batch: int, seed: int) -> float:
    """The baseline: what a careful researcher writes by hand."""
    train, val, classes, vocab = data
    torch.manual_seed(seed)
    model = factory.create_model(cfg, tuple(train.x.shape[1:]), classes, vocab)
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


def raw_graph_loop(cfg, graph: GraphData, epochs: int, batch: int, seed: int) -> float:
    """torch-geometric's own example (examples/gcn.py), full batch: one step on the training nodes, then
    the loss on the validation nodes, per epoch."""
    g = graph.graph
    x, edge_index, y = g["x"], g["edge_index"], g["y"]
    train_mask, val_mask = g["train_mask"], g["val_mask"]
    torch.manual_seed(seed)
    model = factory.create_model(cfg, graph.input_shape, graph.num_classes)
    opt = build(cfg.optimizer)(model.parameters())
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x, edge_index)[train_mask], y[train_mask])
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            torch.nn.functional.cross_entropy(model(x, edge_index)[val_mask], y[val_mask])
    return time.perf_counter() - start


def deepsweep_loop(cfg, data, epochs: int, batch: int, seed: int) -> float:
    """The finetune stage's path: the classify task + Lightning Trainer + in-memory loader + MLflow logger."""
    import lightning as L
    import mlflow

    from deepsweep.tasks.classify import task_for
    from deepsweep.tasks.common import BestWeights
    from deepsweep.tracking.lightning import MlflowRunLogger

    L.seed_everything(seed, verbose=False)
    if isinstance(data, GraphData):
        model = factory.create_model(cfg, data.input_shape, data.num_classes)
        train_loader, val_loader = data.loader("train"), data.loader("val")
    else:
        train, val, classes, vocab = data
        model = factory.create_model(cfg, tuple(train.x.shape[1:]), classes, vocab)
        train_loader, val_loader = InMemoryLoader(train, batch, shuffle=True, seed=seed), InMemoryLoader(val, batch)
    task = task_for("graph" if isinstance(data, GraphData) else "tensor")(
        model, factory.create_optimizer(cfg), None, build(cfg.regularizer))
    with mlflow.start_run(run_name="bench") as run:
        trainer = factory.create_trainer(cfg, epochs, MlflowRunLogger(run.info.run_id), [BestWeights()], "/tmp")
        start = time.perf_counter()
        trainer.fit(task, train_loader, val_loader)
        return time.perf_counter() - start


def training_workload(name: str, overrides: list[str], epochs: int, repeats: int,
                      train_subset: int | None = None) -> dict:
    cfg = compose(overrides)
    if build(cfg.data).kind == "graph":
        graph, meta = build(cfg.data).load()
        data, raw, samples_per_epoch = GraphData(graph, meta), raw_graph_loop, int(graph["train_mask"].sum())
    else:
        data, raw = tensor_data(cfg, train_subset), raw_loop
        samples_per_epoch = len(data[0])
    batch = int(cfg.data.batch_size)
    # Warm-up: first-call costs (imports, allocator, MKL/oneDNN kernels) are not per-run overhead.
    raw(cfg, data, 1, batch, 0)
    deepsweep_loop(cfg, data, 1, batch, 0)
    raw_s, ours = [], []
    for r in range(repeats):
        raw_s.append(raw(cfg, data, epochs, batch, r))
        ours.append(deepsweep_loop(cfg, data, epochs, batch, r))
    samples = epochs * samples_per_epoch
    return {
        "workload": name,
        "config": " ".join(overrides),
        "train_samples": samples_per_epoch,
        "epochs": epochs,
        "batch_size": batch if not isinstance(data, GraphData) else "full graph",
        "raw_s": statistics.median(raw_s),
        "deepsweep_s": statistics.median(ours),
        "ratio": statistics.median(o / r for o, r in zip(ours, raw_s)),
        "raw_samples_per_s": samples / statistics.median(raw_s),
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


def sweep_throughput(jobs: int, epochs: int, pretrain_epochs: int) -> dict:
    """The same sweep (``jobs`` seeds on digits) with 1 process, then one per core."""
    values = ",".join(str(s) for s in range(jobs))
    common = [sys.executable, "-m", "deepsweep", "run", "-m", f"seed={values}", f"trainer.max_epochs={epochs}",
              f"pretrain.epochs={pretrain_epochs}"]
    out: dict = {"jobs": jobs, "epochs": epochs, "pretrain_epochs": pretrain_epochs}
    for label, n_jobs in (("sequential", 1), ("parallel", os.cpu_count() or 1)):
        folder = paths.project_root() / "bench" / f"sweep_{label}_{epochs}"
        shutil.rmtree(folder, ignore_errors=True)  # a leftover sweep dir would be resumed, not rerun
        start = time.perf_counter()
        subprocess.run([*common, f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={folder}"],
                       check=True, capture_output=True, cwd=paths.project_root())
        out[f"{label}_s"] = time.perf_counter() - start
        out[f"{label}_jobs_per_min"] = 60 * jobs / out[f"{label}_s"]
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
        lines += [
            "", "## Sweep throughput", "",
            "`deepsweep run -m seed=0,...,N-1` on digits with MLflow on, joblib launcher with 1 process, then one",
            "per core (each job then gets cores/processes torch threads).",
            "", "| jobs | epochs (fine-tune + pretrain) | 1 process s | per core s | jobs/min, 1 process | jobs/min, per core | speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in results["sweep"]:
            lines.append(f"| {s['jobs']} | {s['epochs']} + {s['pretrain_epochs']} | {s['sequential_s']:.1f} | "
                         f"{s['parallel_s']:.1f} | {s['sequential_jobs_per_min']:.1f} | {s['parallel_jobs_per_min']:.1f} | "
                         f"{s['speedup']:.2f}x |")
    lines += [
        "",
        "## What stands between these numbers and the targets",
        "",
        "- Per-step overhead is fixed, about 0.6 ms a step: with the MLP's ~1.2 ms steps it shows (target 1.15",
        "  missed), with LeNet's and the LSTM's larger steps it fades. `python -m cProfile` of the deepsweep",
        "  loop puts it in Lightning's hook dispatch (`trainer/call.py`: ~12 hooks per step, each setting",
        "  `_current_fx_name` through `nn.Module.__setattr__`), its data fetcher and the closure-based",
        "  optimizer step; tasks already log once per epoch, not per step. Removing the rest means leaving",
        "  Lightning's loop, which deepsweep does not do.",
        "- Per-epoch overhead was MLflow: a synchronous SQLite `log_batch` costs ~8 ms and Lightning logs twice",
        "  an epoch, 3.4 s of a 200-epoch GCN run. The logger now buffers and writes at most every 2 s (and",
        "  when fit ends or fails), which took the GCN ratio from 1.33 to the table's value.",
        "- Sweeps: once running, parallel jobs scale. From the timestamps of the `sweep progress` lines of",
        "  `deepsweep run -m 'seed=range(0,8)' trainer.max_epochs=30 pretrain.epochs=5 hydra.launcher.n_jobs=N`",
        "  (N = 1, 2; read by hand): a pair of jobs finishes every 2.2 s in parallel against 2.15 s per job sequentially,",
        "  1.95x. What keeps the totals in the table lower is fixed cost: ~3 s of sweep start (imports, parent",
        "  run) and ~5.6 s of report (run queries, plots, artifacts) in both runs, and ~6 s before the first",
        "  parallel pair ends against ~4 s for the first sequential job (each loky worker imports torch,",
        "  Lightning and MLflow itself). With 8 jobs of 1 to 3 s that fixed cost is half the sweep, so 1.7x",
        "  over the whole sweep needs longer jobs or more of them.",
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
    quick = args.quick
    training = [
        training_workload("MLP on MNIST", ["data=mnist", "model=mlp"], 1 if quick else 2, args.repeats,
                          2000 if quick else 60000),
        training_workload("LeNet on MNIST", ["data=mnist", "model=lenet"], 1, args.repeats, 2000 if quick else 10000),
        training_workload("LSTM on synthetic first-bit sequences", ["data=synthetic", "model=lstm"], 1 if quick else 3,
                          args.repeats),
        training_workload("2-layer GCN on Cora (full batch)", ["experiment=cora_gcn"], 20 if quick else 200,
                          args.repeats),
    ]
    for w in training:
        print(f"{w['workload']}: raw {w['raw_s']:.2f}s, deepsweep {w['deepsweep_s']:.2f}s, ratio {w['ratio']:.3f}")
    results = {
        "machine": machine(),
        "threads": cfg_threads,
        "repeats": args.repeats,
        "training": training,
        "startup": startup(1 if args.quick else 3),
        "sweep": None if args.quick else [sweep_throughput(8, 5, 2), sweep_throughput(8, 30, 5)],
    }
    (root / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    if not args.quick:
        (root / "docs").mkdir(exist_ok=True)
        (root / "docs" / "benchmarks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
