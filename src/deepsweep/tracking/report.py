"""The sweep report: one row per job with the params that vary and the summary metrics, the best job
marked; written next to the sweep and logged to the parent run."""

from __future__ import annotations

import collections
import csv
import io
import os
from pathlib import Path
from typing import Any

RANK_METRIC = "finetune.best_val_acc"
SHOWN_METRICS = ("finetune.best_val_acc", "evaluate.accuracy", "evaluate.f1_macro", "evaluate.roc_auc",
                 "evaluate.probe_accuracy")
CURVE_METRICS = ("train/loss", "val/loss", "val/acc")
METRIC_TAG = "deepsweep.optimized_metric"


def _shown(rank_metric: str) -> tuple[str, ...]:
    return SHOWN_METRICS if rank_metric in SHOWN_METRICS else (rank_metric, *SHOWN_METRICS)


def _descending(metric: str) -> bool:
    """Losses and errors rank low-first; everything else (accuracy, F1, AUC) high-first."""
    return not any(word in metric for word in ("loss", "error", "mse"))


def job_key(run: Any) -> str:
    """Which job of its sweep a child run is an attempt at: its overrides (the run name of a job refused before
    it started)."""
    return run.data.tags.get("deepsweep.overrides") or run.info.run_name or run.info.run_id


def latest_attempts(children: list) -> list:
    """One run per job, in start order: its newest FINISHED attempt, else its newest. A resumed sweep (the same
    folder again) runs each unfinished job anew; the interrupted attempts stay in MLflow but are not jobs."""
    chosen: dict[str, Any] = {}
    for run in sorted(children, key=lambda r: r.info.start_time or 0):
        key = job_key(run)
        if key not in chosen or run.info.status == "FINISHED" or chosen[key].info.status != "FINISHED":
            chosen[key] = run
    return sorted(chosen.values(), key=lambda r: r.info.start_time or 0)


def sweep_rows(parent_run_id: str) -> list[dict]:
    """One row per job of the sweep (its latest attempt, ``latest_attempts``): status, params, summary metrics,
    error, its stage runs, and ``attempts``, the child runs its job has had."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    experiment = [parent.info.experiment_id]
    every = client.search_runs(
        experiment, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000
    )
    attempts = collections.Counter(job_key(run) for run in every)
    children = latest_attempts(every)
    rows = []
    for r in children:
        # One small query per job: a query over every finetune run of the experiment grows with all the
        # history in the store (0.6 s at 345 runs), this with the sweep alone (6 ms a job).
        stages = client.search_runs(experiment, max_results=20,
                                    filter_string=f"tags.mlflow.parentRunId = '{r.info.run_id}'")
        stage_runs = {}
        for name in ("finetune", "evaluate"):
            run = [s.info.run_id for s in stages if s.data.tags.get("deepsweep.stage") == name]
            kept = r.data.tags.get(f"deepsweep.resumed.{name}")  # a resumed job's stage kept from before
            if run or kept:
                stage_runs[name] = run[0] if run else kept
        rows.append({"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
                     "params": dict(r.data.params), "metrics": dict(r.data.metrics),
                     "error": r.data.tags.get("deepsweep.error", ""), "stage_runs": stage_runs,
                     "attempts": attempts[job_key(r)]})
    return rows


def _score(metrics: dict, rank_metric: str) -> float:
    """Sort key: best first, missing last."""
    value = metrics.get(rank_metric)
    if value is None or value != value:
        return float("inf")
    return -value if _descending(rank_metric) else value


def render(rows: list[dict], rank_metric: str = RANK_METRIC) -> tuple[str, str]:
    """(markdown, csv) tables of the jobs, best by ``rank_metric`` first."""
    keys = sorted({k for r in rows for k in r["params"]})
    varying = _independent([k for k in keys if len({r["params"].get(k) for r in rows}) > 1], rows)
    rows = sorted(rows, key=lambda r: _score(r["metrics"], rank_metric))
    shown = _shown(rank_metric)
    header = ["", "run", "status", *varying, *shown, "error"]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header[1:])
    for i, r in enumerate(rows):
        cells = [str(r["run_name"]), r["status"], *(str(r["params"].get(k, "")) for k in varying)]
        cells += [f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "" for m in shown]
        cells.append(r["error"].splitlines()[0][:120] if r["error"] else "")
        mark = "best" if i == 0 and r["status"] == "FINISHED" and rank_metric in r["metrics"] else ""
        md.append("| " + " | ".join([mark, *(markdown_cell(c) for c in cells)]) + " |")
        writer.writerow([spreadsheet_cell(c) for c in cells])
    return "\n".join(md) + "\n", buffer.getvalue()


def markdown_cell(text: str) -> str:
    """A table cell that cannot break the table or inject markup: pipes, newlines and HTML escaped."""
    import html

    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def spreadsheet_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: one starting with =, +, -, @ (a formula) gets a leading
    quote, unless it is a plain number (a negative metric)."""
    text = str(text)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def group_by_config(rows: list[dict]) -> tuple[list[str], dict[tuple, list[dict]]]:
    """Finished jobs grouped by every varying param but ``seed``: (the varying keys, groups)."""
    finished = [r for r in rows if r["status"] == "FINISHED"]
    keys = sorted({k for r in finished for k in r["params"]} - {"seed"})
    varying = _independent([k for k in keys if len({r["params"].get(k) for r in finished}) > 1], finished)
    groups: dict[tuple, list[dict]] = {}
    for r in finished:
        groups.setdefault(tuple(r["params"].get(k, "") for k in varying), []).append(r)
    return varying, groups


