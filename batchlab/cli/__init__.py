"""The ``batchlab`` command: parse, call, print. Usage errors print one line and exit 2.

The commands live with what they work on: ``training.py`` (plan, train, sweep: their options
come from the settings' declaration, ``options.py``), ``noise.py``, ``stored.py`` (runs, delete,
check, export, report, analyze: what a store holds) and ``studies.py`` (study, tour). This
module holds the app, what the commands share and the entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

from batchlab.cli import interrupts

if interrupts.is_the_command():
    interrupts.install()  # before numpy, typer and JAX are imported: see interrupts.py

import typer  # noqa: E402

from batchlab.errors import BatchlabError  # noqa: E402

# Markdown: a docstring's paragraph reflows to the terminal instead of keeping its line breaks.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown",
                  help="Train under controlled batch size / epochs / learning rate and see what changes.")

DEFAULT_DB = "batchlab.db"
DEFAULT_OUT = "batchlab-out"
MODEL_HELP = ("your own as file.py:function or package.module:function returning a Flax, Equinox, Keras 3 or "
              "PyTorch model or a batchlab.Model")


def width(wide: bool = False) -> int | None:
    """Columns the command's output may take: the terminal's, 80 when the output goes to a
    pipe or a file, no limit with ``--wide``."""
    if wide:
        return None
    import shutil

    return shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80


def say(text: str, err: bool = False, wide: bool = False) -> None:
    """Print ``text`` wrapped to :func:`width` (a word longer than that, such as a path, is kept
    whole; a wrapped bullet line keeps its indent)."""
    import textwrap

    limit = width(wide)
    lines = []
    for line in text.splitlines() or [""]:
        if limit is None or len(line) <= limit:
            lines.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" -*")) or 0)
        lines.append(textwrap.fill(line, limit, subsequent_indent=indent, break_long_words=False,
                                   break_on_hyphens=False))
    typer.echo("\n".join(lines), err=err)


def damage_of(db: Path) -> str | None:
    """The store's damage note (``Store.damage_note``), read before a command reads the runs; a
    missing or foreign store is refused here, before any folder is made."""
    from batchlab.store import Store

    with Store(db, create=False) as store:
        return store.damage_note()


def warn_if_damaged(note: str | None) -> None:
    """Said last, on one line of stderr (like an error), once the command has done what it could
    with the runs that read whole."""
    if note:
        print(f"warning: {note}", file=sys.stderr)


def console(wide: bool = False):
    """A rich console for tables, :func:`width` columns wide."""
    from rich.console import Console

    return Console(width=width(wide) or 10_000)


def progress_bar(total: int, label: str):
    """A rich progress bar over run-epochs; returns (context manager, advance callback)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("run-epochs"),
                   TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
    task = bar.add_task(label, total=total)
    return bar, lambda k: bar.advance(task, k)


# Set by the commands that train (train, sweep, study): the store and how many runs it held
# before, so that Ctrl-C can say what was saved and how to resume.
_RESUME: dict = {}


def expect_interrupts(db: Path) -> None:
    _RESUME.update(db=db, before=_stored_runs(db))


def _stored_runs(db: Path) -> int:
    """Runs in the store now (0 when there is none yet), read without writing anything."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def _interrupted() -> str:
    """What Ctrl-C leaves behind: the runs stored, and the command that resumes the work."""
    import shlex

    command = "batchlab " + shlex.join(sys.argv[1:])
    if "db" not in _RESUME:  # before the command knew its store: it had stored nothing
        return f"interrupted before anything was stored; run again with: {command}"
    db, before = _RESUME["db"], _RESUME["before"]
    now = _stored_runs(db)
    return (f"interrupted: {now - before} run(s) finished and were stored in {db} by this command "
            f"({now} in all); resume with: {command}")


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="print batchlab's version and exit",
                                       is_eager=True),
          profile: bool = typer.Option(False, "--profile", help="print where the command's wall time went "
                                                                "(imports, tracing, compilation, training, ...)")
          ) -> None:
    """Train under controlled batch size / epochs / learning rate and see what changes."""
    if profile:
        from batchlab import profiling

        profiling.enable()
    if version:
        from batchlab.version import __version__

        typer.echo(f"batchlab {__version__}")
        raise typer.Exit()


try:  # typer carries its own copy of click (0.25 and later)
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - an older typer, on click
    from click.exceptions import NoArgsIsHelpError, UsageError


def main() -> None:
    """The ``batchlab`` entry point: bad input and damaged files are one line on stderr (exit 2),
    Ctrl-C says what was saved and how to resume (exit 130; SIGTERM: 143)."""
    import sqlite3

    try:
        # Not standalone: click's usage errors come here to be said in one line, not a box.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:  # a typer.Exit(code); Ctrl-C is Exit(130)
            sys.exit(code)
    except NoArgsIsHelpError:  # the help is printed
        sys.exit(2)
    except UsageError as exc:
        _fail(f"{exc.format_message()} (see `{_command_of(exc.ctx)} --help`)")
    except typer.Abort:  # end of input at a prompt
        _fail("no answer (end of input): nothing done")
    except BatchlabError as exc:
        _fail(str(exc))
    except sqlite3.DatabaseError as exc:
        _fail(f"the store could not be read or written ({exc}); run batchlab check --db FILE to see what is intact")
    except OSError as exc:
        _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if getattr(exc, "filename", None) else ""))
    except KeyboardInterrupt:
        _stop_interrupted()
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into exit status 130 before it reaches us
            _stop_interrupted()
        raise
    finally:
        _print_profile()


def _command_of(ctx) -> str:
    """``batchlab`` and the subcommand a usage error is about (however batchlab was started)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["batchlab", *reversed(names)])


def _stop_interrupted() -> None:
    print(_interrupted(), file=sys.stderr)
    sys.exit(interrupts.exit_status())


def _print_profile() -> None:
    from batchlab import profiling

    if profiling.enabled():
        print(profiling.table(), file=sys.stderr)


def _fail(message: str) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)
    sys.exit(2)


def console_main() -> None:
    """The installed ``batchlab`` command: :func:`main`, then an exit without the interpreter's
    teardown, which spent 0.35-0.45 s after every command here freeing JAX's compiled programs
    and every module. Everything that must outlive the command is done by then: the store is
    written one transaction at a time and closed, figures and tables are written, worker
    processes have ended; output is flushed and the exit handlers still run (a local Ray shuts
    down). A SIGINT or SIGTERM received at any point makes the exit status 130 or 143, never 0
    (``interrupts.py``). Tests call :func:`main`."""
    import atexit
    import os

    interrupts.install()  # where it was not already, as the command was imported
    try:
        try:
            main()
            code = 0
        finally:
            interrupts.finish()  # from here on a signal is only kept: the exit handlers run to their end
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # raised as main returned, after its own handling
        print(_interrupted(), file=sys.stderr)
        code = interrupts.exit_status()
    if interrupts.received() is not None and code != interrupts.exit_status():  # not reported yet
        print(_interrupted(), file=sys.stderr)
        code = interrupts.exit_status()
    if isinstance(code, str):  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()  # noqa: SLF001  (what interpreter shutdown would run; os._exit skips it)
    os._exit(code or 0)


# The commands register themselves on ``app`` when their module is imported (after ``app``
# exists); this order is the order of ``batchlab --help``.
from batchlab.cli import training  # noqa: E402,F401
from batchlab.cli import noise  # noqa: E402,F401
from batchlab.cli import advice  # noqa: E402,F401
from batchlab.cli import rescale  # noqa: E402,F401
from batchlab.cli import stored  # noqa: E402,F401
from batchlab.cli import studies  # noqa: E402,F401
