"""Composing, validating and flattening deepsweep configs.

One config shape serves every entry point: Hydra composes it from ``conf/`` for ``deepsweep run``;
``params.yaml`` holds the same shape, resolved, for DVC stages. Both pass through :func:`validate`,
whose schema is the composed default of each chosen group option: an unknown option, an unknown key,
a missing key or a value of the wrong type stops the run before any heavy work, with a message that
names the key and what is allowed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from deepsweep import paths
from deepsweep.errors import ConfigError  # re-exported: config.ConfigError is what callers catch

# Config groups every run composes, in the order they appear in conf/config.yaml.
GROUPS = (
    "data",
    "model",
    "activation",
    "init",
    "regularizer",
    "loss",
    "optimizer",
    "scheduler",
    "pretrain",
    "finetune",
    "evaluate",
    "trainer",
    "logger",
)
TOP_LEVEL = ("seed", "experiment_name", "optimized_metric")


def _invalid(errors: list[str]) -> ConfigError:
    """One problem: one line. Several: one line each."""
    return ConfigError(errors[0] if len(errors) == 1 else "invalid config:\n  " + "\n  ".join(errors))


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/."""
    folder = paths.conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


@contextlib.contextmanager
def _hydra_context() -> Iterator[None]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        # Inside a @hydra.main app: it already searches conf/.
        yield
        return
    with initialize_config_dir(config_dir=str(paths.conf_dir()), version_base="1.3"):
        yield


def compose(overrides: Iterable[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with Hydra command-line style overrides (``model=lenet``, ``seed=1``).

    Hydra's own composition errors (an unknown option, a key not in the config, override syntax) become
    ConfigError with Hydra's message, so every entry point reports them as one line."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    try:
        with _hydra_context():
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise hydra_error(exc, overrides) from None
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    return cfg


def hydra_error(exc: Exception, overrides: list[str]) -> ConfigError:
    """Hydra's composition error as one line. A key that is not in the config gets the validator's message (the
    keys allowed there, and the closest one) instead of Hydra's advice to append it with ``+``, which only
    leads to that message."""
    message = " ".join(str(exc).split("\nConfig search path")[0].split())  # Hydra's messages span lines
    unknown = re.match(r"Could not override '([^']+)'", message)
    if unknown and unknown.group(1).startswith("hydra."):
        return _unknown_hydra_key(unknown.group(1), overrides) or ConfigError(message)
    cause = exc.__cause__ or exc.__context__
    if message.startswith("Error merging override") and cause is not None:
        # A value the schema refuses: Hydra's first line names the override, its cause what is wrong with it.
        reason = str(cause).splitlines()[0]
        return ConfigError(f"{message.removeprefix('Error merging override ')}: {reason}")
    if unknown:
        appended = [f"+{o}" if o.split("=", 1)[0] == unknown.group(1) else o for o in overrides]
        try:
            validate(compose(appended))
        except ConfigError as explained:
            return explained
    return ConfigError(message)


def _unknown_hydra_key(key: str, overrides: list[str]) -> ConfigError | None:
    """``hydra.launcher.max_members`` under a launcher that has no such setting: the settings it has, and the
    launchers of conf/hydra/ that have the key (Hydra's own advice, to append it with ``+``, leads nowhere)."""
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        with _hydra_context():
            node = OmegaConf.select(hydra_compose(config_name="config", overrides=rest, return_hydra_config=True),
                                    parent)
    except Exception:
        return None
    if not isinstance(node, DictConfig):
        return None
    group = parent.replace(".", "/")  # hydra.launcher -> hydra/launcher
    having = sorted(f.stem for f in (paths.conf_dir() / group).glob("*.yaml") if leaf in (OmegaConf.load(f) or {}))
    settings = ", ".join(sorted(str(k) for k in node if not str(k).startswith("_"))) or "none"
    elsewhere = f"; it is a setting of {' and '.join(f'{group}={name}' for name in having)}" if having else ""
    return ConfigError(f"{key}: not a setting of this {group} (its settings: {settings}){elsewhere}")


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, ListConfig)):
        return "list"
    if isinstance(value, (dict, DictConfig)):
        return "mapping"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(value), type(value).__name__)


def _compatible(expected: Any, value: Any) -> bool:
    if expected is None or value is None:
        # Null is judged in _check: where the default is null, the field is unset and any scalar may set it.
        return True
    if isinstance(expected, bool):
        return isinstance(value, bool)
    if isinstance(expected, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(expected))


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


BUILD_KEYS = ("_target_", "_partial_", "_args_")


