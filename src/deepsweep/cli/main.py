"""``deepsweep``: the command-line interface.

    deepsweep run [hydra overrides] [-m]     run the whole pipeline in-process (a Hydra app; -m sweeps)
    deepsweep stage NAME [--params FILE]      run one stage from a params file (what dvc.yaml calls)
    deepsweep params [overrides] [-o FILE]    compose conf/ with overrides into a params file for DVC
    deepsweep options [GROUP]                 list the config groups and their options
    deepsweep fetch [DATASET...]              download raw data sets into data/, sha256-checked
    deepsweep register TARGET [--name NAME]   register a run's (or a sweep's best job's) model in MLflow
    deepsweep study [NAME] [--budget small]  run a study (a course claim as a sweep), write docs/studies/NAME.md
    deepsweep pipelines [--check]             regenerate (or check) dvc.yaml code deps and pipelines/*
    deepsweep results [--quick] [TABLE...]    rerun what README's result tables quote and rewrite them

A bad value or file stops before any work with one line naming it (exit code 2); a run whose loss or
metrics turn NaN stops with one line too (exit code 1). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

from deepsweep.config import GROUPS, ConfigError


def _cmd_stage(args: argparse.Namespace) -> int:
    from deepsweep.config import load_params
    from deepsweep.stages.pipeline import STAGES, execute

    if args.name not in STAGES:
        raise ConfigError(f"unknown stage {args.name!r}; allowed: {', '.join(STAGES)}")
    cfg = load_params(args.params)
    from deepsweep.factory import set_threads

    set_threads(cfg)
    metrics = execute(args.name, cfg, Path(args.artifacts))
    for key, value in metrics.items():
        print(f"{args.name}: {key} = {value:.4f}")
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from deepsweep.config import params_text

    text = params_text(args.overrides)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"wrote {out}")
    return 0


def _cmd_pipelines(args: argparse.Namespace) -> int:
    from deepsweep import pipelines

    if args.check:
        stale = pipelines.drift()
        for path in stale:
            print(f"{path}: differs from what `deepsweep pipelines` writes", file=sys.stderr)
        return 1 if stale else 0
    for path in pipelines.write():
        print(f"wrote {path}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from deepsweep.config import compose, validate
    from deepsweep.data.downloads import CATALOG, ensure_for
    from deepsweep.errors import DownloadError

    names, failed = args.datasets or list(CATALOG), []
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise ConfigError(f"fetch: unknown data set {', '.join(unknown)}; allowed: {', '.join(CATALOG)}")
    if args.manifest and len(names) != 1:
        raise ConfigError(f"fetch --manifest: give one data set, not {len(names)}")
    for name in names:
        if args.params:  # a pipeline's fetch stage: the data option as its params.yaml says (data.root included)
            from deepsweep.config import load_params

            cfg = load_params(args.params)
            if cfg.data.name != name:
                raise ConfigError(f"fetch {name}: {args.params} configures data={cfg.data.name}")
        else:
            cfg = validate(compose([f"data={name}", *args.overrides]))
        try:
            files = ensure_for(cfg.data)
        except DownloadError as exc:
            if len(names) == 1:
                raise
            failed.append(f"{name} ({exc})")  # the other data sets are still fetched
            continue
        print(f"{name}: {len(files)} file(s) verified in {cfg.data.root}")
        if args.manifest:
            from deepsweep.data.downloads import CATALOG
            from deepsweep.utils.io import write_json

            # What DVC records as the fetch stage's output: the bytes prepare reads, by their sha256.
            write_json(Path(args.manifest), {"data": name, "root": str(cfg.data.root),
                                             "sha256": {raw.name: raw.sha256 for raw in CATALOG[name].files}})
    if failed:
        raise DownloadError(f"fetch: {len(names) - len(failed)} of {len(names)} data sets verified; not fetched: "
                            + "; ".join(failed))
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    import mlflow
    from omegaconf import OmegaConf

    from deepsweep.tracking.models import register
    from deepsweep.tracking.runs import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(OmegaConf.create({"logger": {"tracking_uri": args.tracking_uri}})))
    version = register(args.target, args.name)
    print(f"registered models:/{version.name}/{version.version} (finetune run {version.run_id or version.tags})")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from deepsweep import studies

    if args.list or not args.name:
        for name in studies.NAMES:
            study = studies.load(name)
            print(f"{name}: {study.claim}")
        return 0
    import subprocess

    try:
        path = studies.run(args.name, args.budget, Path(args.out) if args.out else None, reuse=args.reuse)
    except subprocess.CalledProcessError as exc:  # the sweep's own output, above, says why
        print(f"deepsweep: error: study {args.name}: its sweep failed (exit status {exc.returncode}); "
              f"see {studies.sweep_dir(args.name, args.budget)}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    import subprocess

    from deepsweep import results

    try:
        return results.main(args.tables, quick=args.quick)
    except subprocess.CalledProcessError as exc:  # the command's own output, above, says why
        print(f"deepsweep results: `{' '.join(map(str, exc.cmd))}` failed with exit status {exc.returncode}",
              file=sys.stderr)
        return 1


# What `deepsweep options` lists: the groups every run composes, then the ready-made experiments, searches and launchers.
LISTED_GROUPS = (*GROUPS, "experiment", "hparams_search", "hydra/launcher")


def _cmd_options(args: argparse.Namespace) -> int:
    from deepsweep.config import options

    for group in [args.group] if args.group else LISTED_GROUPS:
        if group not in LISTED_GROUPS:
            raise ConfigError(f"unknown config group {group!r}; allowed: {', '.join(LISTED_GROUPS)}")
        print(f"{group}: {', '.join(options(group))}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """(Re)build a sweep's report from MLflow, while it runs or long after: a sweep folder or parent run id."""
    import mlflow

    from deepsweep.tracking.report import check_report_names, finish_sweep, sweep_rows
    from omegaconf import OmegaConf

    from deepsweep.tracking.runs import tracking_uri
    from deepsweep.tracking.sweep import PARENT_FILE, REPORT_FAILED

    from mlflow.exceptions import MlflowException

    target = Path(args.sweep)
    uri = args.tracking_uri
    if uri is None and (target / "multirun.yaml").is_file():  # the store the sweep itself recorded to
        uri = OmegaConf.select(OmegaConf.load(target / "multirun.yaml"), "logger.tracking_uri", default=None,
                              throw_on_resolution_failure=False)
    mlflow.set_tracking_uri(tracking_uri(OmegaConf.create({"logger": {"tracking_uri": uri}})))
    client = mlflow.MlflowClient()

    def get_run(run_id: str):
        try:
            return client.get_run(run_id)
        except MlflowException:
            from deepsweep.tracking.runs import redact

            raise FileNotFoundError(f"{args.sweep}: run {run_id} is not in the MLflow store "
                                    f"{redact(mlflow.get_tracking_uri())}; pass --tracking-uri (or set "
                                    "$MLFLOW_TRACKING_URI) to the store the sweep recorded to") from None

    if target.is_dir():
        record = target / PARENT_FILE
        if not record.is_file():
            raise FileNotFoundError(f"{target}: not a sweep folder (no {PARENT_FILE} in it)")
        run_id, out = record.read_text().strip(), target
    elif len(args.sweep) == 32 and all(c in "0123456789abcdef" for c in args.sweep):
        run_id = args.sweep
        out = Path(get_run(run_id).data.tags.get("deepsweep.sweep_dir", "."))
    else:
        raise FileNotFoundError(f"{args.sweep}: neither a sweep folder nor an MLflow run id")
    # A sweep whose own report failed (tracking.sweep) is finished by the report that now succeeds; any other
    # parent keeps its status (a sweep still running, or one that failed for another reason).
    parent = get_run(run_id)
    report_failed = (parent.info.status == "FAILED"
                     and parent.data.tags.get("deepsweep.error", "").startswith(REPORT_FAILED))
    rows = sweep_rows(run_id)
    check_report_names(rows, args.metric, args.axes)
    finish_sweep(run_id, out, rank_metric=args.metric, axes=args.axes, finish=report_failed, rows=rows)
    if report_failed:
        client.delete_tag(run_id, "deepsweep.error")
    print(f"report written to {out / 'sweep_report.md'} (and .html, .csv) and logged to run {run_id}")
    return 0


