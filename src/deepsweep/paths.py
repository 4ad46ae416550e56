"""Where things live: the project root, its conf/ folder, and paths given relative to the root.

DVC runs a stage with the cwd set to the folder of its dvc.yaml, and Hydra may change the cwd for a job,
so every path a user writes in a config is resolved against one anchor: the project root.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_REPO_ROOT = Path(__file__).resolve().parents[2]


def _looks_like_root(path: Path) -> bool:
    return (path / "conf" / "config.yaml").is_file()


def project_root() -> Path:
    """The project root: $DEEPSWEEP_ROOT, else $DVC_ROOT (set by DVC for stages), else the nearest
    folder above the cwd holding conf/config.yaml, else the repository this package was installed from."""
    for var in ("DEEPSWEEP_ROOT", "DVC_ROOT"):
        value = os.environ.get(var)
        if value and _looks_like_root(Path(value)):
            return Path(value).resolve()
    cwd = Path.cwd().resolve()
    for candidate in (cwd, *cwd.parents):
        if _looks_like_root(candidate):
            return candidate
    return _PACKAGE_REPO_ROOT


def home_root() -> Path:
    """The project that owns this run's records and data: the project root, except inside a workspace DVC
    made for a queued or temp experiment (``<project>/.dvc/tmp/exps/<id>/``, a copy of the tracked files
    only), where it is the project that workspace was copied from. So ``dvc exp run --queue`` jobs log to
    the project's own MLflow store and read the same data paths as ``dvc repro``."""
    root = project_root()
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 4] == (".dvc", "tmp", "exps", parts[i + 3]) and i > 0:
            original = Path(*parts[:i])
            if _looks_like_root(original):
                return original
    return root


def conf_dir() -> Path:
    return project_root() / "conf"


def resolve(path: str | os.PathLike) -> Path:
    """A config path made absolute: relative paths count from the project's home root (``home_root``),
    ~ is expanded."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (home_root() / p).resolve()