def _foreign_builds(reference: Any, value: Any, key: str, source: str, errors: list[str]) -> None:
    """What gets built comes only from the option files: a params file or an override that names another
    callable would run code the config groups never offered. Checked before every other key, and alone: the
    rules that ask what a group's class is (graph data, say) cannot judge a config whose class is refused."""
    if isinstance(reference, list) and reference and isinstance(value, list):
        for i, item in enumerate(value):
            _foreign_builds(reference[0], item, f"{key}[{i}]", source, errors)
        return
    if not (isinstance(reference, Mapping) and isinstance(value, Mapping)):
        return
    for k, ref in reference.items():
        if k not in value:
            continue
        if str(k) in BUILD_KEYS:
            if value[k] != ref:
                errors.append(f"{key}.{k}: {_show(value[k])} is not allowed; what is built comes only from "
                              f"{source} ({ref!r}): choose another option of the group instead")
        else:
            _foreign_builds(ref, value[k], f"{key}.{k}", source, errors)


def _number_for_word(reference: Any, value: Any, rule: Any) -> bool:
    """An integer where the option file has a word, for a rule that names its words: judged as that word."""
    return (isinstance(reference, str) and isinstance(value, int) and not isinstance(value, bool)
            and rule is not None and rule.names)


def _check(reference: Any, value: Any, key: str, source: str, errors: list[str], whole: Mapping[str, Any]) -> None:
    """Compare ``value`` with the option file's default ``reference`` at ``key``: its shape and type, then the
    range rule of the key (deepsweep.constraints). ``whole`` is the full config, for rules that read another key."""
    from deepsweep.constraints import numeric, rule_for

    if isinstance(reference, Mapping):
        if not isinstance(value, Mapping):
            errors.append(f"{key}: expected a mapping, got {_type_name(value)} {_show(value)}")
            return
        for k in value:
            if k not in reference:
                allowed = ", ".join(sorted(str(r) for r in reference if not str(r).startswith("_")))
                errors.append(f"{key}.{k}: unknown key (not in {source}){_did_you_mean(str(k), list(reference))}; "
                              f"allowed keys: {allowed}")
        for k, ref in reference.items():
            if k not in value:
                errors.append(f"{key}.{k}: missing (default in {source}: {ref!r})")
            elif str(k) not in BUILD_KEYS:  # checked first, by _foreign_builds
                _check(ref, value[k], f"{key}.{k}", source, errors, whole)
        return
    rule = rule_for(key)
    if value is None:
        if reference is not None and not (rule and rule.nullable):
            allowed = rule.allowed if rule else f"a {_type_name(reference)}"
            errors.append(f"{key}: null is not allowed here; allowed: {allowed} (default in {source}: {reference!r})")
        return
    if reference is None and isinstance(value, (Mapping, list)):
        errors.append(f"{key}: expected a single value or null (default in {source}: null), "
                      f"got {_type_name(value)} {_show(value)}")
        return
    if isinstance(reference, list):
        if not isinstance(value, list):
            errors.append(f"{key}: expected a list like {reference!r}, got {_type_name(value)} {_show(value)}")
            return
        if reference:
            before = len(errors)
            for i, item in enumerate(value):
                if isinstance(reference[0], (Mapping, list)):
                    _check(reference[0], item, f"{key}[{i}]", source, errors, whole)
                elif not _compatible(reference[0], item):
                    errors.append(f"{key}[{i}]: expected {_type_name(reference[0])} (default in {source}: "
                                  f"{reference!r}), got {_type_name(item)} {_show(item)}")
            if len(errors) > before:
                return
    elif _number_for_word(reference, value, rule):
        # trainer.precision=16: Hydra reads the int 16, which Lightning takes as it takes '16'.
        if not rule.accepts(str(value), whole):
            errors.append(f"{key}: {_show(value)} is not allowed; allowed: {rule.allowed}")
        return
    elif not _compatible(reference, value):
        errors.append(
            f"{key}: expected {_type_name(reference)} (default in {source}: {reference!r}), "
            f"got {_type_name(value)} {_show(value)}"
        )
        return
    # Rules are about numbers: a name or a flag under a pattern such as model.* is the type check's alone.
    # (a field whose default is null has no type to check: its rule says what it takes.)
    numbers = reference is None or numeric(reference) or numeric(value) or (isinstance(reference, list) and value == [])
    if rule is not None and (numbers or rule.names) and not rule.accepts(value, whole):
        errors.append(f"{key}: {_show(value)} is {'not allowed' if rule.names else 'out of range'}; "
                      f"allowed: {rule.allowed}")


@functools.lru_cache(maxsize=64)
def _reference(conf_dir: str, choices: tuple[str, ...]) -> dict:
    """The defaults of the chosen options: the schema a config is checked against (cached: a sweep or a test
    checks many configs of the same options).

    Read straight from the option files, each a plain mapping of its group, and config.yaml's top-level keys:
    composing through Hydra gives the same (tests/test_config.py holds the two equal for every option) but
    costs ~0.6 s of every stage process's start-up. An option file with its own defaults list or an
    interpolation is composed by Hydra."""
    root = Path(conf_dir)
    top = OmegaConf.load(root / "config.yaml")
    reference: dict = {key: top[key] for key in TOP_LEVEL if key in top}
    for choice in choices:
        group, name = choice.split("=", 1)
        node = OmegaConf.load(root / group / f"{name}.yaml")
        try:
            if "defaults" in node:
                raise ValueError("a defaults list")
            reference[group] = OmegaConf.to_container(node, resolve=True)
        except Exception:  # noqa: BLE001 - a defaults list or an interpolation: Hydra knows what it means
            return OmegaConf.to_container(compose(list(choices)), resolve=True)
    return reference


