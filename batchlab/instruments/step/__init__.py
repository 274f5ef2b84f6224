"""Per-step instruments, one file each; every module here that declares ``INSTRUMENT`` is
registered by name (``instruments/__init__.py``)."""
