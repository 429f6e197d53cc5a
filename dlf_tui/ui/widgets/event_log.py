"""The event log: edits, pauses, checkpoints, warnings and errors, with their step."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": ""}
KIND_STYLE = {"set": "bold cyan", "pause": "yellow", "resume": "green", "checkpoint": "blue",
              "stop": "magenta", "finish": "bold blue", "error": "bold red", "refused": "yellow",
              "ui": "dim", "static_tail": "cyan", "stability": "bold magenta"}


class EventLog(RichLog):
    def __init__(self, **kw) -> None:
        super().__init__(max_lines=2000, wrap=True, markup=False, auto_scroll=True, **kw)
        self.border_title = "events"
        self.entries: list[tuple[int, str, str, str]] = []  # the newest few hundred, for tests

    def add(self, step: int, kind: str, message: str, level: str = "info") -> None:
        self.entries.append((step, kind, message, level))
        del self.entries[:-500]
        style = LEVEL_STYLE.get(level) or KIND_STYLE.get(kind, "")
        line = Text.assemble((f"{step:>9,} ", "dim"), (f"{kind:<10.10} ", KIND_STYLE.get(kind, style)),
                             (message, style))
        self.write(line)
