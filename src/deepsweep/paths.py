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


def conf_dir() -> Path:
    return project_root() / "conf"


def resolve(path: str | os.PathLike) -> Path:
    """A config path made absolute: relative paths count from the project root, ~ is expanded."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (project_root() / p).resolve()
