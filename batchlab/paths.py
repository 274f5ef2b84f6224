"""Output folders and files: a folder is checked for writing before any work whose results would go
there, and what is written there replaces the previous output whole or not at all.

Every user-facing output (report pages, exported tables, figures, a study's tables and findings,
``analyze``'s and ``noise``'s files) is written through :class:`OutputSet`: its files go into a
staging folder inside the target folder (same file system, so a rename moves them), are flushed to
disk, and only when all of them are complete are they renamed over their namesakes. A write that
fails midway (a full disk, a file size limit, a folder that turns read-only) leaves the previous
files as they were and no partial file behind; the error names the file. :func:`write_output` is a
set of one file. The price: until the renames, the new files need room beside the old ones. A
process killed during the renames themselves (microseconds) may leave part of a set renamed; the
staging folder it leaves is removed by the next writer to that folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Union

from batchlab.errors import BatchlabError

STAGING = ".batchlab-partial-"  # staging folders: STAGING<pid>-<random>, inside the target folder
Content = Union[str, bytes, Callable[[Path], object]]


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create folder ``path`` if needed and prove a file can be written in it, before any work
    whose results would go there; a one-line BatchlabError names the folder otherwise."""
    path = _make_folder(Path(path), what)
    try:
        probe = path / ".batchlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BatchlabError(f"cannot write the {what} {path} ({exc.strerror or exc})") from None
    return path


def _make_folder(path: Path, what: str) -> Path:
    """Create folder ``path`` (and its parents) or raise one line saying why it cannot be."""
    if path.exists() and not path.is_dir():
        raise BatchlabError(f"cannot write the {what} {shown(path)}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchlabError(f"cannot write the {what} {shown(path)} ({exc.strerror or exc})") from None
    return path


def shown(path: str | Path) -> Path:
    """``path`` as the user will find it once its set is in place: without staging folders."""
    return Path(*[part for part in Path(path).parts if not part.startswith(STAGING)])


def write_output(path: str | Path, content: Content, sync: bool = True) -> Path:
    """Write file ``path`` whole (text, bytes, or ``content(p)`` writing the file at ``p``): the
    previous ``path`` stays as it was if writing fails (a one-line BatchlabError names it)."""
    path = Path(path)
    with OutputSet(path.parent, sync=sync) as outputs:
        outputs.write(path.name, content)
    return path


class OutputSet:
    """Files of one folder replaced together: written into a staging folder inside ``folder``,
    then renamed over their namesakes by :meth:`commit` (a failed rename puts back those already
    moved) or dropped by :meth:`discard`. As a context manager: committed when the block ends,
    discarded when it raises.

    >>> with OutputSet(out) as outputs:
    ...     outputs.write_csv("runs.csv", runs)
    ...     outputs.write("notes.md", "# notes")  # text, bytes, or a function writing the file at a path
    ...     drawer.draw("learning_curves", history, path=outputs.path("curves"))  # any writer, any process

    ``sync=False`` skips flushing to disk (for caches, where a file lost on a power cut costs only
    time).
    """

    def __init__(self, folder: str | Path, sync: bool = True) -> None:
        self.folder, self.sync = _make_folder(Path(folder), "output folder"), sync
        try:
            _remove_abandoned(self.folder)
            self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=self.folder))
        except OSError as exc:
            raise _failed(self.folder, exc) from None

    def path(self, name: str) -> Path:
        """Where file (or figure stem) ``name`` of the set is to be written before the commit."""
        staged = self.staging / name
        if staged.parent != self.staging:
            staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def write(self, name: str, content: Content) -> Path:
        """Write file ``name`` of the set: text (UTF-8), bytes, or ``content(p)`` writing the file
        at ``p``; returns where it is staged."""
        staged = self.path(name)
        try:
            if callable(content):
                content(staged)
            else:
                staged.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        except OSError as exc:
            raise _failed(staged, exc) from None
        return staged

    def write_csv(self, name: str, frame) -> Path:
        """Write the pandas DataFrame ``frame`` as CSV file ``name`` of the set (without its index)."""
        return self.write(name, lambda path: frame.to_csv(path, index=False))

    def commit(self) -> list[Path]:
        """Rename every staged file over its namesake in the folder; returns their paths. All or
        none: when a rename fails, the files already moved are put back."""
        staged = sorted(p for p in self.staging.rglob("*")  # not the staging folders of writers inside it
                        if p.is_file() and STAGING not in str(p.relative_to(self.staging)))
        moved: list[tuple[Path, Path | None]] = []
        current = self.folder
        try:
            for path in staged if self.sync else ():
                _fsync(path)
            for index, path in enumerate(staged):
                current = self.folder / path.relative_to(self.staging)
                moved.append((current, _keep_previous(current, self.staging / f".previous-{index}")))
                current.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, current)
            if self.sync:
                _fsync(self.folder, folder=True)
        except OSError as exc:
            _put_back(moved)
            raise _failed(current, exc) from None
        finally:
            self.discard()
        return [final for final, _ in moved]

    def discard(self) -> None:
        """Drop whatever was staged; the folder's files stay as they were."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _failed(path: Path, exc: OSError) -> BatchlabError:
    return BatchlabError(f"cannot write {shown(path)} ({exc.strerror or exc}); the previous output is left as it was")


def _fsync(path: Path, folder: bool = False) -> None:
    """Flush ``path`` to disk (a folder: its entries, where the system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def _keep_previous(path: Path, backup: Path) -> Path | None:
    """Keep the file ``path`` about to be replaced as ``backup`` (a second name for it, or, where
    the file system has no hard links, the file moved there); None when there is none."""
    if not path.is_file():
        return None
    try:
        os.link(path, backup)
    except OSError:
        os.replace(path, backup)
    return backup


def _put_back(moved: list[tuple[Path, Path | None]]) -> None:
    """Undo the renames of a failed commit, newest first: previous files back, new ones removed."""
    for final, backup in reversed(moved):
        try:
            if backup is None:
                final.unlink()
            else:
                os.replace(backup, final)
        except OSError:
            pass


def _remove_abandoned(folder: Path) -> None:
    """Remove staging folders left in ``folder`` by processes that are gone (killed mid-write)."""
    for entry in os.scandir(folder):
        if entry.name.startswith(STAGING) and entry.is_dir(follow_symlinks=False):
            pid = entry.name[len(STAGING):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True
