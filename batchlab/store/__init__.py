"""Store layer: SQLite persistence of runs and their conversion to pandas DataFrames."""

from batchlab.store.records import series_frame, summary_frame, summary_rows
from batchlab.store.integrity import IntegrityReport, check_integrity
from batchlab.store.sqlite import Store

__all__ = ["IntegrityReport", "Store", "check_integrity", "series_frame", "summary_frame", "summary_rows"]
