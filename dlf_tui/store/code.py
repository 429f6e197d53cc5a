"""The user code a run directory keeps: a copy of each entry's source file.

A run whose model or data set is the user's own (``core/entries.py``) keeps, in
``code/``, a copy of the Python file each entry came from, and in
``code/manifest.json`` where it came from and its SHA-256 — so the run can be
reproduced from its directory alone.  ``resume`` runs the saved copies.

Running code that came with a run directory is running someone else's program:
``trust_problem`` says when resuming would do that (a saved copy that is not,
byte for byte, the file at its recorded origin on this machine), and the CLI then
asks for ``--trust-code``.  No torch, nothing imported or run here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dlf_tui.core.errors import RunError
from dlf_tui.store import files

CODE = "code"
MANIFEST = "code/manifest.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class SavedEntry:
    role: str  # model | data
    spec: str  # the entry as in the config
    kind: str  # file | module | plugin
    module: str  # the module name it was imported as ("" for a file)
    origin: str  # the source file's path when the run started
    copy: str  # the saved copy, relative to the run directory
    sha256: str

    def origin_state(self) -> str:
        """"same", "changed" or "missing": the origin file now, against the saved copy."""
        try:
            return "same" if sha256(Path(self.origin)) == self.sha256 else "changed"
        except OSError:
            return "missing"


def saved_entries(run_dir: Path) -> list[SavedEntry]:
    """The run's saved entries ([] when it has none); RunError (one line) for a
    malformed manifest."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return []
    doc = files.read_json(path)
    items = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise RunError(f"{path}: unreadable manifest.json: no list of entries")
    out = []
    for item in items:
        try:
            entry = SavedEntry(**{k: item[k] for k in SavedEntry.__dataclass_fields__})
        except (KeyError, TypeError):
            raise RunError(f"{path}: unreadable manifest.json: a malformed entry") from None
        if not all(isinstance(v, str) for v in vars(entry).values()):
            raise RunError(f"{path}: unreadable manifest.json: a malformed entry")
        if Path(entry.copy).is_absolute() or ".." in Path(entry.copy).parts:
            raise RunError(f"{path}: unreadable manifest.json: a copy outside the run directory")
        out.append(entry)
    return out


def trust_problem(run_dir: Path) -> str:
    """Why continuing this run would execute code that is not already on this machine
    ("" when it would not): a saved copy whose origin file is missing or differs."""
    for e in saved_entries(run_dir):
        state = e.origin_state()
        if state != "same":
            why = "is not on this machine" if state == "missing" else "has changed since"
            return (f"resuming runs the {e.role} code saved in the run directory "
                    f"({Path(run_dir) / e.copy}), and {e.origin} {why}: read the copy, "
                    f"then pass --trust-code")
    return ""
