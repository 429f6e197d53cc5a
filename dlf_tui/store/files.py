"""Reading a file of a run or sweep directory that someone else may have written:
bounded in size, UTF-8, and every failure one line (``RunError``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlf_tui.core.errors import RunError, first_line, printable

# What a reader accepts of a run directory written by someone else (a good file is
# far smaller): beyond these, a file is refused in one line rather than loaded whole.
MAX_SMALL_FILE = 1 << 20  # state.json, <series>.json
MAX_CONFIG = 4 << 20  # config.toml
MAX_COLUMNS = 4096  # columns of one series
MAX_EVENT_LINE = 1 << 20  # a longer events.jsonl line is skipped


def reason(err: BaseException) -> str:
    """A parse error as a short printable phrase (one line)."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    return printable(first_line(err) or type(err).__name__)[:120]


def read_text(path: Path, limit: int) -> str:
    """``path``'s text, read no further than ``limit`` bytes; RunError (one line) when
    larger or not UTF-8; OSError (FileNotFoundError …) as it is."""
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise RunError(f"{path}: unreadable {path.name}: larger than {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunError(f"{path}: unreadable {path.name}: {reason(err)}") from None


def read_json(path: Path, limit: int = MAX_SMALL_FILE) -> Any:
    """The JSON document in ``path`` (RunError in one line when it is not)."""
    text = read_text(path, limit)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise RunError(f"{path}: unreadable {path.name}: {reason(err)}") from None
