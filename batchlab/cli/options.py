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

from batchlab.settings import Setting


def settings_options(settings: Sequence[Setting], defaults: dict[str, Any] | None = None,
                     helps: dict[str, str] | None = None) -> Callable:
    """Decorator: the command ``fn(given, **own)`` takes ``settings`` as options before its own
    parameters and receives the ones given as the dict ``given`` (not given: absent).
    ``defaults`` and ``helps``: this command's own defaults and help texts, by setting name."""
    defaults, helps = defaults or {}, helps or {}

    def wrap(fn: Callable) -> Callable:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in list(inspect.signature(fn, eval_str=True).parameters.values())[1:]]
        options = [_option(s, defaults.get(s.name, s.default), helps.get(s.name)) for s in settings]

        def command(**kwargs: Any) -> Any:
            given = {s.name: kwargs.pop(s.name) for s in settings}
            return fn({name: value for name, value in given.items() if value is not None}, **kwargs)

        command.__signature__ = inspect.Signature(options + own)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in options + own}
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        return command

    return wrap


def _option(setting: Setting, default: Any, help_text: str | None) -> inspect.Parameter:
    names = [setting.option] + ["--" + alias.replace("_", "-") for alias in setting.aliases]
    if setting.flag:
        names = [f"{setting.option}/--no-{setting.option[2:]}"]
    if setting.short:
        names.append(setting.short)
    text = setting.describe(default) if help_text is None else help_text
    option = typer.Option(None, *names, help=text, show_default=False, rich_help_panel=setting.group)
    return inspect.Parameter(setting.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=Optional[bool] if setting.flag else Optional[str])
