"""What composing one sweep job's config costs, against copying the composed config: the figures the fused
launcher's ``ComposedOnce`` quotes (each sweep job's config is composed by the sweeper's batch check and
again by the launcher; the launcher now takes the check's composition and pays one copy).

    python tools/compose_cost.py [overrides...]      (default: model=lenet data=mnist)
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

from hydra import compose, initialize_config_dir

from deepsweep import paths


def median_seconds(action, repeats: int = 10) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(overrides: list[str]) -> None:
    with initialize_config_dir(str(paths.conf_dir()), version_base="1.3"):
        config = compose("config", overrides=overrides, return_hydra_config=True)  # warm-up: Hydra's caches
        composing = median_seconds(lambda: compose("config", overrides=overrides, return_hydra_config=True))
    copying = median_seconds(lambda: copy.deepcopy(config))
    print(f"{' '.join(overrides)}: compose {composing * 1000:.0f} ms, deepcopy {copying * 1000:.1f} ms (medians of 10)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["model=lenet", "data=mnist"])
