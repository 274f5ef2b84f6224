"""Command-line options made from the settings' declaration (``settings.py``).

A command decorated with :func:`settings_options` takes every declared setting as an option
(``--batch-size``, flags as ``--nesterov/--no-nesterov``), grouped in ``--help`` as the
declaration groups them; values arrive as text and are read by the setting itself, so the
command line says what ``batchlab.train`` and a config file say about a bad value.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence

import typer

from batchlab import settings
from batchlab.settings import Setting


def settings_options(settings: Sequence[Setting], defaults: dict[str, Any] | None = None,
                     helps: dict[str, str] | None = None, aliases: bool = False) -> Callable:
    """Decorator: the command ``fn(given, **own)`` takes ``settings`` as options before its own
    parameters and receives the ones given as the dict ``given`` (not given: absent).
    ``defaults`` and ``helps``: this command's own defaults and help texts, by setting name;
    ``aliases``: accept the settings' older names too (options a command had before)."""
    defaults, helps = defaults or {}, helps or {}

    def wrap(fn: Callable) -> Callable:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in list(inspect.signature(fn, eval_str=True).parameters.values())[1:]]
        options = [_option(s, defaults.get(s.name, s.default), helps.get(s.name), aliases) for s in settings]

        def command(**kwargs: Any) -> Any:
            given = {s.name: kwargs.pop(s.name) for s in settings}
            return fn({name: value for name, value in given.items() if value is not None}, **kwargs)

        command.__signature__ = inspect.Signature(options + own)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in options + own}
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        return command

    return wrap


def _option(setting: Setting, default: Any, help_text: str | None, aliases: bool) -> inspect.Parameter:
    names = [setting.option] + (["--" + alias.replace("_", "-") for alias in setting.aliases] if aliases else [])
    if setting.flag:
        names = [f"{setting.option}/--no-{setting.option[2:]}"]
    if setting.short:
        names.append(setting.short)
    text = setting.describe(default) if help_text is None else help_text
    option = typer.Option(None, *names, help=text, show_default=False, rich_help_panel=setting.group,
                          metavar=None if setting.flag else ("LIST" if setting.axis else "VALUE"))
    return inspect.Parameter(setting.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=Optional[bool] if setting.flag else Optional[str])


def settings_reference() -> str:
    """Every setting as Markdown, grouped as ``--help`` groups them (``docs/settings.md`` is
    this text; a test keeps it so)."""
    lines = ["# Settings", "", "Generated from `batchlab/settings.py` by `batchlab.cli.options.settings_reference()`. "
             "Each "
             "setting is a keyword of `batchlab.train` and `batchlab sweep`'s config keys as written here, and an "
             "option of `batchlab train` / `batchlab sweep` with `-` for `_`; *axis* settings take a list "
             "(one run per value). Sweep-only settings and a sweep's own defaults are at the end.", ""]
    for group in dict.fromkeys(s.group for s in settings.TRAINING + settings.SWEEP):
        lines += [f"## {group}", "", "| setting | default | what |", "|---|---|---|"]
        for s in (s for s in settings.TRAINING + settings.SWEEP if s.group == group):
            own = settings.SWEEP_DEFAULTS.get(s.name)
            default = settings.as_text(s.default) + (f" (sweep: {own})" if own is not None else "")
            what = s.help + (f" ({s.unit})" if s.unit else "") + ("; *axis*" if s.axis else "") + f"; e.g. `{s.example}`"
            lines.append(f"| `{s.name}` | {default} | {what.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)
