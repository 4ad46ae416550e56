"""The sweep report: one row per job with the params that vary and the summary metrics, the best job
marked; written next to the sweep and logged to the parent run."""

from __future__ import annotations

from pathlib import Path

RANK_METRIC = "finetune.best_val_acc"
SHOWN_METRICS = ("finetune.best_val_acc", "evaluate.accuracy", "evaluate.f1_macro", "evaluate.roc_auc")


def sweep_rows(parent_run_id: str) -> list[dict]:
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000
    )
    return [
        {"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
         "params": dict(r.data.params), "metrics": dict(r.data.metrics),
         "error": r.data.tags.get("deepsweep.error", "")}
        for r in children
    ]


def render(rows: list[dict]) -> tuple[str, str]:
    """(markdown, csv) tables of the jobs, best by RANK_METRIC first."""
    keys = sorted({k for r in rows for k in r["params"]})
    varying = [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]
    rows = sorted(rows, key=lambda r: -r["metrics"].get(RANK_METRIC, float("-inf")))
    header = ["", "run", "status", *varying, *SHOWN_METRICS, "error"]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv_lines = [",".join(header[1:])]
    for i, r in enumerate(rows):
        cells = [r["run_name"], r["status"], *(r["params"].get(k, "") for k in varying)]
        cells += [f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "" for m in SHOWN_METRICS]
        cells.append(r["error"].splitlines()[0][:120].replace("|", "/") if r["error"] else "")
        mark = "best" if i == 0 and r["status"] == "FINISHED" else ""
        md.append("| " + " | ".join([mark, *cells]) + " |")
        csv_lines.append(",".join(f'"{c}"' for c in cells))
    return "\n".join(md) + "\n", "\n".join(csv_lines) + "\n"


def aggregate_over_seeds(rows: list[dict]) -> str:
    """Markdown table: finished jobs grouped by every varying param but ``seed``; mean +/- std (sample
    std, n-1) of each metric per group, best mean of RANK_METRIC first. Empty when seed did not vary."""
    import statistics

    finished = [r for r in rows if r["status"] == "FINISHED"]
    if len({r["params"].get("seed") for r in finished}) < 2:
        return ""
    keys = sorted({k for r in finished for k in r["params"]} - {"seed"})
    varying = [k for k in keys if len({r["params"].get(k) for r in finished}) > 1]
    groups: dict[tuple, list[dict]] = {}
    for r in finished:
        groups.setdefault(tuple(r["params"].get(k, "") for k in varying), []).append(r)

    def stats(members: list[dict], metric: str) -> tuple[float, float] | None:
        values = [m["metrics"][metric] for m in members if metric in m["metrics"]]
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    ranked = sorted(groups.items(), key=lambda kv: -((stats(kv[1], RANK_METRIC) or (float("-inf"), 0))[0]))
    header = ["", *varying, "seeds", *SHOWN_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (config, members) in enumerate(ranked):
        cells = ["best" if i == 0 else "", *config, str(len(members))]
        for metric in SHOWN_METRICS:
            s = stats(members, metric)
            cells.append(f"{s[0]:.4f} +/- {s[1]:.4f}" if s else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def finish_sweep(parent_run_id: str, sweep_dir: Path) -> list[dict]:
    import mlflow

    rows = sweep_rows(parent_run_id)
    md, csv_text = render(rows)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    failed = [r for r in rows if r["status"] != "FINISHED"]
    text = f"# Sweep report\n\n{len(rows)} jobs, {len(failed)} failed, ranked by {RANK_METRIC}.\n\n"
    seeds = aggregate_over_seeds(rows)
    if seeds:
        text += f"## Mean +/- std over seeds\n\n{seeds}\n## Jobs\n\n"
    text += md
    (sweep_dir / "sweep_report.md").write_text(text)
    (sweep_dir / "sweep_report.csv").write_text(csv_text)
    client = mlflow.MlflowClient()
    client.log_artifact(parent_run_id, str(sweep_dir / "sweep_report.md"))
    client.log_artifact(parent_run_id, str(sweep_dir / "sweep_report.csv"))
    client.log_metric(parent_run_id, "jobs", len(rows))
    client.log_metric(parent_run_id, "jobs_failed", len(failed))
    client.set_terminated(parent_run_id, "FAILED" if rows and len(failed) == len(rows) else "FINISHED")
    print(text)
    return rows