# Hydra's flags that take a value, and those that only print (nothing runs, nothing to check first).
_HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                      "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
_HYDRA_PRINT_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
                      "--shell-completion", "-sc"}


def _values(override) -> list[str]:
    """The values a sweep override takes, as strings: choices, ranges, globs over a group's options, and the
    two bounds of an interval (an Optuna search)."""
    from hydra.core.override_parser.types import Glob, IntervalSweep

    from deepsweep.config import options

    value = override.value()
    if isinstance(value, IntervalSweep):
        return [str(value.start), str(value.end)]
    if isinstance(value, Glob):  # Hydra expands globs through its config loader, which this parser lacks
        return value.filter(options(override.get_key_element()))
    return list(override.sweep_string_iterator())


def _sweep_points(overrides: list[str], searched: dict[str, str] | None = None) -> list[list[str]]:
    """Override lists that together give every value of every swept key once: each swept value with the
    first value of the other sweeps. ``searched``: a sweeper's own search space (``hydra.sweeper.params`` of
    an Optuna search), for the keys the command line does not sweep. A problem with one value then shows
    before the sweep starts, not in its job; combinations are left to each job's own check."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
        keys = {o.get_key_element() for o in parsed}
        parsed += parser.parse_overrides([f"{k}={v}" for k, v in (searched or {}).items() if k not in keys])
    except Exception as exc:  # Hydra's OverrideParseException: a syntax error in an override
        raise ConfigError(" ".join(str(exc).split())) from None
    fixed, swept = [], []
    for override in parsed:
        if override.is_sweep_override() and override.is_hydra_override():
            # Hydra refuses it too, but only after the sweep's start, in two lines and with exit code 1.
            key, value = override.input_line.split("=", 1)
            raise ConfigError(f"{key}: {value}; allowed: one value (Hydra's own settings are not swept)")
        if override.is_sweep_override():
            values = _values(override)
            if not values:  # Hydra would start the sweep, its parent run and report, for no job
                raise ConfigError(f"{override.input_line}: sweeps no value; allowed: a sweep of at least one "
                                  "(range(start, stop) counts up from start to below stop)")
            swept.append([f"{override.get_key_element()}={v}" for v in values])
        else:
            fixed.append(override.input_line)
    if not swept:
        return [fixed]
    firsts = [values[0] for values in swept if values]
    points = []
    for i, values in enumerate(swept):
        for value in values[1:] if i else values:
            points.append(fixed + firsts[:i] + [value] + firsts[i + 1:])
    return points


def _refuse_sweeps_of_one_run(overrides: list[str]) -> None:
    """A sweep's value (``seed=0,1``, ``range(0,3)``) in a run without ``-m``: Hydra stops it in three to six
    lines with exit code 1; one line here, naming the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # a syntax error: Hydra's own message, in one line
        raise ConfigError(" ".join(str(exc).split())) from None
    for override in parsed:
        if override.is_sweep_override():
            raise ConfigError(f"{override.input_line}: a sweep of several values; allowed here: one value "
                              f"(run the sweep with -m: deepsweep run -m {override.input_line})")