def _mean(members: list[dict], metric: str) -> float | None:
    values = [m["metrics"][metric] for m in members if metric in m["metrics"]]
    return sum(values) / len(values) if values else None


def aggregate_over_seeds(rows: list[dict], rank_metric: str = RANK_METRIC) -> str:
    """Markdown table: finished jobs grouped by every varying param but ``seed``; mean +/- std (sample
    std, n-1) of each metric per group, best mean of ``rank_metric`` first. Empty when seed did not vary."""
    import statistics

    finished = [r for r in rows if r["status"] == "FINISHED"]
    if len({r["params"].get("seed") for r in finished}) < 2:
        return ""
    varying, groups = group_by_config(rows)

    def stats(members: list[dict], metric: str) -> tuple[float, float] | None:
        values = [m["metrics"][metric] for m in members if metric in m["metrics"]]
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    ranked = sorted(groups.items(), key=lambda kv: _score({rank_metric: _mean(kv[1], rank_metric)}, rank_metric))
    shown = _shown(rank_metric)
    header = ["", *varying, "seeds", *shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (config, members) in enumerate(ranked):
        ranked_by = _mean(members, rank_metric)
        cells = ["best" if i == 0 and ranked_by is not None and ranked_by == ranked_by else "", *config, str(len(members))]
        for metric in shown:
            s = stats(members, metric)
            cells.append(f"{s[0]:.4f} +/- {s[1]:.4f}" if s else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


ENSEMBLE_SCORES = (("accuracy", "accuracy"), ("loss", "NLL"), ("ece", "ECE"))


def _predictions(evaluate_run_id: str) -> dict | None:
    """A job's saved test probabilities (the evaluate stage's ``evaluation/predictions.pt``), or None where
    the run has none (a run of an older deepsweep, an artifact store out of reach)."""
    import tempfile

    import mlflow
    import torch
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    if MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name not in os.environ:  # a bar per job would bury the report
        os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=evaluate_run_id, dst_path=folder,
                                                       artifact_path="evaluation/predictions.pt")
        except Exception:  # noqa: BLE001 - a missing artifact only leaves the job out of its ensemble
            return None
        return torch.load(path, weights_only=True)


def deep_ensembles(rows: list[dict]) -> tuple[str, list[dict]]:
    """Deep ensembles (Lakshminarayanan et al. 2017) from the seeds of a sweep: per setting (every varying
    param but seed), the mean of its finished jobs' test probabilities, scored like one model (accuracy,
    NLL, ECE) next to the mean score of its members. A markdown table (empty where no setting has two
    seeds with saved predictions) and one dict per ensemble. Imports torch only when a setting has seeds."""
    finished = [r for r in rows if r["status"] == "FINISHED" and "evaluate" in r["stage_runs"]]
    if len({r["params"].get("seed") for r in finished}) < 2:
        return "", []
    varying, groups = group_by_config(finished)
    from deepsweep.calibration import probability_metrics

    import torch

    header = ["", *varying, "members", *(f"{label}: {who}" for _, label in ENSEMBLE_SCORES
                                           for who in ("members (mean)", "ensemble"))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    found = []
    for config, members in groups.items():
        loaded = [p for p in (_predictions(m["stage_runs"]["evaluate"]) for m in members) if p is not None]
        if len(loaded) < 2 or any(not torch.equal(p["target"], loaded[0]["target"]) for p in loaded):
            continue  # fewer than two members with predictions, or members tested on different inputs
        target, bins = loaded[0]["target"], int(members[0]["params"].get("evaluate.calibration_bins", 15))
        single = [probability_metrics(p["probs"], target, bins) for p in loaded]
        ensemble = probability_metrics(torch.stack([p["probs"] for p in loaded]).mean(dim=0), target, bins)
        member_mean = {k: sum(m[k] for m in single) / len(single) for k in ensemble}
        found.append({"config": dict(zip(varying, config)), "members": len(loaded), "ensemble": ensemble,
                      "member_mean": member_mean})
        cells = ["", *config, str(len(loaded))]
        cells += [f"{v:.4f}" for key, _ in ENSEMBLE_SCORES for v in (member_mean[key], ensemble[key])]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return ("\n".join(lines) + "\n" if found else ""), found


def sweep_axes(overrides: str, rows: list[dict]) -> list[str]:
    """The params a sweep varies, in the order its command line swept them (``init=a,b`` -> ``init.name``),
    then any other varying param; ``seed`` and params that merely follow another one are left out."""
    finished = [r for r in rows if r["status"] == "FINISHED"]
    keys = sorted({k for r in finished for k in r["params"]} - {"seed"})
    varying = [k for k in keys if len({r["params"].get(k) for r in finished}) > 1]
    swept = []
    for token in overrides.split():
        key, _, value = token.partition("=")
        if "," in value or value.startswith(("range(", "glob(", "choice(", "interval(")):
            name = key if key in varying else f"{key}.name"
            if name in varying and name not in swept:
                swept.append(name)
    return _independent(swept + [k for k in varying if k.endswith(".name")] + varying, finished)


def _independent(keys: list[str], rows: list[dict]) -> list[str]:
    """``keys`` without those an earlier kept key determines (in a sweep over pretrain options,
    pretrain.task.loss follows pretrain.name): one column per real axis. Option names are kept first,
    being what the sweep's command line chose."""
    kept: list[str] = []
    for key in [k for k in keys if k.endswith(".name")] + keys:
        if key in kept:
            continue
        determined = any(_determines(other, key, rows) for other in kept)
        if not determined:
            kept.append(key)
    return [k for i, k in enumerate(keys) if k in kept and k not in keys[:i]]


def _determines(a: str, b: str, rows: list[dict]) -> bool:
    """Whether ``a`` is an option's name (``pretrain.name``), ``b`` a field of that option
    (``pretrain.task.loss``) and the one fixes the other across ``rows``. Only then: in a search of few trials
    (2 Optuna trials) any varying param fixes every other, and each is still an axis of its own."""
    if not (a.endswith(".name") and b.startswith(a[: -len("name")])):
        return False
    seen: dict = {}
    for r in rows:
        va, vb = r["params"].get(a), r["params"].get(b)
        if seen.setdefault(va, vb) != vb:
            return False
    return True


def heatmap(rows: list[dict], axes: list[str], rank_metric: str, path: Path) -> bool:
    """``rank_metric`` averaged over everything but the two axes, as a PNG; False when there are no two axes."""
    from deepsweep.plots import heatmap_png

    if len(axes) < 2:
        return False
    a, b = axes[:2]
    finished = [r for r in rows if r["status"] == "FINISHED" and rank_metric in r["metrics"]]
    cells: dict[tuple[str, str], list[float]] = {}
    for r in finished:
        cells.setdefault((r["params"].get(a, ""), r["params"].get(b, "")), []).append(r["metrics"][rank_metric])
    if not cells:
        return False
    rows_, cols = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    heatmap_png({k: sum(v) / len(v) for k, v in cells.items()}, rows_, cols, (a, b, rank_metric), path)
    return True


def learning_curves(rows: list[dict], rank_metric: str, axes: list[str], path: Path, top: int = 3) -> bool:
    """Per-epoch fine-tuning curves of the best job of each of the ``top`` best configs, labelled by ``axes``."""
    import mlflow

    from deepsweep.plots import curves_png

    varying, groups = group_by_config(rows)
    ranked = sorted(groups.items(), key=lambda kv: min(_score(m["metrics"], rank_metric) for m in kv[1]))[:top]
    client = mlflow.MlflowClient()
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for config, members in ranked:
        job = min(members, key=lambda m: _score(m["metrics"], rank_metric))
        stage_run = job["stage_runs"].get("finetune")
        if stage_run is None:
            continue
        label = " ".join(f"{k}={job['params'].get(k)}" for k in axes) or job["run_name"]
        curves[label] = {m: [(h.step, h.value) for h in client.get_metric_history(stage_run, m)]
                              for m in CURVE_METRICS}
    if not any(points for per_run in curves.values() for points in per_run.values()):
        return False
    curves_png(curves, path, f"fine-tuning curves of the top {len(curves)} configs")
    return True


def _html(title: str, sections: list[tuple[str, str]], images: list[str]) -> str:
    """A self-contained page: the Markdown tables as HTML tables, the PNGs beside it."""
    import html

    def table(md: str) -> str:
        lines = [line for line in md.strip().splitlines() if line.startswith("|") and not line.startswith("|---")]
        out = ["<table>"]
        for i, line in enumerate(lines):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if i == 0 else "td"
            cls = ' class="best"' if i and cells and cells[0] == "best" else ""
            out.append(f"<tr{cls}>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
        return "\n".join(out + ["</table>"])

    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f'<img src="{name}" alt="{name}">' for name in images]
    for heading, md in sections:
        body += [f"<h2>{html.escape(heading)}</h2>", table(md) if md.lstrip().startswith("|") else
                 f"<pre>{html.escape(md)}</pre>"]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}tr.best{background:#e6f4ea}img{max-width:48%;margin:4px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def check_report_names(rows: list[dict], rank_metric: str | None, axes: list[str] | None) -> None:
    """A metric to rank by, or an axis, that no job of the sweep recorded stops ``deepsweep report`` in one line
    before it rewrites the report (which would rank by nothing, or draw an axis of blanks)."""
    from deepsweep.errors import ConfigError

    if rank_metric is not None:
        metrics = sorted({k for r in rows for k in r["metrics"]})
        if rank_metric not in metrics:
            raise ConfigError(f"--metric: {rank_metric!r} was recorded by no job of the sweep; allowed: "
                              f"{', '.join(metrics) or 'none yet (no job has finished a stage)'}")
    params = {k for r in rows for k in r["params"]}
    for axis in axes or []:
        if axis not in params:
            varying = sorted(k for k in params if len({r["params"].get(k) for r in rows}) > 1)
            raise ConfigError(f"--axes: {axis!r} is no param of the sweep's jobs; those that vary: "
                              f"{', '.join(varying) or 'none'} (any of the {len(params)} params a job records)")


def finish_sweep(parent_run_id: str, sweep_dir: Path, rank_metric: str | None = None,
                 axes: list[str] | None = None, finish: bool = True, rows: list[dict] | None = None) -> list[dict]:
    """Write the sweep report into ``sweep_dir`` (md, csv, html, heatmap and learning-curve PNGs), log it
    to the parent run and (with ``finish``) end the parent: FAILED only when every job failed. ``rows``: the
    sweep's ``sweep_rows``, where the caller has read them already."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    rank_metric = rank_metric or parent.data.tags.get(METRIC_TAG, RANK_METRIC)
    rows = sweep_rows(parent_run_id) if rows is None else rows
    md, csv_text = render(rows, rank_metric)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    failed = [r for r in rows if r["status"] != "FINISHED"]
    title = f"Sweep report: {sweep_dir.name}"
    earlier = sum(r["attempts"] - 1 for r in rows)
    text = (f"# {title}\n\n{len(rows)} jobs, {len(failed)} failed, ranked by {rank_metric}."
            + (f" Each job's latest attempt counts: {earlier} earlier attempt{'s' * (earlier != 1)} of resumed jobs "
               "(interrupted runs, still in MLflow under this sweep) left out." if earlier else "") + "\n\n")
    sections: list[tuple[str, str]] = []
    seeds = aggregate_over_seeds(rows, rank_metric)
    if seeds:
        sections.append(("Mean +/- std over seeds", seeds))
    ensembles_md, ensembles = deep_ensembles(rows)
    if ensembles_md:
        sections.append(("Deep ensembles of the seeds (test probabilities averaged)", ensembles_md))
    sections.append(("Jobs", md))
    if failed:
        sections.append(("Failed jobs", "\n".join(f"- {r['run_name']}: {r['error'] or r['status']}"
                                                 for r in failed) + "\n"))
    axes = axes or sweep_axes(parent.data.tags.get("deepsweep.overrides", ""), rows)
    images = []
    if heatmap(rows, axes, rank_metric, sweep_dir / "sweep_heatmap.png"):
        images.append("sweep_heatmap.png")
        text += f"Heatmap: {rank_metric} over {axes[0]} x {axes[1]}.\n\n"
    if learning_curves(rows, rank_metric, axes, sweep_dir / "sweep_curves.png"):
        images.append("sweep_curves.png")
    text += "".join(f"![{name}]({name})\n" for name in images) + "\n" * bool(images)
    text += "".join(f"## {heading}\n\n{body}\n" for heading, body in sections)
    (sweep_dir / "sweep_report.md").write_text(text)
    (sweep_dir / "sweep_report.csv").write_text(csv_text)
    (sweep_dir / "sweep_report.html").write_text(_html(title, sections, images))
    for name in ("sweep_report.md", "sweep_report.csv", "sweep_report.html", *images):
        client.log_artifact(parent_run_id, str(sweep_dir / name))
    if len(ensembles) == 1:  # one setting over seeds: its ensemble's scores are the sweep's own
        for key, value in ensembles[0]["ensemble"].items():
            client.log_metric(parent_run_id, f"ensemble.{key}", value)
        for key, value in ensembles[0]["member_mean"].items():
            client.log_metric(parent_run_id, f"ensemble.member_mean_{key}", value)
    client.log_metric(parent_run_id, "jobs", len(rows))
    client.log_metric(parent_run_id, "jobs_failed", len(failed))
    if finish:
        client.set_terminated(parent_run_id, "FAILED" if rows and len(failed) == len(rows) else "FINISHED")
    print(text)
    return rows
