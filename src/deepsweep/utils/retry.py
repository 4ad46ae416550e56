"""Writes to a shared SQLite store, retried while another process holds its lock."""

from __future__ import annotations

import random
import time
from typing import Any


def retry_locked(call: Any, *args: Any, attempts: int = 8, first_wait_s: float = 0.05, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, retried with exponential backoff (and jitter) while SQLite answers
    "database is locked": parallel jobs writing one SQLite store wait their turn instead of losing a write.
    SQLite itself waits 5 s for a lock before giving up; this adds up to ~25 s more over 8 attempts."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # MlflowException or SQLAlchemy's OperationalError, depending on the call
            if "database is locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(first_wait_s * 2**attempt * (1 + random.random()))
    return None


def retry_insert_race(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, tried once more when it lost an insert race: two jobs logging the same
    MLflow dataset at once both find it missing and both insert it; the store refuses the second ("UNIQUE
    constraint failed: datasets..."), and on the retry the dataset exists and is only linked to the run.
    Seen in a sweep of prepare stages against an ``mlflow server`` (tests/faults/test_store.py)."""
    try:
        return retry_locked(call, *args, **kwargs)
    except Exception as exc:
        if not any(text in str(exc) for text in ("UNIQUE constraint failed", "duplicate key", "Duplicate entry")):
            raise
        return retry_locked(call, *args, **kwargs)
