"""What a data source, family or task class declares, read from its source: the ``kind`` of data it reads
("tensor", "sequence", "graph") and the ``target`` it gives or predicts ("class" per input, "mask": a class per
pixel, "tokens": an output sequence), and whether a task ``scores_anomalies``.

Its own module (a leaf: it imports nothing of deepsweep) because the factory's compatibility checks and
the fused launcher's grouping both ask it, and neither may pay for importing the classes.
"""

from __future__ import annotations

import functools
from pathlib import Path


DEFAULTS = {"kind": "tensor", "target": "class", "scores_anomalies": False}


def declared_kind(target: str) -> str:
    return declared(target, "kind")


def declared_target(target: str) -> str:
    return declared(target, "target")


def declared(target: str, attribute: str) -> str | bool:
    """The ``attribute`` ("kind", "target", "scores_anomalies") class attribute of ``target`` ("package.module.Class").

    Read from the source (the class's own ``kind = "..."``, else its bases', followed through the module's
    imports) instead of importing the class: a task's module imports Lightning, about two seconds of start-up
    that a stage which trains nothing (prepare, evaluate) would pay for one string. Imported only where the
    source does not say it (tests/test_factory_kinds.py checks both ways agree for every option)."""
    value = declared_in_source(target, attribute)
    if value is None:
        from hydra.utils import get_class

        value = getattr(get_class(target), attribute, DEFAULTS[attribute])
    return value


def declared_in_source(target: str, attribute: str) -> str | bool | None:
    """What ``declared`` reads from the source alone (None where the source does not say): ``target``'s module is
    parsed, never run (finding it imports its parent packages only), for checks on a config not yet known to be
    valid."""
    module, _, name = target.rpartition(".")
    return _source_attribute(module, name, attribute, 0) if module else None


@functools.lru_cache(maxsize=None)
def _module_tree(module: str):
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)  # imports the parent packages only
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return ast.parse(Path(spec.origin).read_text())


def _source_attribute(module: str, name: str, attribute: str, depth: int) -> str | bool | None:
    import ast

    tree = _module_tree(module)
    if tree is None or depth > 8:
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    node = classes.get(name)
    if node is None:
        return None
    for statement in node.body:
        targets = (statement.targets if isinstance(statement, ast.Assign)
                   else [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == attribute for t in targets):
            value = statement.value
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, (str, bool)) else None
    imported = {alias.asname or alias.name: (statement.module, alias.name) for statement in tree.body
                if isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0
                for alias in statement.names}
    for base in node.bases:  # in order, as the method resolution order mostly is
        if not isinstance(base, ast.Name):
            continue
        where = (module, base.id) if base.id in classes else imported.get(base.id)
        value = _source_attribute(where[0], where[1], attribute, depth + 1) if where else None
        if value is not None:
            return value
    return None
