"""Export a store to CSV or Parquet tables, or to TensorBoard event files or an MLflow store
(``batchlab/sinks/``: the sinks a monitor's ``log_to`` uses, so both write the same way)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from batchlab.errors import BatchlabError
from batchlab.paths import OutputSet, check_writable_dir
from batchlab.results import RunResult
from batchlab.store.records import config_record, series_frame, summary_frame
from batchlab.store.sqlite import Store

TABLES, SINKS = ("csv", "parquet"), ("tensorboard", "mlflow")
FORMATS = TABLES + SINKS


def export_store(db: str | Path, out: str | Path, fmt: str = "csv") -> list[Path]:
    """Write ``runs``, ``epochs`` and ``steps`` tables; returns the files written.

    The three tables replace an earlier export together or not at all (``paths.OutputSet``), so a
    full disk never leaves a mix of old and new tables. A damaged store raises the store's one-line
    :class:`~batchlab.errors.StoreError` (nothing is written); an output folder that cannot be
    created or written raises a BatchlabError naming the file."""
    if fmt not in FORMATS:
        raise BatchlabError(f"unknown export format {fmt!r}: choose {', '.join(FORMATS)}")
    with Store(db, create=False) as store:
        results = store.load()
    if not results:
        raise BatchlabError(f"{db} holds no runs to export")
    out = check_writable_dir(out, "--out folder")
    if fmt in SINKS:
        return export_to_sink(results, out, fmt)
    runs = summary_frame(results)
    runs["config"] = [json.dumps(config_record(r), sort_keys=True) for r in results]
    runs["version"] = [r.version for r in results]
    tables = (("runs", runs), ("epochs", series_frame(results, "epoch")), ("steps", series_frame(results, "step")))
    try:
        with OutputSet(out) as outputs:
            for name, frame in tables:
                if fmt == "csv":
                    outputs.write_csv(f"{name}.csv", frame)
                else:
                    outputs.write(f"{name}.parquet", lambda path, frame=frame: frame.to_parquet(path, index=False))
    except ImportError:
        raise BatchlabError("parquet export needs pyarrow: pip install 'batchlab[parquet]'") from None
    return [out / f"{name}.{fmt}" for name, _ in tables]


def export_to_sink(results: list[RunResult], out: Path, fmt: str) -> list[Path]:
    """Each run to TensorBoard (``out/<name>-<id8>/``) or to the MLflow file store ``out``
    (experiment ``batchlab``): per-update series at their update number, per-epoch series as
    ``epoch/<name>`` at the update that ended the epoch. A run exported before to the same
    place is replaced (its TensorBoard folder, its MLflow run by tag ``batchlab.run_id``), so
    exporting twice does not double the points. Returns the folders written."""
    from batchlab.sinks.mlflow_sink import FILE_STORE_SWITCH

    if fmt == "tensorboard":
        return [_export_run(res, out, fmt) for res in results]
    saved = os.environ.get(FILE_STORE_SWITCH)  # the user asked for a file store: MLflow 3 wants that said
    os.environ[FILE_STORE_SWITCH] = "true"
    try:
        for res in results:
            _export_run(res, out, fmt)
    finally:
        if saved is None:
            os.environ.pop(FILE_STORE_SWITCH, None)
        else:
            os.environ[FILE_STORE_SWITCH] = saved
    return [out]


def _export_run(res: RunResult, out: Path, fmt: str) -> Path:
    from batchlab.sinks import SinkRun, close_sinks, open_sinks, series_rows
    from batchlab.sinks.mlflow_sink import MLflowSink
    from batchlab.sinks.tensorboard_sink import TensorBoardSink

    name = res.monitored.name if res.monitored else f"B{res.config.batch_size}-seed{res.config.seed}"
    settings = res.monitored.settings if res.monitored else _flat(config_record(res))
    run = SinkRun(res.run_id, name, res.kind, settings)
    rows = sorted(series_rows(res.steps) + series_rows(res.history, prefix="epoch/"), key=lambda r: r[0])
    if fmt == "tensorboard":
        sink = TensorBoardSink(out)
        _forget_tensorboard(out / run.label)
    else:
        sink = MLflowSink(out.resolve().as_uri())
        _forget_mlflow(sink, run.run_id)
    sinks = open_sinks([sink], run)
    try:
        sink.write(rows)
    finally:
        close_sinks(sinks)
    return out / run.label


def _flat(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _forget_tensorboard(folder: Path) -> None:
    """Remove an earlier export of this run: only a folder of event files, nothing else."""
    if not folder.exists():
        return
    files = list(folder.iterdir())
    if not all(f.is_file() and f.name.startswith("events.out.tfevents.") for f in files):
        raise BatchlabError(f"{folder} exists and holds more than TensorBoard event files: export elsewhere")
    for f in files:
        f.unlink()


def _forget_mlflow(sink, run_id: str) -> None:
    """Delete the MLflow runs an earlier export made for batchlab run ``run_id``."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return  # open() says what to install
    client = MlflowClient(tracking_uri=sink.uri)
    found = client.get_experiment_by_name(sink.experiment)
    if found is None:
        return
    for old in client.search_runs([found.experiment_id], f"tags.`batchlab.run_id` = '{run_id}'"):
        client.delete_run(old.info.run_id)
