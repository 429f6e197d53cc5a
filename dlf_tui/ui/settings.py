"""What the TUI keeps from one start to the next, beside the presets in the
user's config directory (``$XDG_CONFIG_HOME/dlf-tui``, else ``~/.config/dlf-tui``):

* ``keys.toml``: the user's own keys, binding id → keys (Textual keymaps).  The
  ids are those ``?`` shows; several keys are one string, comma-separated::

      [dashboard]
      pause = "p"              # instead of space
      amplitude_up = "u,plus"
      [app]
      quit = "ctrl+x"

  (``"dashboard.pause" = "p"`` at the top level says the same.)
* ``ui.json``: what the app itself remembers: the theme last chosen.

Neither import torch nor textual; a file that cannot be read costs one line of
warning (``problems``), never the start.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from dlf_tui.core import presets

KEYS_FILE = "keys.toml"
STATE_FILE = "ui.json"
MAX_BYTES = 1 << 16  # a keys file or ui.json larger than this is not ours


def config_dir() -> Path:
    """The user's dlf-tui config directory (the presets' parent)."""
    return presets.user_dir().parent


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _read(path: Path) -> str | None:
    """The file's text; None when it is absent.  Raises OSError / ValueError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 1024} KiB")
    return data.decode("utf-8")


def load_keymap(known: set[str], path: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """``keys.toml`` as a Textual keymap (binding id → keys), and one line per
    problem: an unreadable file, an id no binding has, a value that is not keys."""
    path = path or config_dir() / KEYS_FILE
    try:
        text = _read(path)
        doc = tomllib.loads(text) if text is not None else {}
    except (OSError, ValueError) as err:  # tomllib.TOMLDecodeError is a ValueError
        return {}, [f"{path}: {err}"]
    keymap: dict[str, str] = {}
    problems = []
    for bid, keys in _flatten(doc).items():
        if bid not in known:
            problems.append(f"{path.name}: no key binding has the id {bid!r} (? lists the ids)")
        elif not isinstance(keys, str) or not keys.strip() or any(not k.strip() for k in keys.split(",")):
            problems.append(f"{path.name}: {bid} = {keys!r}: give keys as a string, e.g. \"p\" or \"ctrl+p,p\"")
        else:
            keymap[bid] = ",".join(k.strip() for k in keys.split(","))
    return keymap, problems


def load_state(path: Path | None = None) -> dict[str, Any]:
    """``ui.json`` (empty when absent or unreadable: it is only a memory)."""
    path = path or config_dir() / STATE_FILE
    try:
        text = _read(path)
        doc = json.loads(text) if text is not None else {}
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def save_state(changes: dict[str, Any], path: Path | None = None) -> bool:
    """Merge ``changes`` into ``ui.json`` (written whole or not at all); False
    when it cannot be written (a read-only home: the app goes on without)."""
    path = path or config_dir() / STATE_FILE
    doc = {**load_state(path), **changes}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return False
    return True
