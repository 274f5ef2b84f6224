"""Store layer: SQLite persistence of runs and their conversion to pandas DataFrames."""

from batchlab.store.records import series_frame, summary_frame
from batchlab.store.sqlite import Store

__all__ = ["Store", "series_frame", "summary_frame"]
