"""Bad input stops before any work: one line naming the key (or file), the value and what is allowed, exit code 2,
no traceback, nothing trained or recorded. The cases are generated from the config schema (bad_input.py);
docs/errors.md is generated from the same cases (UPDATE_DOCS=1 pytest tests/faults/test_bad_input.py rewrites it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bad_input import FIELD_KINDS, apply, cases, word_fields
from conftest import ROOT, deepsweep_cli
from deepsweep.config import ConfigError, compose, validate

DOC = ROOT / "docs" / "errors.md"


def message(case) -> str:
    try:
        validate(apply(case.overrides) if case.kind in FIELD_KINDS else compose(list(case.overrides)))
    except ConfigError as exc:
        return str(exc)
    return ""


def test_every_generated_bad_value_is_refused_in_one_line_naming_its_key():
    all_cases = cases()
    assert len(all_cases) >= 50
    problems = []
    for case in all_cases:
        text = message(case)
        if not text:
            problems.append(f"{' '.join(case.overrides)}: accepted")
        elif case.key not in text or "\n" in text:
            problems.append(f"{' '.join(case.overrides)}: message does not name {case.key} in one line: {text!r}")
    assert not problems, "\n".join(problems)


def test_every_word_field_has_a_rule_naming_its_words():
    """A field whose default is a word (a dropout kind, an init scheme, a precision) is checked up front like a
    number: without a rule, a bad word reached the class that reads it, after prepare had run and recorded."""
    from deepsweep.constraints import rule_for

    fields = word_fields()
    assert {"regularizer.dropout_kind", "init.scheme", "trainer.precision", "pretrain.task.noise"} <= set(fields)
    missing = [key for key in fields if not (rule_for(key) and rule_for(key).names)]
    assert not missing, f"word fields without a rule in deepsweep.constraints (or add them to FREE_TEXT): {missing}"


CLI_CASES = [
    (["run", "optimizer.lr=fast"], "optimizer.lr"),
    (["run", "trainer.max_epochs=0"], "trainer.max_epochs"),
    (["run", "seed=null"], "seed"),
    (["run", "-m", "seed=0,-1"], "seed"),  # a sweep: refused before its first job
    (["run", "finetune.label_fraction=0"], "finetune.label_fraction"),
    (["run", "pretrain.task._target_=os.system"], "pretrain.task._target_"),
    # A module named by _target_ is refused, never imported, even where another rule asks what the data's class is.
    (["run", "data=karate", "model=gcn", "pretrain=none", "data._target_=this.X"], "data._target_"),
    (["params", "-o", "-", "model.hidden_dims=[]"], "model.hidden_dims"),
    (["run", "-m", "init=glob(he_*)", "trainer.max_epochs=0"], "trainer.max_epochs"),  # globs expand up front
    (["run", "data=cora"], "data=cora"),  # across groups: an MLP does not read a graph
    (["run", "-m", "data=digits,cora"], "data=cora"),
    (["run", "trainer.gradient_clip_val=fast"], "trainer.gradient_clip_val"),  # a field whose default is null
    # Lightning's auto strategy on two devices re-ran the command per device: SIGKILLed, its runs left RUNNING.
    (["run", "trainer.devices=2"], "trainer.strategy"),
    (["run", "-m", "regularizer=dropout", "regularizer.dropout_kind=standard,weird"], "regularizer.dropout_kind"),
    (["run", "pretrain.task.decoder=convv"], "pretrain.task.decoder"),
    # A sweep's values without -m: Hydra's own refusal is three to six lines with exit code 1.
    (["run", "seed=range(0,3)"], "seed=range(0,3)"),
    (["run", "optimizer.lr=1e-3,1e-2"], "optimizer.lr=1e-3,1e-2"),
    (["run", "-m", "seed=range(3,0)"], "seed=range(3,0)"),  # no job: Hydra would record an empty sweep
    # A launcher's settings: Hydra's own messages named neither what is wrong nor where the key belongs.
    (["run", "-m", "seed=0,1", "hydra.launcher.n_jobs=abc"], "hydra.launcher.n_jobs=abc: Value 'abc' of type 'str'"),
    (["run", "-m", "seed=0,1", "hydra.launcher.max_members=4"], "it is a setting of hydra/launcher=fused"),
]


@pytest.mark.parametrize("args,key", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_refuses_before_any_work(tmp_path, args, key):
    result = deepsweep_cli(*args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store.db'}"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepsweep: error: ") and key in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Beautiful is better than ugly" not in result.stdout  # `import this` prints it: no module was run
    # Nothing ran: no run folder, no tracking store.
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "store.db").exists()


def test_stage_refuses_a_bad_params_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("lr: 0.001", "lr: -0.001"))
    result = deepsweep_cli("stage", "prepare", "--params", str(params), "--artifacts", str(tmp_path / "a"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"deepsweep: error: {params}: optimizer.lr: -0.001 is out of range; "
                                     "allowed: a finite number > 0")
    assert not (tmp_path / "a").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = deepsweep_cli("--debug", "run", "trainer.max_epochs=0", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "trainer.max_epochs" in result.stderr


def render_doc() -> str:
    lines = ["# What deepsweep says about bad input", "",
             "Generated by `UPDATE_DOCS=1 pytest tests/faults/test_bad_input.py` from the cases that test checks",
             "(tests/faults/bad_input.py: every numeric field of every option file with a value of the wrong type, one",
             "out of its range and null, every word field with a word it does not take, plus the cases below). Each",
             "stops `deepsweep run`, `deepsweep stage`, `deepsweep params` and `dvc exp run -S` before any work, with",
             "this one line on stderr and exit code 2 (`deepsweep --debug ...` shows the traceback). A params file's",
             "problems start with the file's path.", ""]
    by_kind: dict[str, list] = {}
    for case in cases():
        by_kind.setdefault(case.kind, []).append(case)
    for kind, members in by_kind.items():
        lines += [f"## {kind[0].upper()}{kind[1:]} ({len(members)} cases)", "", "| input | message |", "| --- | --- |"]
        for case in members[:: max(1, len(members) // 6)][:6]:
            text = message(case).replace("|", "\\|")
            lines.append(f"| `{' '.join(case.overrides)}` | `deepsweep: error: {text}` |")
        lines.append("")
    return "\n".join(lines)


def test_docs_errors_md_is_generated_from_these_cases():
    text = render_doc()
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, "docs/errors.md is stale: UPDATE_DOCS=1 pytest tests/faults/test_bad_input.py"


# What a config may build: deepsweep's own classes and torch's layers, optimizers and schedules.
ALLOWED_TARGET_PREFIXES = ("deepsweep.", "torch.nn.", "torch.optim.")
# Hydra instantiates a launcher only from the hydra_plugins namespace: deepsweep's own plugin package there.
ALLOWED_LAUNCHER_PREFIX = "hydra_plugins.deepsweep_"


def test_option_files_build_only_from_allowed_modules():
    """Values may not set _target_ (checked above), so the option files are the only source of what is built:
    every one of them stays within the allow-list."""
    outside = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            key, _, value = line.strip().partition(":")
            allowed = ALLOWED_TARGET_PREFIXES + ((ALLOWED_LAUNCHER_PREFIX,) if "hydra/launcher" in path.as_posix() else ())
            if key == "_target_" and not value.strip().startswith(allowed):
                outside.append(f"{path.relative_to(ROOT)}:{number}: {value.strip()}")
    assert not outside, "targets outside " + ", ".join(ALLOWED_TARGET_PREFIXES) + ":\n" + "\n".join(outside)


def test_a_searchers_own_space_is_checked_before_its_first_trial():
    from deepsweep.cli.main import _hydra_config, _search_space, _sweep_points

    space = _search_space(_hydra_config(["hparams_search=digits_optuna"]))
    assert space["optimizer.lr"].startswith("tag(log, interval(")
    space["optimizer.lr"] = "interval(-1, 0.1)"
    with pytest.raises(ConfigError, match="optimizer.lr: -1"):
        for point in _sweep_points(["hparams_search=digits_optuna"], space):
            validate(compose(point))

# A combination the up-front check did not try fails its own job and the sweep goes on:
# tests/faults/test_store.py::test_a_parallel_sweep_through_a_real_mlflow_server_records_every_run.
