"""Models given by import path: ``my_models.py:make_model`` (a file) or
``package.module:make_model`` (an importable module).

A file path is made absolute, so sweep workers started in another folder (worker processes,
Ray tasks) import the same file; the run's model name is ``import:/abs/path/my_models.py:make_model``
and its identity also holds the model's fingerprint (``models.fingerprint``), so editing the
file gives new runs. A file is executed as a module of its own (named after its path, so
two files with one name never meet), with its folder on ``sys.path`` while it runs, so it can
import the modules beside it. If Keras is not imported yet, ``KERAS_BACKEND`` defaults to
``jax`` first (batchlab runs Keras models on its JAX backend).

Every failure is one line naming the file: it does not exist, it has no such function, or it
raised on import (the exception's type and message, with the install hint when a framework
is missing).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

from batchlab.errors import BatchlabError

PREFIX = "import:"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
HINTS = {"flax": "pip install 'batchlab[flax]'", "equinox": "pip install 'batchlab[equinox]'",
         "keras": "pip install 'batchlab[keras]'", "torch": "pip install torch"}
_loaded: dict[tuple[str, str], Any] = {}  # (path, SHA-1 of its source) -> module


def is_import_path(text: Any) -> bool:
    """Whether ``text`` names a model by import path (``file.py:fn``, ``pkg.mod:fn`` or an
    ``import:`` name) rather than a built-in model."""
    if not isinstance(text, (str, Path)):
        return False
    text = str(text)
    if text.startswith(PREFIX):
        return True
    where, sep, attr = text.rpartition(":")
    return bool(sep and where and (_is_file(where) or _MODULE.match(where)))


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def canonical(text: str | Path) -> str:
    """``import:/abs/path/file.py:fn`` or ``import:pkg.mod:fn`` for an import path."""
    text = str(text)
    if text.startswith(PREFIX):
        text = text[len(PREFIX):]
    where, sep, attr = text.rpartition(":")
    if not sep or not where or not _IDENTIFIER.match(attr):
        raise BatchlabError(f"model {text!r}: write file.py:function or package.module:function")
    if _is_file(where):
        where = str(Path(where).expanduser().resolve())
    return f"{PREFIX}{where}:{attr}"


def relative_to(text: str, folder: str | Path) -> str:
    """An import path whose relative file path is read from ``folder`` (e.g. a sweep config's)."""
    if not is_import_path(text) or text.startswith(PREFIX):
        return text
    where, _, attr = text.rpartition(":")
    if not _is_file(where) or Path(where).expanduser().is_absolute():
        return text
    return f"{Path(folder) / where}:{attr}"


def load(text: str | Path) -> tuple[Any, str]:
    """The object an import path names and a label for messages (``make_model in /abs/f.py``)."""
    name = canonical(text)
    where, _, attr = name[len(PREFIX):].rpartition(":")
    module = _load_file(where) if _is_file(where) else _load_module(where)
    what = f"model file {where}" if _is_file(where) else f"model module {where}"
    if not hasattr(module, attr):
        defined = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
                         and getattr(v, "__module__", None) == module.__name__)
        listing = f" (it defines: {', '.join(defined[:8])})" if defined else " (it defines no functions)"
        raise BatchlabError(f"{what} has no function {attr!r}{listing}")
    return getattr(module, attr), f"{attr} in {where}"


def _load_file(where: str):
    path = Path(where)
    if not path.exists():
        raise BatchlabError(f"model file {path} does not exist")
    if not path.is_file():
        raise BatchlabError(f"model file {path} is not a file")
    source = path.read_bytes()
    key = (str(path), hashlib.sha1(source).hexdigest())  # an edited file is imported again
    if key in _loaded:
        return _loaded[key]
    module_name = f"batchlab_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}_{_safe(path.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BatchlabError(f"model file {path} cannot be imported as Python (it must end in .py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses (linen Modules) look their module up while defined
    _default_keras_backend()
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # the user's code: a syntax error, a missing package, anything
        sys.modules.pop(module_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise  # Ctrl-C, not the model's doing
        raise BatchlabError(f"model file {path} {_on_import(exc)}") from None
    finally:
        if str(path.parent) in sys.path:
            sys.path.remove(str(path.parent))
    _loaded[key] = module
    return module


def _load_module(where: str):
    _default_keras_backend()
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and (where == exc.name or where.startswith(exc.name + ".")):
            raise BatchlabError(f"model module {where} cannot be imported: no module named {exc.name!r}") from None
        raise BatchlabError(f"model module {where} raised ModuleNotFoundError on import: {_message(exc)}") from None
    except (Exception, SystemExit) as exc:
        raise BatchlabError(f"model module {where} {_on_import(exc)}") from None


def _on_import(exc: BaseException) -> str:
    """What the user's code did on import, for a message: it exited (``sys.exit``), or raised."""
    if isinstance(exc, SystemExit):
        return f"exited on import (sys.exit({exc.code!r}))"
    return f"raised {type(exc).__name__} on import: {_message(exc)}"


def _message(exc: BaseException) -> str:
    """The exception's message on one line, with the install hint when a framework is missing."""
    from batchlab.models.adapters.common import one_line

    text = one_line(exc)
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    top = (missing or "").split(".")[0]
    return text + (f" ({HINTS[top]})" if top in HINTS else "")


def _safe(stem: str) -> str:
    return re.sub(r"\W", "_", stem)


def _default_keras_backend() -> None:
    """Keras models run on Keras' JAX backend: make it the default before Keras is imported."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "jax")


__all__ = ["PREFIX", "is_import_path", "canonical", "load", "relative_to"]