def _hydra_config(overrides: list[str]) -> DictConfig:
    """The ``hydra`` node of the config these overrides choose: its sweeper (an Optuna search's space) and
    launcher. Swept overrides are left out: they set the jobs' config, never Hydra's (``_sweep_points`` refuses
    a swept ``hydra.*`` key, as Hydra does)."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from deepsweep.config import _hydra_context, hydra_error

    plain = [o for o in overrides if "," not in o and "(" not in o]
    try:
        with _hydra_context():
            return hydra_compose(config_name="config", overrides=plain, return_hydra_config=True).hydra
    except (HydraException, OmegaConfBaseException) as exc:
        raise hydra_error(exc, plain) from None


def check_launcher_settings(launcher: DictConfig) -> None:
    """The settings of a launcher deepsweep ships (``hydra_plugins.deepsweep_*``), through its own
    ``check_settings``: Hydra types the other launchers' settings through their schemas when it merges an
    override, but calls a launcher's own checks only once it instantiates it, after the sweep has started."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    target = str(launcher.get("_target_", ""))
    if not target.startswith("hydra_plugins.deepsweep_"):
        return
    check = getattr(get_class(target), "check_settings", None)
    if check is not None:
        settings = OmegaConf.to_container(launcher, resolve=True)
        check(**{key: value for key, value in settings.items() if key != "_target_"})


def _search_space(hydra: DictConfig) -> dict[str, str]:
    """``hydra.sweeper.params`` (e.g. of hparams_search=digits_optuna)."""
    from omegaconf import OmegaConf

    params = OmegaConf.select(hydra, "sweeper.params")
    return {str(k): str(v) for k, v in (params or {}).items()}


