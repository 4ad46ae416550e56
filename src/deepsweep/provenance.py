"""What a result was computed from: the config, the package's source, the data files and the libraries.

A result is reused (by DVC, by a resumed sweep job, by a resumed stage) only when all four are the same:
``fingerprint(cfg)`` digests them together, each MLflow run carries the parts as tags, and
``stage_modules(stage)`` lists the package modules a stage may execute, which every ``dvc.yaml`` must
declare as dependencies of that stage (``tests/faults/test_provenance.py`` holds it to that).

Costs (``python -m deepsweep.bench`` start-up figures include them): the source digest reads ~60 small
files once per process; the data digest reads the dataset's raw files once per process (MNIST's 11 MB in
about 30 ms of sha256 on this CPU).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARIES = ("torch", "lightning", "torch_geometric", "torchmetrics", "numpy", "scikit-learn")
# Keys that change where results go or how they are shown, never what a job computes.
NOT_FINGERPRINTED = ("logger", "trainer.progress", "trainer.num_threads")
# Which devices a job runs on never changes what it computes, how many can (a data-parallel job splits each
# batch among them): the fingerprint holds their number, so a resumed GPU sweep job may run on its own GPU ([3]).
DEVICES = "trainer.devices"


def not_fingerprinted(key: str) -> bool:
    """Whether a dotted config key is, or is under, one of ``NOT_FINGERPRINTED``."""
    return any(key == skip or key.startswith(skip + ".") for skip in NOT_FINGERPRINTED)


def device_count(devices: Any) -> Any:
    """``trainer.devices`` as the fingerprint sees it: a list of indices as how many (``[3]`` is 1, like ``1``),
    any other value (a count, ``auto``) as it is."""
    return len(devices) if isinstance(devices, (list, tuple)) else devices


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
    """A digest of every Python file of the installed deepsweep package (path and content)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def library_versions() -> str:
    """``torch=2.13.0,lightning=...``: the libraries whose numerics or loops shape a result."""
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name}=none")
    return ",".join(found)


def data_files(cfg: DictConfig) -> list[Path]:
    """The raw files the data source reads: everything under ``data.root`` (none for bundled data, whose
    bytes come with a library version that ``library_versions`` names)."""
    from deepsweep import paths

    root = cfg.data.get("root")
    if not root:
        return []
    root = paths.resolve(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and "processed" not in p.relative_to(root).parts)


