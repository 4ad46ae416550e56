"""The structure the code promises: no import circles inside the package, and a new objective is one class
plus one YAML file (examples/new_objective/) with no edit to a stage, the factory or the fitting code."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, deepsweep_cli

PACKAGE = ROOT / "src" / "deepsweep"
EXAMPLE = ROOT / "examples" / "new_objective"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """deepsweep module -> the deepsweep modules it imports, anywhere in the file (lazy imports count: a
    circle through a function-level import is still a circle)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
                    break  # `from deepsweep.x import y`: y if it is a module, else deepsweep.x
    return graph


def test_the_package_has_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circle = stack[stack.index(target):] + [target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert graph["deepsweep.stages.finetune"] >= {"deepsweep.factory", "deepsweep.training.fit"}  # the graph is read


@pytest.mark.slow  # 20-45 s here: started first, so it does not leave a worker alone at the end
def test_a_new_objective_is_one_class_and_one_yaml_file(tmp_path):
    """examples/new_objective/rotation.{py,yaml} dropped into a copy of conf/ (and the class on PYTHONPATH)
    pretrain with the real pipeline; the encoder learns the rotations (validation loss under chance, log 4)."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "conf", project / "conf")
    shutil.copy(EXAMPLE / "rotation.yaml", project / "conf" / "pretrain" / "rotation.yaml")
    env = {"DEEPSWEEP_ROOT": str(project), "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")]),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = deepsweep_cli("run", "pretrain=rotation", "pretrain.epochs=4", "trainer.max_epochs=1",
                           f"hydra.run.dir={tmp_path / 'run'}", cwd=project, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    pretrain = json.loads((tmp_path / "run" / "pretrain" / "run.json").read_text())["metrics"]
    assert pretrain["best_val_loss"] < 0.9 * 1.3863, pretrain  # chance: cross-entropy of 4 equal guesses
    assert (tmp_path / "run" / "pretrain" / "encoder.pt").is_file()
    assert (tmp_path / "run" / "evaluate" / "metrics.json").is_file()
    # Not a terminal: one progress line per epoch (trainer.progress=auto), the new objective's included.
    lines = [line for line in result.stderr.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in lines] == [*(f"pretrain epoch {e - 1} ({e}/4)" for e in range(1, 5)), "finetune epoch 0 (1/1)"]
    assert "train/loss" in lines[0] and "val/loss" in lines[0]
    # Where to look next: the run's folder and its MLflow run (the pipeline's, which prepare's run.json names).
    pipeline = json.loads((tmp_path / "run" / "prepare" / "run.json").read_text())["pipeline_id"]
    assert result.stdout.splitlines()[-2:] == [f"outputs: {tmp_path / 'run'}",
                                               f"MLflow run: {pipeline} in sqlite:///{tmp_path / 'mlflow.db'}"]