def _plain_value(override: str) -> tuple[str, Any] | None:
    """``key=value`` of a key that is no config group, a value that is a number, word, bool or null: what Hydra
    sets after composing every default, so it changes nothing else. None for anything else (a group choice,
    ``+``/``~``/``@``, a list or dict, an interpolation)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from deepsweep import paths

    if override.startswith(("+", "~")) or "=" not in override:
        return None
    try:
        (parsed,) = OverridesParser.create().parse_overrides([override])
    except Exception:
        return None
    key, value = parsed.key_or_group, parsed.value()
    if (parsed.package is not None or parsed.is_sweep_override() or "/" in key or key.startswith("hydra.")
            or (paths.conf_dir() / key.replace(".", "/")).is_dir()):
        return None
    if value is not None and not isinstance(value, (bool, int, float, str)):
        return None
    if isinstance(value, str) and "${" in value:
        return None
    return key, value


def _point_configs(points: list[list[str]]) -> Iterator[DictConfig]:
    """Each sweep point's config. A point that differs from one already composed in plain values alone (a seed,
    a learning rate) is that config with those values set, as Hydra sets them after composing: a copy costs
    about 5 ms where composing costs about 130 ms (``python tools/compose_cost.py``). The 17 points of the
    32-member MNIST MLP sweep: 0.46 s against 1.97 s (``python tools/sweep_check_cost.py``). tests/test_config.py
    holds each such config equal to the one Hydra composes."""
    import copy

    from omegaconf import OmegaConf

    from deepsweep import config

    absent = object()
    composed: dict[tuple[str, ...], DictConfig] = {}
    for point in points:
        plain = dict(v for v in map(_plain_value, point) if v is not None)
        shape = tuple(o for o in point if _plain_value(o) is None) + tuple(sorted(plain))
        base = composed.get(shape)
        if base is not None and all(OmegaConf.select(base, key, default=absent) is not absent for key in plain):
            cfg = copy.deepcopy(base)
            for key, value in plain.items():
                OmegaConf.update(cfg, key, value, merge=False)
            yield cfg
            continue
        cfg = config.compose(point)
        composed.setdefault(shape, copy.deepcopy(cfg))  # a copy: the caller's checks may fill in the one it gets
        yield cfg


def check_run_args(argv: list[str]) -> None:
    """Validate what ``deepsweep run`` is about to run, before Hydra starts (and before a sweep's first job):
    every problem is a ConfigError, reported as one line with exit code 2 instead of Hydra's traceback.
    Besides each group's values, the checks across groups that the stages repeat (data kind against model
    and pretraining, the accelerator, trainer.steps_per_call), and that the tracking store answers."""
    from deepsweep.config import compose, validate
    from deepsweep.factory import check_accelerator, check_compatible, steps_per_call
    from deepsweep.tracking.runs import check_store

    if any(arg.split("=")[0] in _HYDRA_PRINT_FLAGS for arg in argv):
        return
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _HYDRA_VALUE_FLAGS
        else:
            overrides.append(arg)
    hydra = _hydra_config(overrides)
    multirun = any(arg in ("-m", "--multirun") for arg in argv) or str(hydra.get("mode")).endswith("MULTIRUN")
    if not multirun:
        _refuse_sweeps_of_one_run(overrides)
    if multirun:
        # The launcher's own settings too: a sweep that cannot launch must not open the store or start a
        # parent run first (Hydra instantiates the launcher after the sweep callback's start).
        check_launcher_settings(hydra.launcher)
    for cfg in _point_configs(_sweep_points(overrides, _search_space(hydra))):
        cfg = validate(cfg)
        check_accelerator(cfg)
        check_compatible(cfg)
        steps_per_call(cfg)
        check_store(cfg)


def _run_hydra(argv: list[str]) -> int:
    from deepsweep.cli.run import main as hydra_main

    check_run_args(argv)
    from deepsweep.errors import Reported

    sys.argv = ["deepsweep run", *argv]
    try:
        hydra_main()
    except Reported as reported:
        raise reported.error from None
    return 0


def _fail(exc: BaseException) -> int:
    """One line on stderr and the exit code: 2 for input that cannot run, 1 for a run that failed."""
    print(f"deepsweep: error: {exc}", file=sys.stderr)
    from deepsweep.errors import DataFileError

    return 2 if isinstance(exc, (ConfigError, FileNotFoundError, DataFileError)) else 1


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit: a reader that left (`| head`) is handled below
        return code
    except BrokenPipeError:
        # `deepsweep options | head -3`: the reader took what it wanted and left. No traceback: stdout goes to
        # devnull so the interpreter's own flush at exit cannot raise again (Python's signal docs), and the
        # exit code is a shell's for a process that SIGPIPE ended.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        # Ctrl-C: its MLflow runs end KILLED (tracking.runs.start_run, and a sweep's parent run at exit); one line,
        # and the shell's exit code for SIGINT.
        if "deepsweep.tracking.sweep" in sys.modules:  # a sweep ran here: its parent run is ended at exit
            sys.modules["deepsweep.tracking.sweep"].interrupted()
        print("deepsweep: interrupted; its MLflow runs end KILLED (a sweep run again on the same hydra.sweep.dir "
              "keeps its finished jobs, dvc repro its finished stages)", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    from deepsweep.errors import DataFileError, DownloadError, FolderInUse, NonFiniteError, SweepFailed, TrackingError

    argv = sys.argv[1:] if argv is None else argv
    # --debug (anywhere before Hydra's overrides): show tracebacks instead of one-line errors.
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    reported = (ConfigError, FileNotFoundError, DataFileError, DownloadError, NonFiniteError, FolderInUse,
                TrackingError, SweepFailed)
    if argv and argv[0] == "run":
        # Everything after `run` belongs to Hydra (overrides, -m, --cfg, --help).
        try:
            return _run_hydra(argv[1:])
        except reported as exc:
            if debug:
                raise
            return _fail(exc)
    parser = argparse.ArgumentParser(prog="deepsweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the whole pipeline in-process (Hydra app: overrides, -m for sweeps)")
    p = sub.add_parser("stage", help="run one pipeline stage from a params file (called by dvc.yaml)")
    p.add_argument("name", help="prepare | pretrain | finetune | evaluate")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--artifacts", default="artifacts", help="folder of stage outputs (default: artifacts)")
    p.set_defaults(func=_cmd_stage)
    p = sub.add_parser("params", help="compose conf/ with overrides into a params file")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=lenet init=xavier_uniform")
    p.add_argument("-o", "--output", default="params.yaml", help="file to write, - for stdout (default: params.yaml)")
    p.set_defaults(func=_cmd_params)
    p = sub.add_parser("report", help="(re)build a sweep's report: tables, heatmap, learning curves")
    p.add_argument("sweep", help="the sweep folder (outputs/sweeps/...) or the parent run id")
    p.add_argument("--metric", help="rank by this metric (default: the sweep's optimized_metric)")
    p.add_argument("--axes", nargs=2, metavar=("ROWS", "COLUMNS"), help="heatmap params, e.g. init.name regularizer.name")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("pipelines", help="regenerate the root dvc.yaml's code deps and pipelines/*/{dvc,params}.yaml")
    p.add_argument("--check", action="store_true", help="list the files that differ, change nothing (exit 1 if any)")
    p.set_defaults(func=_cmd_pipelines)
    p = sub.add_parser("fetch", help="download the raw files of data sets (default: all) into data.root, sha256-checked "
                                     "($DEEPSWEEP_DATA_MIRROR: another base URL or folder)")
    p.add_argument("datasets", nargs="*", help="data options, e.g. mnist cora (default: every one with raw files)")
    p.add_argument("--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --override data.root=/srv/mnist")
    p.add_argument("--manifest", metavar="FILE", help="also write the files' sha256 to FILE (a DVC fetch stage's output)")
    p.add_argument("--params", help="read the data option from this params file (a pipeline's params.yaml)")
    p.set_defaults(func=_cmd_fetch)
    p = sub.add_parser("register", help="register the fine-tuned model of a run, or of a sweep's best job, in the "
                                        "MLflow model registry")
    p.add_argument("target", help="a sweep folder, or an MLflow run id: sweep parent, pipeline or finetune run")
    p.add_argument("--name", help="registered model name (default: deepsweep-<model>-<data>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.set_defaults(func=_cmd_register)
    p = sub.add_parser("study", help="run a study (a claim of the course as a sweep) and write its page in docs/studies/")
    p.add_argument("name", nargs="?", help="the study (--list shows them)")
    p.add_argument("--list", action="store_true", help="list the studies and their claims")
    p.add_argument("--budget", default="full", help="full (what the page reports) or small (a few short jobs)")
    p.add_argument("--out", help="folder for the page and figures (default: docs/studies)")
    p.add_argument("--reuse", action="store_true", help="rebuild the page from the study's last sweep, running nothing")
    p.set_defaults(func=_cmd_study)
    p = sub.add_parser("results", help="rerun what README's result tables quote and rewrite them (--quick: check a few rows)")
    p.add_argument("tables", nargs="*", help="tables to redo (default: all, in README's order; "
                                              "an unknown name lists them)")
    p.add_argument("--quick", action="store_true", help="rerun the quick rows (dvc repro -f rewrites their outputs and "
                                                        "dvc.lock, as any repro) and check them against README, "
                                                        "which stays as it is (exit 1 if a cell differs)")
    p.set_defaults(func=_cmd_results)
    p = sub.add_parser("options", help="list config groups and their options")
    p.add_argument("group", nargs="?")
    p.set_defaults(func=_cmd_options)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except reported as exc:
        if debug:
            raise
        return _fail(exc)


if __name__ == "__main__":
    sys.exit(main())
