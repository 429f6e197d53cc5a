"""The event log: edits, pauses, checkpoints, warnings and errors, with their step.

The kind column is ``KIND_W`` wide; a longer kind (``static_tail``,
``edge_of_stability``) is written whole and its message follows it on that line:
a kind is never cut."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import RichLog

LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": ""}
KIND_STYLE = {"set": "bold cyan", "pause": "yellow", "resume": "green", "checkpoint": "blue",
              "stop": "magenta", "finish": "bold blue", "error": "bold red", "refused": "yellow",
              "ui": "dim", "static_tail": "cyan", "stability": "bold magenta",
              "edge_of_stability": "bold magenta", "diverged": "bold red", "rollback": "magenta"}
KIND_W = 10  # the kind column: most kinds fit, longer ones push their message along


class EventLog(RichLog):
    def __init__(self, **kw) -> None:
        # min_width=1: lines wrap at the pane's own width (RichLog renders at least 78
        # columns by default, so a narrower pane clipped every long line)
        super().__init__(max_lines=2000, wrap=True, markup=False, auto_scroll=True,
                         min_width=1, **kw)
        self.border_title = "events"
        self.entries: list[tuple[int, str, str, str]] = []  # the newest few hundred, for tests

    def add(self, step: int, kind: str, message: str, level: str = "info") -> None:
        self.entries.append((step, kind, message, level))
        del self.entries[:-500]
        style = LEVEL_STYLE.get(level) or KIND_STYLE.get(kind, "")
        line = Table.grid(padding=(0, 1, 0, 0), expand=True)  # a long message wraps under itself
        line.add_column(width=9, no_wrap=True, justify="right")
        line.add_column(ratio=1)
        line.add_row(Text(f"{step:,}", "dim"),
                     Text.assemble((f"{kind:<{KIND_W}} ", KIND_STYLE.get(kind, style)), (message, style)))
        self.write(line)
