"""MLflow: one MLflow run per batchlab run, through ``MlflowClient`` (no global active run, so
the user's own ``mlflow.start_run()`` is left alone). Values are metrics at their update
number (``log_batch``, up to 1,000 a call); settings are params; the batchlab id and kind are
tags (``batchlab.run_id``, ``batchlab.kind``). The run ends FINISHED at close.

Where: a tracking URI (``"file:./mlruns"``, ``"sqlite:///mlflow.db"``, a server), or MLflow's
own default (``MLFLOW_TRACKING_URI``) when none is given. MLflow 3 refuses ``file:`` stores
unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set (its file store is in maintenance mode); a
``sqlite:`` store needs SQLAlchemy and Alembic, which ``mlflow-skinny`` does not install.
"""

from __future__ import annotations

import time
from typing import Sequence

from batchlab.errors import BatchlabError
from batchlab.sinks import Row, SinkRun, needs

EXPERIMENT = "batchlab"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_CHARS = 6000  # MLflow's limit on a param's value
FILE_STORE_SWITCH = "MLFLOW_ALLOW_FILE_STORE"  # MLflow 3's opt-in to file stores


class MLflowSink:
    """Metrics to an MLflow tracking store at ``uri`` (None: MLflow's default), experiment
    ``experiment``."""

    def __init__(self, uri: str | None = None, experiment: str = EXPERIMENT):
        self.uri, self.experiment = uri or None, experiment
        self.client = self.mlflow_run = None

    def open(self, run: SinkRun) -> None:
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise needs("mlflow", "mlflow") from None
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
            self.mlflow_run = self.client.create_run(experiment_id, run_name=run.label,
                                                     tags={"batchlab.run_id": run.run_id, "batchlab.kind": run.kind})
            params = [Param(k, str(v)[:PARAM_CHARS]) for k, v in run.settings.items()]
            for i in range(0, len(params), 100):  # MLflow's limit of params per call
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        except Exception as exc:  # MLflow's own errors: one line, not its traceback
            where = self.uri or "default tracking URI"
            if FILE_STORE_SWITCH in str(exc):
                raise BatchlabError(f"MLflow refuses the file store {where} unless {FILE_STORE_SWITCH}=true is set "
                                    "(it is in maintenance mode): set it, or use a sqlite: URI") from None
            raise BatchlabError(f"MLflow ({where}): {str(exc).strip().splitlines()[0]}") from None

    @property
    def run_id(self) -> str:
        return self.mlflow_run.info.run_id

    def write(self, rows: Sequence[Row]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(key, value, int(wall * 1000), step) for step, wall, values in rows
                   for key, value in values.items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])

    def close(self) -> None:
        if self.mlflow_run is not None:
            self.client.set_terminated(self.run_id, "FINISHED", end_time=int(time.time() * 1000))
            self.mlflow_run = None
