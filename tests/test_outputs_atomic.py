"""Outputs replace the previous ones whole or not at all (``batchlab/paths.py``): a write that fails
midway leaves the previous report, export, figures and study files byte for byte as they were, and
no partial file. The disk fills for real where a small tmpfs can be mounted (in a private mount
namespace, ``unshare``, so nothing outlives the test); everywhere, writes are also made to fail
past N bytes in this process (``RLIMIT_FSIZE``: the system refuses the write, as a full disk does)."""

import contextlib
import errno
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest
from helpers import small_store

from batchlab.errors import BatchlabError
from batchlab.paths import OutputSet, write_output

LIMIT = 8192  # bytes: the export's runs and epochs tables fit, its steps table and the report page do not


@contextlib.contextmanager
def writes_fail_past(limit: int = LIMIT):
    """Every file this process writes fails past ``limit`` bytes (EFBIG), the part before it written."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@contextlib.contextmanager
def disk_filled(folder: Path, free: int = 3 * 4096):
    """The tmpfs holding ``folder`` filled up but for ``free`` bytes."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    os.ftruncate(fd, max(os.fstat(fd).st_size - free, 0))
    os.close(fd)
    try:
        yield
    finally:
        filler.unlink()


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included): relative path -> digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "filler"}


def cli(*args) -> tuple[int, str, str]:
    """``batchlab ARGS`` through the real entry point, in this process: (exit status, stdout, stderr)."""
    from batchlab.cli import main

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["batchlab", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def export_and_report(db: Path, folder: Path, fill) -> dict:
    """Export and report ``db`` into ``folder``, fill the disk (context manager ``fill``), export and
    report again: what each command said, and the files of ``folder`` before and after."""
    commands = [("export", "--db", db, "--out", folder / "export"), ("report", "--db", db, "--out", folder / "report")]
    first = [cli(*command) for command in commands]
    before = files(folder)
    with fill:
        again = [cli(*command) for command in commands]
    return {"first": first, "again": again, "before": before, "after": files(folder)}


@lru_cache(maxsize=1)
def can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


def on_a_small_tmpfs(db: Path, tmp_path: Path) -> dict:
    """:func:`export_and_report` in a fresh interpreter, in a mount namespace of its own where
    ``tmp_path/disk`` is a 512 KiB tmpfs."""
    disk, result = tmp_path / "disk", tmp_path / "result.json"
    disk.mkdir()
    code = (f"import json, sys; sys.path[:0] = [{str(Path(__file__).parent)!r}]; import test_outputs_atomic as t; "
            f"from pathlib import Path; disk = Path({str(disk)!r}); "
            f"json.dump(t.export_and_report(Path({str(db)!r}), disk, t.disk_filled(disk)), open({str(result)!r}, 'w'))")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=512k tmpfs "$0" && exec "$1" -c "$2"',
                           str(disk), sys.executable, code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BATCHLAB_FIGURE_HELPERS": "0"})
    assert done.returncode == 0, done.stderr
    return json.loads(result.read_text())


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "runs.db"
    small_store(path)
    return path


@pytest.mark.parametrize("disk", ["tmpfs", "file size limit"])
def test_a_full_disk_leaves_the_previous_export_and_report_as_they_were(db, tmp_path, disk):
    if disk == "tmpfs":
        if not can_mount_tmpfs():
            pytest.skip("no tmpfs can be mounted here (unshare -rm refused); the file size limit stands in")
        result = on_a_small_tmpfs(db, tmp_path)
    else:
        result = export_and_report(db, tmp_path, writes_fail_past())
    assert [code for code, _, _ in result["first"]] == [0, 0], result["first"]
    assert sorted(result["before"]) == ["export/epochs.csv", "export/runs.csv", "export/steps.csv",
                                        "report/index.html"]
    assert result["after"] == result["before"]  # same files, same bytes: no partial one, no mixed set
    for (code, out, err), folder in zip(result["again"], ("export/", "report/index.html")):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in out + err, err
        assert lines[0].startswith("error: cannot write ") and folder in lines[0], err
        assert "the previous output is left as it was" in lines[0]


def test_a_file_not_written_whole_leaves_the_previous_one(tmp_path):
    page = tmp_path / "index.html"
    write_output(page, "<html>old</html>")
    with writes_fail_past(), pytest.raises(BatchlabError, match=f"cannot write {page} "):
        write_output(page, "<html>" + "x" * 2 * LIMIT + "</html>")
    assert page.read_text() == "<html>old</html>" and os.listdir(tmp_path) == ["index.html"]


def test_a_set_of_files_is_replaced_together_or_not_at_all(tmp_path):
    with OutputSet(tmp_path) as outputs:
        outputs.write("a.csv", "old a")
        outputs.write("b.csv", "old b")
    before = files(tmp_path)
    with writes_fail_past(), pytest.raises(BatchlabError, match="b.csv"):
        with OutputSet(tmp_path) as outputs:
            outputs.write("a.csv", "new a")  # complete, yet never in place without b
            outputs.write("b.csv", "y" * 2 * LIMIT)
    assert files(tmp_path) == before


def test_a_failed_rename_puts_back_the_files_already_moved(tmp_path, monkeypatch):
    write_output(tmp_path / "a.csv", "old a")
    write_output(tmp_path / "b.csv", "old b")
    before = files(tmp_path)
    rename = os.replace

    def replace(src, dst):
        if Path(dst).name == "c.csv":
            raise OSError(errno.EIO, "Input/output error")
        rename(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(BatchlabError, match="cannot write .*c.csv"):
        with OutputSet(tmp_path) as outputs:
            for name in ("a.csv", "b.csv", "c.csv"):  # moved in this order: a and b before c fails
                outputs.write(name, f"new {name}")
    assert files(tmp_path) == before


def test_staging_left_by_a_killed_process_is_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".batchlab-partial-{gone.stdout.strip()}-x"
    abandoned.mkdir()
    (abandoned / "steps.csv").write_text("half a tab")
    write_output(tmp_path / "runs.csv", "whole")
    assert os.listdir(tmp_path) == ["runs.csv"]


def _figure(tables=None, settings=None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(range(50), [i % 7 for i in range(50)])
    return fig


def test_a_figure_on_a_full_disk_keeps_the_previous_png_and_svg(tmp_path):
    from batchlab.plots import save_figure

    save_figure(_figure(), tmp_path / "curve")
    before = files(tmp_path)
    assert sorted(before) == ["curve.png", "curve.svg"]
    with writes_fail_past(), pytest.raises(BatchlabError, match="curve"):
        save_figure(_figure(), tmp_path / "curve")
    assert files(tmp_path) == before


def test_a_study_s_figures_tables_and_findings_are_replaced_together(tmp_path):
    from batchlab.studies.base import FigureSpec, Study
    from batchlab.studies.outputs import ask_outputs

    study = Study("made-up", "Does it hold?", "a test", {}, lambda s: [], lambda d, s: {}, (FigureSpec("f", _figure, "t"),),
                  lambda t, s: [])
    first = ask_outputs(study, {}, {"t": pd.DataFrame({"x": [1, 2]}), "u": pd.DataFrame({"y": [3]})}, [], tmp_path,
                        quick=True).write()
    assert sorted(p.name for p in first) == ["f.csv", "f.png", "f.svg", "findings.md", "u.csv"]
    assert all(p.parent == tmp_path for p in first)
    before = files(tmp_path)
    with writes_fail_past(), pytest.raises(BatchlabError, match="cannot write"):
        big = {"t": pd.DataFrame({"x": range(5000)}), "u": pd.DataFrame({"y": [4]})}
        ask_outputs(study, {}, big, [], tmp_path, quick=True).write()
    assert files(tmp_path) == before
