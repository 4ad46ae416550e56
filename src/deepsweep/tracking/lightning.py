"""A Lightning logger that writes to an MLflow run that already exists (the stage's run).

Lightning's own MLFlowLogger creates or ends runs itself and marks them finished when fit ends;
deepsweep's runs outlive one fit (a stage trains, then saves and logs artifacts), so this logger
only writes metrics, in one batch per call, with the epoch as the step."""

from __future__ import annotations

import time
from typing import Any, Mapping

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


class MlflowRunLogger(Logger):
    def __init__(self, run_id: str, prefix: str = "") -> None:
        super().__init__()
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.prefix = prefix
        self.client = MlflowClient()

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
        batch = [Metric(f"{self.prefix}{k}", float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
