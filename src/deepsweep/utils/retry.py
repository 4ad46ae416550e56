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
