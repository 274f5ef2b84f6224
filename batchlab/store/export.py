"""Export a store to CSV or Parquet tables for other tools."""

from __future__ import annotations

import json
from pathlib import Path

from batchlab.errors import BatchlabError
from batchlab.store.records import series_frame, summary_frame
from batchlab.store.sqlite import Store


def export_store(db: str | Path, out: str | Path, fmt: str = "csv") -> list[Path]:
    """Write ``runs``, ``epochs`` and ``steps`` tables; returns the files written."""
    with Store(db, create=False) as store:
        results = store.load()
    if not results:
        raise BatchlabError(f"{db} holds no runs to export")
    runs = summary_frame(results)
    runs["config"] = [json.dumps(r.config.to_dict(), sort_keys=True) for r in results]
    runs["version"] = [r.version for r in results]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in (("runs", runs), ("epochs", series_frame(results, "epoch")),
                        ("steps", series_frame(results, "step"))):
        path = out / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            try:
                frame.to_parquet(path, index=False)
            except ImportError:
                raise BatchlabError("parquet export needs pyarrow: pip install 'batchlab[parquet]'") from None
        written.append(path)
    return written
