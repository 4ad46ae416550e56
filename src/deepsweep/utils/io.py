"""Atomic outputs: a stage's results appear all at once or not at all.

DVC and the next stage trust whatever sits at an output path, so a stage that dies half-way must
leave the previous output (or nothing) there, never a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

LOCK_FILE = ".deepsweep.lock"
_HELD: dict[Path, int] = {}  # folders this process has locked, and how many times (re-entrant)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; outputs get the permissions of any new folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _read_umask() -> int:
    # From /proc: os.umask can only be read by setting it, which would race with threads creating files.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # at import, before any thread of ours: set and restore
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove what ``atomic_dir`` leaves when its process is killed (``.<name>.*.tmp``, ``.<name>.old``).
    Only safe while holding the folder's lock: then no other writer can own them."""
    removed = []
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    for entry in entries:
        # A kill between atomic_dir's two renames leaves the previous output as .<name>.old and nothing at
        # <name>: put the previous output back (the new one never counted as committed).
        if entry.name.startswith(".") and entry.name.endswith(".old") and entry.is_dir():
            target = folder / entry.name[1 : -len(".old")]
            if not target.exists():
                os.replace(entry, target)
                continue
        if entry.name.startswith(".") and (entry.name.endswith(".tmp") or entry.name.endswith(".old")):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` as its one writer for the duration; another process gets FolderInUse naming this one.

    An exclusive ``flock`` on ``<folder>/.deepsweep.lock`` (opened without following a symlink): the OS
    drops it when the process dies, so a killed run never leaves its folder locked, and the next holder
    removes the temp folders the killed one left. Re-entrant within one process (a pipeline run locks
    its folder, then each of its stages)."""
    from deepsweep.errors import FolderInUse

    folder = Path(folder).resolve()
    if folder in _HELD:
        _HELD[folder] += 1
        try:
            yield folder
        finally:
            _HELD[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 1000).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise FolderInUse(f"{folder}: in use by {holder}; wait for it to end, or write elsewhere "
                          "(hydra.run.dir=..., deepsweep stage --artifacts ...)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:300]})".encode())
    _HELD[folder] = 1
    try:
        remove_stale_temps(folder)
        yield folder
    finally:
        del _HELD[folder]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)
