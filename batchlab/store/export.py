"""Export a store to CSV or Parquet tables for other tools."""

from __future__ import annotations

import json
from pathlib import Path

from batchlab.errors import BatchlabError
from batchlab.paths import OutputSet, check_writable_dir
from batchlab.store.records import config_record, series_frame, summary_frame
from batchlab.store.sqlite import Store


def export_store(db: str | Path, out: str | Path, fmt: str = "csv") -> list[Path]:
    """Write ``runs``, ``epochs`` and ``steps`` tables; returns the files written.

    The three tables replace an earlier export together or not at all (``paths.OutputSet``), so a
    full disk never leaves a mix of old and new tables. A damaged store raises the store's one-line
    :class:`~batchlab.errors.StoreError` (nothing is written); an output folder that cannot be
    created or written raises a BatchlabError naming the file."""
    if fmt not in ("csv", "parquet"):
        raise BatchlabError(f"unknown export format {fmt!r}: choose csv or parquet")
    with Store(db, create=False) as store:
        results = store.load()
    if not results:
        raise BatchlabError(f"{db} holds no runs to export")
    out = check_writable_dir(out, "--out folder")
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
