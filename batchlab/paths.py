"""Output folders: checked for writing before any work whose results would go there."""

from __future__ import annotations

from pathlib import Path

from batchlab.errors import BatchlabError


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create folder ``path`` if needed and prove a file can be written in it, before any work
    whose results would go there; a one-line BatchlabError names the folder otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BatchlabError(f"cannot write the {what} {path}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".batchlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BatchlabError(f"cannot write the {what} {path} ({exc.strerror or exc})") from None
    return path
