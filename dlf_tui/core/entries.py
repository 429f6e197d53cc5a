"""What a user may name as a run's model or data set, besides the built-in ones.

``model.kind`` and ``data.name`` take a built-in name, or an *entry*:

- ``"./file.py:factory"`` (or any path ending in ``.py``): a function in a Python
  file.  A relative path is relative to the preset file it is written in (with
  ``--set``, to the current directory); the config keeps it absolute.
- ``"pkg.module:factory"``: a function in an importable module.
- a plugin name: what an installed package offers through the entry-point
  groups ``dlf_tui.models`` and ``dlf_tui.datasets`` (``name = "pkg.mod:func"``).

This module only reads the text (and the installed packages' metadata): nothing
is imported or run here.  ``engine/user_code.py`` loads and calls entries.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

GROUPS = {"model": "dlf_tui.models", "data": "dlf_tui.datasets"}  # role → entry-point group
FIELDS = {"model": "model.kind", "data": "data.name"}  # role → the config key that names it
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_ENTRY = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}")
_FUNCTION = re.compile(_IDENT)


@dataclass(frozen=True)
class Entry:
    """A parsed entry: ``kind`` file (``target`` a path), module (``target`` a dotted
    module name) or plugin (``target`` its ``module:function`` from the metadata)."""

    text: str  # as written in the config
    kind: str  # "file" | "module" | "plugin"
    target: str
    function: str
    plugin: str = ""  # the plugin's name (kind "plugin")

    @property
    def module(self) -> str:
        """The module to import (module and plugin entries)."""
        return self.target


@functools.cache
def plugins(role: str) -> dict[str, str]:
    """name → ``module:function`` of the installed plugins of ``role`` (model | data)."""
    try:
        found = metadata.entry_points(group=GROUPS[role])
    except Exception:  # noqa: BLE001 - a broken installed distribution must not stop us
        return {}
    return {ep.name: ep.value for ep in found}


def is_entry_text(text: str) -> bool:
    """True if ``text`` reads as a file or module entry (not a built-in or plugin name)."""
    return ":" in text


def parse(text: str, role: str) -> Entry | None:
    """The entry ``text`` names, or None for a name that is not one (built-in or
    unknown).  Raises ValueError with the reason for a malformed entry."""
    if not is_entry_text(text):
        found = plugins(role).get(text)
        if found is None:
            return None
        module, _, function = found.partition(":")
        if not (_MODULE_ENTRY.fullmatch(found) and function):
            raise ValueError(f"plugin {text!r} points at {found!r}, not at a module:function")
        return Entry(text, "plugin", module, function, plugin=text)
    target, _, function = text.rpartition(":")
    if not _FUNCTION.fullmatch(function):
        raise ValueError(f"{function!r} is not a function name (expected \"./file.py:function\" "
                         f"or \"package.module:function\")")
    if target.endswith(".py"):
        return Entry(text, "file", target, function)
    if _MODULE_ENTRY.fullmatch(text):
        return Entry(text, "module", target, function)
    raise ValueError("expected \"./file.py:function\" or \"package.module:function\"")


def resolve(text: str, base: Path) -> str:
    """``text`` with a relative file path made absolute against ``base``; anything
    else unchanged."""
    if not is_entry_text(text):
        return text
    target, _, function = text.rpartition(":")
    if not target.endswith(".py"):
        return text
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = (base / path).resolve()
    return f"{path}:{function}"


def check(text: str, role: str, builtins: tuple[str, ...]) -> str:
    """"" if ``text`` is a valid value of the role's key, else why not (one line)."""
    if text in builtins:
        return ""
    try:
        if parse(text, role) is not None:
            return ""
    except ValueError as err:
        return str(err)
    offered = sorted(plugins(role))
    extra = f"; installed plugins: {', '.join(offered)}" if offered else ""
    what = "factory" if role == "model" else "loader"
    return (f"must be one of {', '.join(builtins)}{extra}, or your own "
            f"\"./file.py:{what}\" or \"package.module:{what}\"")
