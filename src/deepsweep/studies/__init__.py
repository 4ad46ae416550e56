"""Studies: a claim of the course as one command, answered by a sweep and a page with figures.

A study is a sweep (which groups and values, seeds, budget) plus the code that reads the sweep's MLflow runs
into a table, figures and a verdict. ``deepsweep study <name>`` runs the sweep (``deepsweep run -m``: the
same launcher, records and checks as any sweep), then writes ``docs/studies/<name>.md`` with its PNGs: the
claim as the course states it, what was measured (mean +/- std over seeds), and whether it held.
``--budget small`` runs a few short jobs one after another in one process, logging no MLflow model (the tests
use it); ``full`` is what the page reports.

Adding a study is one module here with a ``STUDY``: ``NAMES`` lists the modules of this folder.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

NAMES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))
BUDGETS = ("small", "full")


@dataclass
class Finding:
    """What a study's analysis found: a Markdown table, figures (written into the page's folder), one
    sentence of what was measured and whether the claim held (``yes``, ``no`` or ``in part``)."""

    table: str
    measured: str
    held: str
    figures: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    claim: str  # as the course states it
    setup: str  # what runs, in words
    # budget -> the overrides of `deepsweep run -m`, or a list of such lists: sweeps run one after another
    # (e.g. two data sets whose options differ), their jobs' rows pooled for ``analyze``
    sweeps: dict[str, list[str] | list[list[str]]]
    analyze: Callable[[list[dict], Path, str], Finding]  # (finished job rows, figure folder, budget)

    def parts(self, budget: str) -> list[list[str]]:
        """The sweeps of ``budget``, each a list of overrides."""
        sweeps = self.sweeps[budget]
        return [list(part) for part in sweeps] if sweeps and isinstance(sweeps[0], list) else [list(sweeps)]


def load(name: str) -> Study:
    from deepsweep.errors import ConfigError

    if name not in NAMES:
        raise ConfigError(f"study: unknown study {name!r}; allowed: {', '.join(NAMES)}")
    return importlib.import_module(f"deepsweep.studies.{name}").STUDY


# --- reading a sweep ------------------------------------------------------------------------------------

def spread(values: list[float]) -> float:
    """The standard deviation over seeds (or other repeats); 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.{digits}f} +/- {spread(values):.{digits}f}"


def clearly_below(values: list[float], reference: list[float]) -> bool:
    """Whether ``values`` lie below ``reference`` by more than the larger of their spreads over seeds: a
    difference the seeds do not explain, not a verdict of a test."""
    return statistics.mean(reference) - statistics.mean(values) > max(spread(values), spread(reference))


def group(rows: list[dict], key: str) -> dict[str, list[dict]]:
    """Rows by the value of param ``key``, in the order first seen."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["params"].get(key, ""), []).append(row)
    return groups


def stage_run(row: dict, stage: str) -> str | None:
    """The id of a job's ``stage`` run: its own, or the one a resumed job reused (``deepsweep.resumed.<stage>``)."""
    import mlflow

    if stage in row["stage_runs"]:
        return row["stage_runs"][stage]
    client = mlflow.MlflowClient()
    job = client.get_run(row["run_id"])
    found = client.search_runs([job.info.experiment_id], max_results=1, filter_string=(
        f"tags.mlflow.parentRunId = '{row['run_id']}' and tags.`deepsweep.stage` = '{stage}'"))
    run_id = found[0].info.run_id if found else job.data.tags.get(f"deepsweep.resumed.{stage}")
    row["stage_runs"][stage] = run_id
    return run_id


def stage_artifact(row: dict, stage: str, path: str, to: Path) -> Path | None:
    """Copy the artifact ``path`` of a job's ``stage`` run to the file ``to``; None when the run has none."""
    import mlflow

    run_id = stage_run(row, stage)
    if run_id is None:
        return None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per figure says nothing here
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    except Exception:  # noqa: BLE001 - MLflow raises its own and OSError kinds for a missing artifact
        return None
    shutil.copyfile(local, to)
    return to


def history(row: dict, metric: str, stage: str = "finetune") -> list[tuple[int, float, float]]:
    """``(epoch, value, seconds since the stage run started)`` of a per-epoch metric of a job's stage run."""
    import mlflow

    client = mlflow.MlflowClient()
    run_id = stage_run(row, stage)
    if not run_id:
        return []
    start = client.get_run(run_id).info.start_time
    points = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
    return [(m.step, m.value, (m.timestamp - start) / 1000) for m in points]


def mean_curve(rows: list[dict], metric: str, stage: str = "finetune") -> list[tuple[int, float, float]]:
    """The per-epoch mean over ``rows`` (seeds) of ``history``, over the epochs every row has."""
    curves = [history(row, metric, stage) for row in rows]
    curves = [c for c in curves if c]
    if not curves:
        return []
    epochs = min(len(c) for c in curves)
    return [(curves[0][i][0], statistics.mean(c[i][1] for c in curves), statistics.mean(c[i][2] for c in curves))
            for i in range(epochs)]


def pyplot():
    """matplotlib's pyplot on the Agg backend, as every figure of the package draws (``plots._pyplot``)."""
    from deepsweep.plots import _pyplot

    return _pyplot()


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi, as every study page shows them) and close ``fig``; return ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def widths(width: int, layers: int) -> str:
    """A ``model.hidden_dims`` sweep value of ``layers`` equal widths: ``[64,64]``."""
    return "[" + ",".join([str(width)] * layers) + "]"


