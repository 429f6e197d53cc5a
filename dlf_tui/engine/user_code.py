"""Loading and calling the user's own entries (``core/entries.py``).

``UserCode(run_dir, resume)`` is what the Trainer asks for a model factory or a
data loader.  On a run's first start it imports the entry (a file, a module or
a plugin), copies its source file into the run directory and records it
(``store/code.py``); on ``resume`` it runs the saved copy instead, and says so
when the file at the recorded origin has changed since.

Every failure is a ``UserCodeError`` (a SetupError: one line, exit 2, nothing
trained) naming the entry — the file is missing, has no such function, the
function raised (its first line here, the traceback in ``engine.log``) …
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from dlf_tui.core import entries
from dlf_tui.core.errors import SetupError, first_line, printable
from dlf_tui.store import code as codestore
from dlf_tui.store.run import write_json_atomic

log = logging.getLogger("dlf_tui.engine")


class UserCodeError(SetupError):
    """A user entry could not be loaded, raised, or returned something unusable."""


def raised(err: BaseException) -> str:
    """``TypeName: first line`` of an exception from user code."""
    line = printable(first_line(err))[:200]
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


class UserCode:
    """The user entries of one run: loaded once each, their sources kept in ``run_dir``
    (None: load without keeping anything, e.g. in tests).  ``keep=False``: read the
    run's saved copies but write nothing (ranks > 0 of a distributed run)."""

    def __init__(self, run_dir: Path | None = None, resume: bool = False, keep: bool = True):
        self.dir = Path(run_dir) if run_dir is not None else None
        self.resume, self.keep = resume, keep and run_dir is not None
        self.notes: list[str] = []  # what the run's events should say (a changed origin …)
        saved = codestore.saved_entries(self.dir) if self.dir is not None else []
        self.saved = {(e.role, e.spec): e for e in saved}

    def where(self, role: str, spec: str) -> str:
        return f"{entries.FIELDS[role]} = {spec}"

    # -- loading ---------------------------------------------------------------------------
    def function(self, role: str, spec: str) -> Callable[..., Any]:
        """The callable ``spec`` names."""
        where = self.where(role, spec)
        try:
            entry = entries.parse(spec, role)
        except ValueError as err:
            raise UserCodeError(f"{where}: {err}") from None
        if entry is None:  # pragma: no cover - config validation
            raise UserCodeError(f"{where}: not an entry")
        saved = self.saved.get((role, spec)) if self.resume else None
        if saved is not None:
            module = self._import_saved(saved, where)
        else:
            module, origin = self._import(entry, where)
            self._keep(role, entry, module, origin)
        fn = getattr(module, entry.function, None)
        source = entry.target if entry.kind == "file" else entry.module
        if fn is None:
            raise UserCodeError(f"{where}: {source} has no function {entry.function!r}")
        if not callable(fn):
            raise UserCodeError(f"{where}: {source}.{entry.function} is a "
                                f"{type(fn).__name__}, not a function")
        return fn

    def _import(self, entry: entries.Entry, where: str) -> tuple[Any, Path | None]:
        if entry.kind == "file":
            path = Path(entry.target)
            if not path.is_file():
                raise UserCodeError(f"{where}: {path}: no such file")
            return self._exec_file(path, _module_name(path), where), path
        try:
            module = importlib.import_module(entry.module)
        except ModuleNotFoundError as err:
            if err.name and entry.module.startswith(err.name):
                raise UserCodeError(f"{where}: no module named {err.name!r}") from None
            raise self._failed(where, f"importing {entry.module}", err) from None
        except Exception as err:  # noqa: BLE001 - the user's module raised on import
            raise self._failed(where, f"importing {entry.module}", err) from None
        origin = getattr(module, "__file__", None)
        return module, Path(origin) if origin else None

    def _exec_file(self, path: Path, name: str, where: str, package: str = "") -> Any:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserCodeError(f"{where}: {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        if package:
            module.__package__ = package
        sys.modules[name] = module  # dataclasses, pickling and relative imports look here
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's file raised on import
            sys.modules.pop(name, None)
            raise self._failed(where, f"importing {path}", err) from None
        return module

    def _import_saved(self, saved: codestore.SavedEntry, where: str) -> Any:
        """The saved copy, under the module name it had (its package imported first, so
        its relative imports resolve)."""
        assert self.dir is not None
        path = self.dir / saved.copy
        if not path.is_file():
            raise UserCodeError(f"{where}: the saved copy {path} is missing")
        state = saved.origin_state()
        if state != "same":
            note = (f"{where}: {saved.origin} {'changed' if state == 'changed' else 'is gone'} "
                    f"since the run started; using the saved copy {saved.copy}")
            log.warning("%s", note)
            self.notes.append(note)
        if not saved.module:
            return self._exec_file(path, _module_name(path), where)
        package = saved.module.rpartition(".")[0]
        if package:
            try:
                importlib.import_module(package)
            except Exception as err:  # noqa: BLE001
                raise self._failed(where, f"importing {package}", err) from None
        return self._exec_file(path, saved.module, where, package)

    def _keep(self, role: str, entry: entries.Entry, module: Any, origin: Path | None) -> None:
        """Copy the entry's source into the run directory and record it."""
        if not self.keep or origin is None or not origin.is_file():
            return
        assert self.dir is not None
        (self.dir / codestore.CODE).mkdir(exist_ok=True)
        copy = f"{codestore.CODE}/{role}-{origin.name}"
        shutil.copyfile(origin, self.dir / copy)
        saved = codestore.SavedEntry(
            role=role, spec=entry.text, kind=entry.kind,
            module="" if entry.kind == "file" else module.__name__,
            origin=str(origin), copy=copy, sha256=codestore.sha256(self.dir / copy))
        self.saved[(role, entry.text)] = saved
        write_json_atomic(self.dir / codestore.MANIFEST, {
            "entries": [vars(e) for e in self.saved.values()]})
        log.info("%s: source %s kept as %s (sha256 %s)", self.where(role, entry.text),
                 origin, copy, saved.sha256[:16])

    # -- calling ---------------------------------------------------------------------------
    def call(self, role: str, spec: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``; what it raises becomes one line naming the entry."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the user's function raised
            name = getattr(fn, "__name__", "the function")
            raise self._failed(self.where(role, spec), f"{name}()", err) from None

    def _failed(self, where: str, what: str, err: BaseException) -> UserCodeError:
        log.error("%s: %s raised:\n%s", where, what,
                  "".join(traceback.format_exception(type(err), err, err.__traceback__)))
        log_file = self.dir / "engine.log" if self.dir is not None else "the engine's log"
        return UserCodeError(f"{where}: {what} raised {raised(err)} (traceback in {log_file})")


def _module_name(path: Path) -> str:
    """A module name for a user's file, unique per path (two runs' ``model.py`` differ)."""
    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"dlf_user_{stem}_{tag}"

