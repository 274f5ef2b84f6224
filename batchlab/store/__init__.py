"""Store layer: SQLite persistence of runs and their conversion to pandas DataFrames."""

from batchlab.store.records import series_frame, summary_frame
from batchlab.store.sqlite import IntegrityReport, Store, check_integrity

__all__ = ["IntegrityReport", "Store", "check_integrity", "series_frame", "summary_frame"]
