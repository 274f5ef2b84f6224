"""batchlab's version: stored with every run (at the bottom of the imports, so any module may read it)."""

__version__ = "0.3.0"