@functools.lru_cache(maxsize=16)
def _files_digest(files: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def data_digest(cfg: DictConfig) -> str:
    """The raw data's digest: a catalog data set's from its checksums (prepare reads no other bytes, and
    hashing them here would cost each stage a read of up to 31 MB), any other folder's from its files."""
    from deepsweep.data.downloads import CATALOG, catalog_digest

    if cfg.data.get("name") in CATALOG and cfg.data.get("root"):
        return catalog_digest(cfg.data.name)
    files = tuple(data_files(cfg))
    return _files_digest(files) if files else "bundled"


def config_digest(cfg: DictConfig) -> str:
    """The resolved config (seed included) minus where it logs and how it is shown, with how many devices it
    runs on in place of which."""
    data: Any = OmegaConf.to_container(cfg, resolve=True)
    trainer = data.get("trainer")
    if isinstance(trainer, dict) and "devices" in trainer:
        trainer["devices"] = device_count(trainer["devices"])

    def kept(node: Any, prefix: str) -> Any:
        if not isinstance(node, dict):
            return node
        return {key: kept(child, f"{prefix}{key}.") for key, child in node.items()
                if not not_fingerprinted(f"{prefix}{key}")}

    data = kept(data, "")
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(cfg: DictConfig) -> str:
    """One digest of config, package source, data files and library versions: equal fingerprints, same result."""
    parts = [config_digest(cfg), source_digest(), data_digest(cfg), library_versions()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def tags(cfg: DictConfig) -> dict[str, str]:
    """The parts of the fingerprint, as MLflow tags."""
    return {
        "deepsweep.fingerprint": fingerprint(cfg),
        "deepsweep.config_digest": config_digest(cfg),
        "deepsweep.source_digest": source_digest(),
        "deepsweep.data_digest": data_digest(cfg),
        "deepsweep.versions": library_versions(),
    }


# --- which modules a stage runs ------------------------------------------------------------------------

def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "deepsweep":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


# The command module holds many commands, of which a DVC stage runs one: only the code reachable from its
# functions counts (the `deepsweep study` command's lazy imports are not code `deepsweep stage` runs, and
# counting them made every stage stale at each edit of a study).
COMMAND_MODULE = "deepsweep.cli.main"
STAGE_COMMAND = ("main", "_cmd_stage")  # deepsweep stage <name>
FETCH_COMMAND = ("main", "_cmd_fetch")  # deepsweep fetch <data set> (the ready-made pipelines' fetch stage)


def _reachable(tree: ast.Module, entries: tuple[str, ...]) -> list[ast.AST]:
    """The module's top-level statements other than function definitions, plus the functions ``entries``
    name and the module-level functions they call, transitively."""
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    nodes: list[ast.AST] = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    todo, seen = list(entries), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        nodes.append(functions[name])
        todo.extend(call.func.id for call in ast.walk(functions[name])
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name))
    return nodes


def _imports(path: Path, module: str, command: tuple[str, ...] = STAGE_COMMAND) -> set[str]:
    """Every deepsweep module ``path`` imports, at the top or inside a function (an over-approximation of
    what runs: a stage may import lazily, and lazily imported code is code it runs); in the command module,
    inside the functions ``command`` reaches."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    roots = _reachable(tree, command) if module == COMMAND_MODULE else [tree]
    for node in (n for root in roots for n in ast.walk(root)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("deepsweep")}


def _config_targets() -> set[str]:
    """Modules that conf/ option files build through ``_target_`` (imported by Hydra, not by an import)."""
    from deepsweep import paths

    targets = set()
    for path in paths.conf_dir().rglob("*.yaml"):
        for line in path.read_text().splitlines():
            key, _, value = line.strip().partition(":")
            if key == "_target_" and value.strip().startswith("deepsweep."):
                targets.add(value.strip().rpartition(".")[0])
    return targets


def module_closure(roots: set[str], command: tuple[str, ...] = STAGE_COMMAND) -> set[str]:
    """The deepsweep modules reachable from ``roots`` through imports (parent packages included)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = _module_file(module)
        if path is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imports(path, module, command))
    return seen


def stage_modules(stage: str) -> list[Path]:
    """The package files ``deepsweep stage <stage>`` may execute: the command, the stage runner, the stage,
    and what the config's ``_target_``s build, with everything they import."""
    if stage == "fetch":
        files = (_module_file(m) for m in module_closure({COMMAND_MODULE, "deepsweep.data.downloads"}, FETCH_COMMAND))
        return sorted(p for p in files if p is not None)
    roots = {COMMAND_MODULE, "deepsweep.stages.pipeline", f"deepsweep.stages.{stage}"}
    if stage != "prepare":
        roots |= _config_targets()
    else:
        roots |= {t for t in _config_targets() if t.startswith("deepsweep.data")}
    return sorted(p for p in (_module_file(m) for m in module_closure(roots)) if p is not None)


def stage_dependencies(stage: str) -> list[str]:
    """``stage_modules`` as ``dvc.yaml`` deps, relative to the project root: a whole folder where every
    Python file in it is executed, else the files one by one."""
    from deepsweep import paths

    files = set(stage_modules(stage))
    deps: list[str] = []
    src = PACKAGE_DIR.parent
    folders = sorted({p.parent for p in files if p.parent != PACKAGE_DIR})
    covered: set[Path] = set()
    for folder in folders:
        if set(folder.glob("*.py")) <= files:
            deps.append(folder)
            covered |= set(folder.glob("*.py"))
    deps += sorted(files - covered)
    root = paths.project_root()
    return sorted(str(p.relative_to(root) if p.is_relative_to(root) else p.relative_to(src.parent)) for p in deps)


def uncovered(stage: str, deps: list[str], base: Path) -> list[str]:
    """Package files ``stage`` may execute that none of ``deps`` (paths relative to ``base``, a dvc.yaml's
    folder) covers."""
    declared = [(base / d).resolve() for d in deps]
    missing = []
    for path in stage_modules(stage):
        if not any(path == d or d in path.parents for d in declared):
            missing.append(str(path.relative_to(PACKAGE_DIR.parent.parent)))
    return missing