def hidden_layers(row: dict) -> int:
    """Hidden layers of a job, from its ``model.hidden_dims`` param as MLflow holds it (``[64, 64]``)."""
    return row["params"]["model.hidden_dims"].count(",") + 1


# --- running one ----------------------------------------------------------------------------------------

def sweep_dir(name: str, budget: str, part: int = 0) -> Path:
    """The folder of the study's sweep (its ``part``-th, for a study of several sweeps)."""
    from deepsweep import paths

    return paths.project_root() / "outputs" / "sweeps" / (f"study_{name}_{budget}" + (f"_{part}" if part else ""))


def run_sweep(study: Study, budget: str, reuse: bool = False) -> tuple[list[dict], float]:
    """Run the study's sweeps for ``budget`` afresh (``reuse``: read the last ones instead); their finished
    jobs' rows and the wall time (0 when reused)."""
    import mlflow
    from omegaconf import OmegaConf

    from deepsweep import paths
    from deepsweep.tracking.report import sweep_rows
    from deepsweep.tracking.runs import tracking_uri
    from deepsweep.tracking.sweep import PARENT_FILE
    from deepsweep.utils.io import LOCK_FILE, folder_lock

    seconds, rows = 0.0, []
    for part, overrides in enumerate(study.parts(budget)):
        folder = sweep_dir(study.name, budget, part)
        if not reuse:
            # Cleared only while no sweep holds the folder: a running one (this study started twice) is refused
            # (FolderInUse), not emptied under it. Its lock file stays, so the sweep locks the same file.
            with folder_lock(folder) as held:
                for entry in held.iterdir():
                    if entry.name != LOCK_FILE:
                        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            # A small budget's few short jobs run one after another in the sweep's own process (Hydra's basic
            # launcher): worker processes would each import torch, Lightning and MLflow again for a job or two.
            # A small budget only checks the study's code path, so its jobs log no MLflow model (no study reads
            # one): that costs 1.7 s of a one-job process (`deepsweep run pretrain=none trainer.max_epochs=2`,
            # 10.8 s against 9.1 s with logger.log_model=false) and about 0.5 s a job after it.
            serial = ["hydra/launcher=basic", "logger.log_model=false"] if budget == "small" else []
            command = [sys.executable, "-m", "deepsweep", "run", "-m", *overrides, *serial, f"hydra.sweep.dir={folder}"]
            start = time.monotonic()
            subprocess.run(command, cwd=paths.project_root(), check=True)
            seconds += time.monotonic() - start
        elif not (folder / PARENT_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no sweep of study {study.name} to reuse; run it without --reuse")
        mlflow.set_tracking_uri(tracking_uri(OmegaConf.create({"logger": {"tracking_uri": None}})))
        finished = [r for r in sweep_rows((folder / PARENT_FILE).read_text().strip()) if r["status"] == "FINISHED"]
        if not finished:
            raise FileNotFoundError(f"{folder}: no job of study {study.name}'s sweep finished")
        rows += finished
    return rows, seconds


def command_line(study: Study, budget: str) -> str:
    return f"deepsweep study {study.name}" + (f" --budget {budget}" if budget != "full" else "")


def page(study: Study, finding: Finding, budget: str, jobs: int, seconds: float | None, folder: Path) -> str:
    from deepsweep.results import machine

    figures = "\n".join(f"![{p.stem}]({p.name})" for p in finding.figures)
    return "\n".join([
        f"# Study: {study.title}", "",
        f"**Claim** (as the course states it): {study.claim}", "",
        f"**Held:** {finding.held}. {finding.measured}", "",
        f"**Setup:** {study.setup}", "",
        f"**Command:** `{command_line(study, budget)}` ("
        + ("the sweep: " if len(study.parts(budget)) == 1 else "its sweeps, one after the other: ")
        + " and ".join(f"`deepsweep run -m {' '.join(part)}`" for part in study.parts(budget)) + ")", "",
        finding.table, "",
        figures, "",
        f"(Generated by `{command_line(study, budget)}` on {machine()}: {jobs} jobs finished"
        + (f", {seconds / 60:.1f} min" if seconds else "") + ".)", ""])


def run(name: str, budget: str = "full", out: Path | None = None, reuse: bool = False) -> Path:
    """Run study ``name`` and write its page (``docs/studies/<name>.md`` unless ``out`` names a folder);
    ``reuse``: rebuild the page from the last sweep of that budget, running nothing."""
    from deepsweep import paths
    from deepsweep.errors import ConfigError

    study = load(name)
    if budget not in BUDGETS:
        raise ConfigError(f"study --budget: {budget!r}; allowed: {', '.join(BUDGETS)}")
    # A small budget is a smoke run: its page goes under outputs/, never over the page docs/ publishes.
    default = ("docs", "studies") if budget == "full" else ("outputs", "studies")
    folder = Path(out) if out is not None else paths.project_root().joinpath(*default)
    folder.mkdir(parents=True, exist_ok=True)
    rows, seconds = run_sweep(study, budget, reuse)
    finding = study.analyze(rows, folder, budget)
    path = folder / f"{name}.md"
    if reuse and path.is_file():  # keep the wall time the page had when its sweep ran
        import re

        found = re.search(r"jobs finished, ([0-9.]+) min", path.read_text())
        seconds = float(found.group(1)) * 60 if found else None
    path.write_text(page(study, finding, budget, len(rows), seconds, folder))
    return path
