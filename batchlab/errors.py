"""The one exception type a user sees as a one-line message (exit code 2 on the CLI)."""


class BatchlabError(ValueError):
    """Bad input or a request batchlab cannot honour; the message names the problem."""


class StoreError(BatchlabError):
    """The store file is corrupt, foreign or unreadable; it is never overwritten."""
