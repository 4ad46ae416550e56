"""Where a finetune stage learns that it is a member of a fused array (``hydra/launcher=fused``).

The fused launcher installs its array around each member's job (``training.fused.active``); the stage asks
``member_fit``, which is None outside an array. The fused training code stays out of the stage's imports: a
stage that DVC runs is one job, never a member, so an edit to ``training.fused`` stales no pipeline (it made
all 24 ready-made pipelines stale, a 47-minute rerun, before). A sweep job's fingerprint still covers it:
``provenance.source_digest`` reads every file of the package."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import DictConfig

# (cfg, task, out, run_id, build) -> the member's FitResult, or None where it fits alone.
MemberFit = Callable[[DictConfig, Any, Path, "str | None", Callable], Any]

_installed: MemberFit | None = None


@contextlib.contextmanager
def installed(member_fit: MemberFit) -> Iterator[None]:
    """Within this block, a finetune stage's fit goes through ``member_fit`` first; after it, whatever was
    installed before (blocks nest)."""
    global _installed
    previous, _installed = _installed, member_fit
    try:
        yield
    finally:
        _installed = previous


def member_fit(cfg: DictConfig, task: Any, out: Path, run_id: str | None, build: Callable):
    """This stage's ``FitResult`` as a member of the installed array; None outside one (the stage fits alone)."""
    return None if _installed is None else _installed(cfg, task, out, run_id, build)
