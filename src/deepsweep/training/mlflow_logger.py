"""A Lightning logger that writes to an MLflow run that already exists (the stage's run).

Lightning's own MLFlowLogger creates or ends runs itself and marks them finished when fit ends;
deepsweep's runs outlive one fit (a stage trains, then saves and logs artifacts), so this logger
only writes metrics, with the epoch as the step.

Metrics are buffered and written at most every ``flush_seconds`` (and when fitting ends or fails): one
synchronous write to a SQLite store costs about 8 ms, more than a small model's whole epoch, and
Lightning logs twice per epoch. The UI still follows a run live, ``flush_seconds`` behind."""

from __future__ import annotations

import time
from typing import Any, Mapping

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


class MlflowRunLogger(Logger):
    def __init__(self, run_id: str, prefix: str = "", flush_seconds: float = 2.0) -> None:
        super().__init__()
        import mlflow

        self.run_id = run_id
        self.prefix = prefix
        # Explicit, so the logger also writes to the right store from a spawned DDP process.
        self.tracking_uri = mlflow.get_tracking_uri()
        self._client = None
        self.flush_seconds = flush_seconds
        self._pending: list = []
        self.history: dict[int, dict[str, float]] = {}  # epoch -> its metrics: the stage's curves.csv
        self._last_flush = float("-inf")  # the first epoch's metrics are written at once

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict:
        # A client holds a database engine, which does not cross to a spawned process; it is made anew there.
        return {**self.__dict__, "_client": None}

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        # Params are logged once, flattened, by tracking.runs.start_run.
        pass

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        step = int(epoch) if epoch is not None else int(step or 0)
        now = int(time.time() * 1000)
        self._pending += [Metric(f"{self.prefix}{k}", float(v), now, step) for k, v in metrics.items()]
        self.history.setdefault(step, {}).update({k: float(v) for k, v in metrics.items()})
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered metrics (MLflow takes at most 1000 per batch)."""
        from deepsweep.utils.retry import retry_locked

        for start in range(0, len(self._pending), 1000):
            retry_locked(self.client.log_batch, self.run_id, metrics=self._pending[start : start + 1000], synchronous=True)
        self._pending = []
        self._last_flush = time.monotonic()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # Lightning calls this when fit (or validate) ends, and when it fails: nothing logged is lost.
        self.flush()