def validate(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    """Check a full config against the defaults of the group options it names. Returns it as a DictConfig.

    Raises ConfigError listing every problem found, each with its full key.
    """
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    errors: list[str] = []
    choices: list[str] = []
    for group in GROUPS:
        node = cfg.get(group)
        allowed = options(group)
        if not isinstance(node, DictConfig):
            errors.append(f"{group}: missing config group (choose one of: {', '.join(allowed)})")
            continue
        name = node.get("name")
        if name not in allowed:
            errors.append(f"{group}.name: unknown {group} option {name!r}; allowed: {', '.join(allowed)}")
            continue
        choices.append(f"{group}={name}")
    for key in cfg:
        if key not in GROUPS and key not in TOP_LEVEL:
            errors.append(f"{key}: unknown top-level key{_did_you_mean(str(key), [*GROUPS, *TOP_LEVEL])}; "
                          f"allowed: {', '.join(GROUPS + TOP_LEVEL)}")
    if errors:
        raise _invalid(errors)

    reference = copy.deepcopy(_reference(str(paths.conf_dir()), tuple(choices)))
    value = OmegaConf.to_container(cfg, resolve=True)
    refused: list[str] = []
    for group in GROUPS:
        _foreign_builds(reference[group], value[group], group, f"conf/{group}/{value[group]['name']}.yaml", refused)
    if refused:
        raise _invalid(refused)
    # pretrain.optimizer overrides fields of whichever optimizer is chosen: checked against that one.
    reference["pretrain"].pop("optimizer", None)
    overrides = value["pretrain"].pop("optimizer", None) or {}
    if not isinstance(overrides, Mapping):
        errors.append(f"pretrain.optimizer: expected a mapping of optimizer fields, got {overrides!r}")
        overrides = {}
    fields = {k: v for k, v in reference["optimizer"].items() if k != "name" and not k.startswith("_")}
    for key, field_value in overrides.items():
        if key not in fields:
            errors.append(f"pretrain.optimizer.{key}: optimizer={value['optimizer']['name']} has no field {key!r}; "
                          f"its fields: {', '.join(fields)}")
        else:
            if field_value is not None:  # null: as the optimizer group says
                _check(fields[key], field_value, f"pretrain.optimizer.{key}",
                       f"conf/optimizer/{value['optimizer']['name']}.yaml", errors, value)
    for group in GROUPS:
        _check(reference[group], value[group], group, f"conf/{group}/{value[group]['name']}.yaml", errors, value)
    for key in TOP_LEVEL:
        if key in value:
            _check(reference[key], value[key], key, "conf/config.yaml", errors, value)
    from deepsweep.stages import STAGES

    metric = cfg.get("optimized_metric")
    if metric is not None and str(metric).split(".")[0] not in STAGES:
        errors.append(f"optimized_metric: {metric!r} is not a stage metric; use <stage>.<metric> with stage one of "
                      f"{', '.join(STAGES)} (e.g. finetune.best_val_acc, evaluate.roc_auc)")
    if errors:
        raise _invalid(errors)
    return cfg


def params_text(overrides: list[str]) -> str:
    """A params file: conf/ composed with ``overrides``, resolved and validated, with a header naming the command."""
    cfg = validate(compose(overrides))
    text = "# Generated by `deepsweep params" + "".join(f" {o}" for o in overrides) + "`; edit freely or\n"
    text += "# regenerate. DVC stages read this file; `dvc exp run -S key=value` changes it.\n"
    return text + OmegaConf.to_yaml(cfg, resolve=True)


def load_params(path: str | Path) -> DictConfig:
    """Load and validate a params file (the DVC side of the config)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path.resolve()} (write one with `deepsweep params`)")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # a YAML syntax error
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of config groups, got {type(cfg).__name__}")
    try:
        return validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def fine_tunes_pretrained_encoder(cfg: DictConfig) -> bool:
    """Whether fine-tuning starts from the encoder the pretrain stage wrote (else from the seeded init)."""
    return cfg.pretrain.name != "none" and bool(cfg.finetune.load_pretrained)


def flatten(cfg: DictConfig | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flat ``group.key`` params for MLflow, so runs compare and filter on ``init.name``, ``model.hidden_dims``.

    Hydra's ``_target_``/``_partial_`` keys are implementation details and are left out.
    """
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}
    for key, value in container.items():
        if str(key).startswith("_"):
            continue
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{full}."))
        else:
            flat[full] = value
    return flat
