"""Bad input generated from the config schema: every numeric field of every option file, given a value of the
wrong type, a value out of its range and null; every word field, a word it does not take; unknown keys; values that would make Hydra build something the
option files never offered. Shared by the fuzz test and by the generator of docs/errors.md."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from deepsweep import paths
from deepsweep.config import GROUPS, _reference, compose, flatten, options
from deepsweep.constraints import numeric, rule_for

# Candidates tried in order for an out-of-range value: the first the field's rule refuses is used.
OUT_OF_RANGE = (-1, 0, -0.5, 1.5, 1, [], [0], [-1, 2], float("inf"))


@dataclass(frozen=True)
class Case:
    kind: str  # what class of bad input (a heading of docs/errors.md)
    overrides: tuple[str, ...]
    key: str  # the key the one-line message must name


def _hydra_value(value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value).replace(" ", "")


def _option_fields(selected) -> dict[str, tuple[str, object]]:
    """The fields ``selected(key, default)`` picks, over every option of every group: full key -> (the group=option
    override that brings it, its default; the first option that has the key).

    Each option's fields as the validator reads them (``config._reference``: the option file itself, which
    tests/test_config.py holds equal to Hydra's composition of every option): composing each of the 105
    options through Hydra cost 20 s of each of the two tests that generate the cases."""
    found: dict[str, tuple[str, object]] = {}
    defaults = flatten(compose([]))
    conf_dir = str(paths.conf_dir())
    for group in GROUPS:
        for option in options(group):
            choice = f"{group}={option}"
            for key, value in flatten(_reference(conf_dir, (choice,))).items():
                if key.startswith(f"{group}.") and key not in found and selected(key, value):
                    found[key] = ("" if defaults.get(f"{group}.name") == option else choice, value)
    return found


def _fields() -> dict[str, tuple[str, object]]:
    """Every numeric field, and every field whose default is null but that takes a number (a rule says which)."""
    found = _option_fields(lambda key, value: numeric(value) or (value is None and rule_for(key) is not None))
    found["seed"] = ("", 0)
    return found


# The text fields that take any text: every other field whose default is a string takes a few words, and has a
# rule in deepsweep.constraints that names them (a test fails on a new word field without one).
FREE_TEXT = ("data.root", "logger.experiment_name", "logger.tracking_uri")


def word_fields() -> dict[str, tuple[str, str]]:
    """Every field whose default is a word (not a name, a class to build or free text): full key -> (the
    group=option override that brings it, its default)."""
    def is_word(key: str, value: object) -> bool:
        leaf = key.rsplit(".", 1)[-1]
        return isinstance(value, str) and leaf != "name" and not leaf.startswith("_") and key not in FREE_TEXT

    return _option_fields(is_word)


# Kinds whose overrides are plain key=value on top of the defaults of one option (checked without Hydra's
# full composition per case, which costs ~0.2 s: the fuzz covers every field in seconds).
FIELD_KINDS = ("out of range", "wrong type", "null where null means nothing", "a word not among those allowed")


def apply(overrides: tuple[str, ...]):
    """The config the overrides give: Hydra's composition for the option choice, the field value on top."""
    from omegaconf import OmegaConf

    choices = [o for o in overrides if "." not in o.split("=")[0]]
    fields = [o for o in overrides if o not in choices]
    return OmegaConf.merge(_composed(tuple(choices)), OmegaConf.from_dotlist(fields))


_CACHE: dict = {}


def _composed(choices: tuple[str, ...]):
    if choices not in _CACHE:
        _CACHE[choices] = compose(list(choices))
    return _CACHE[choices]


@functools.cache
def cases() -> tuple[Case, ...]:
    """Made once per test process: the fuzz test and the docs/errors.md generator read the same cases."""
    result: list[Case] = []
    fields = _fields()
    for key, (choice, default) in sorted(fields.items()):
        base = (choice,) if choice else ()
        cfg = _composed(base)
        rule = rule_for(key)
        def same_kind(v) -> bool:
            if default is None:
                return not isinstance(v, list)
            return (type(v) is type(default) or (isinstance(default, float) and isinstance(v, int))
                    or (isinstance(default, list) and isinstance(v, list)))

        bad = next((v for v in OUT_OF_RANGE if same_kind(v) and not rule.accepts(v, cfg)), None)
        if bad is not None:
            result.append(Case("out of range", (*base, f"{key}={_hydra_value(bad)}"), key))
        result.append(Case("wrong type", (*base, f"{key}=fast"), key))
        if (default is not None and not rule.nullable and not key.startswith("pretrain.optimizer.")
                and (key != "pretrain.epochs" or choice)):
            result.append(Case("null where null means nothing", (*base, f"{key}=null"), key))
    for key, (choice, _default) in sorted(word_fields().items()):
        result.append(Case("a word not among those allowed", (*((choice,) if choice else ()), f"{key}=nonsense"), key))
    result += [
        Case("unknown key", ("+model.hiden_dims=[3]",), "model.hiden_dims"),
        Case("unknown key", ("model.hiden_dims=[3]",), "hiden_dims"),
        Case("unknown key", ("+seeed=1",), "seeed"),
        Case("unknown option", ("model=resnet50",), "model/resnet50"),
        Case("unknown option", ("optimizer=fastest",), "optimizer/fastest"),
        Case("something to build that no option file offers", ("pretrain.task._target_=os.system",), "pretrain.task._target_"),
        Case("something to build that no option file offers", ("model._target_=builtins.eval",), "model._target_"),
        Case("something to build that no option file offers",
             ("pretrain.anomaly_class={_target_:os.system}",), "pretrain.anomaly_class"),
        Case("something to build that no option file offers", ("+data.extra={_target_:os.system}",), "data.extra"),
        Case("cross-field", ("data.batch_size=0",), "data.batch_size"),
        Case("cross-field", ("pretrain=autoencoder", "pretrain.epochs=0"), "pretrain.epochs"),
    ]
    return tuple(result)
