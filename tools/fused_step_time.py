"""Time a fused array's training alone (``training.fused.train_members``): N digits MLP members (seeds 0..N-1,
3 epochs, one thread), where a step's arithmetic is small and what the step itself costs (Python, dispatch,
stacking, the optimizer's per-tensor work) shows. Prints the median of 3 timed runs after a warm-up, then, with
``--profile``, torch.profiler's table of one more run (the ops that took the most time, on the CPU and on the
GPU): where a step's time goes on a machine this was not written on.

    python tools/fused_step_time.py 32 [--profile] [overrides...]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from deepsweep.config import compose
from deepsweep.data.loaders import PreparedData
from deepsweep.stages import finetune
from deepsweep.stages.pipeline import execute
from deepsweep.training.fused import build_members, train_members


def main(n: int, extra: list[str], profile: bool = False) -> None:
    torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
    base = ["pretrain=none", "data=digits", "trainer.max_epochs=3", "trainer.progress=none", *extra]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        execute("prepare", compose(base), out)
        data = PreparedData.load(out / "prepare")
        cfgs = [compose([*base, f"seed={i}"]) for i in range(n)]
        times, steps = [], 0
        for _ in range(4):
            members = build_members(cfgs, lambda cfg: finetune.build(cfg, data, {"pretrain": out / "pretrain"}))
            steps = int(cfgs[0].trainer.max_epochs) * len(members[0].train_loader)
            start = time.perf_counter()
            train_members(cfgs, members)
            times.append(time.perf_counter() - start)
            if profile and len(times) == 4:
                from torch.profiler import ProfilerActivity
                from torch.profiler import profile as profiled

                members = build_members(cfgs, lambda cfg: finetune.build(cfg, data, {"pretrain": out / "pretrain"}))
                gpu = torch.cuda.is_available()
                activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if gpu else [])]
                with profiled(activities=activities) as trace:
                    train_members(cfgs, members)
                print(trace.key_averages().table(sort_by="self_cuda_time_total" if gpu else "self_cpu_time_total",
                                                 row_limit=25))
    median = statistics.median(times[1:])
    print(f"{n} members, {steps} steps: {median:.3f} s, {median / steps * 1000:.2f} ms a step "
          f"(runs: {', '.join(f'{t:.3f}' for t in times)} s; the first is a warm-up)")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--profile"]
    main(int(args[0]) if args else 32, args[1:], profile="--profile" in sys.argv)
