"""What ``deepsweep run -m``'s up-front check of every sweep value costs (``cli.main.check_run_args``), with
each point composed by Hydra against points that differ in plain values only set on one composition
(``cli.main._point_configs``): the figures its docstring and the session notes quote.

    python tools/sweep_check_cost.py [overrides...]   (default: the 32-member MNIST MLP sweep of make bench)
"""

from __future__ import annotations

import sys

from compose_cost import median_seconds  # tools/, this script's folder, is first on sys.path

from deepsweep.cli import main as cli
from deepsweep.config import compose

DEFAULT = ["-m", "pretrain=none", "data=mnist", "model=mlp", "init=xavier_uniform,he_normal", "seed=range(0,16)",
           "trainer.max_epochs=3"]


def main(argv: list[str]) -> None:
    cli.check_run_args(argv)  # warm-up: imports, Hydra's caches, the tracking store
    shared = median_seconds(lambda: cli.check_run_args(argv), repeats=5)
    one_each = cli._point_configs
    cli._point_configs = lambda points: (compose(point) for point in points)
    try:
        each = median_seconds(lambda: cli.check_run_args(argv), repeats=5)
    finally:
        cli._point_configs = one_each
    points = len(cli._sweep_points([a for a in argv if not a.startswith("-")]))
    print(f"{points} points: {each:.2f} s composing each, {shared:.2f} s setting plain values on one composition "
          "(medians of 5)")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
