"""The event log: edits, pauses, checkpoints, warnings and errors, with their step.

The kind column is ``KIND_W`` wide; a longer kind (``static_tail``,
``edge_of_stability``) is written whole and its message follows it on that line:
a kind is never cut."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import events
from textual.widgets import RichLog

LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": ""}
KIND_STYLE = {"set": "bold cyan", "pause": "yellow", "resume": "green", "checkpoint": "blue",
              "stop": "magenta", "finish": "bold blue", "error": "bold red", "refused": "yellow",
              "ui": "dim", "static_tail": "cyan", "stability": "bold magenta",
              "edge_of_stability": "bold magenta", "diverged": "bold red", "rollback": "magenta"}
KIND_W = 10  # the kind column: most kinds fit, longer ones push their message along
MAX_LINES = 2000  # lines the log holds (a long event takes several)


class EventLog(RichLog):
    """RichLog renders a line once, at the width it has then; the events are kept
    (as many as it holds lines) and written again when the width changes (``v``
    maximizes the log, a terminal is resized), so they wrap at the width shown."""

    def __init__(self, **kw) -> None:
        # min_width=1: lines wrap at the pane's own width (RichLog renders at least 78
        # columns by default, so a narrower pane clipped every long line)
        super().__init__(max_lines=MAX_LINES, wrap=True, markup=False, auto_scroll=True,
                         min_width=1, **kw)
        self.border_title = "events"
        self.entries: list[tuple[int, str, str, str]] = []  # (step, kind, message, level)
        self._width = 0  # the width the lines were wrapped at

    def add(self, step: int, kind: str, message: str, level: str = "info") -> None:
        self.entries.append((step, kind, message, level))
        del self.entries[:-MAX_LINES]
        self._write((step, kind, message, level))

    def on_resize(self, event: events.Resize) -> None:
        """Wrap again at a new width (before RichLog's own handler, which writes what
        waited for the first size)."""
        width = event.size.width
        if width and self._width and width != self._width:
            self.clear()
            for entry in self.entries:
                self._write(entry)
        self._width = width or self._width

    def _write(self, entry: tuple[int, str, str, str]) -> None:
        # at the width shown (not measured against the console's, which may be narrower);
        # before the first size is known RichLog defers the write and measures then
        self.write(_line(*entry), width=self.scrollable_content_region.width or None)


def _line(step: int, kind: str, message: str, level: str) -> Table:
    """One event: the update, then kind and message (a long message wraps under itself)."""
    style = LEVEL_STYLE.get(level) or KIND_STYLE.get(kind, "")
    line = Table.grid(padding=(0, 1, 0, 0), expand=True)
    line.add_column(width=9, no_wrap=True, justify="right")
    line.add_column(ratio=1)
    line.add_row(Text(f"{step:,}", "dim"),
                 Text.assemble((f"{kind:<{KIND_W}} ", KIND_STYLE.get(kind, style)), (message, style)))
    return line
