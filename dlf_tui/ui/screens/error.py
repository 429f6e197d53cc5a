"""A run that could not start: its one-line reason and the end of engine.log."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Static

from dlf_tui.ui import keys
from dlf_tui.ui.widgets.footer import StableFooter


class ErrorScreen(Screen):
    BINDINGS = keys.ERROR

    def __init__(self, title: str, reason: str, log: Path | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.reason = reason
        self.log_path = log

    def compose(self) -> ComposeResult:
        tail = ""
        if self.log_path is not None:
            try:
                lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                tail = "\n".join(lines[-12:])
            except OSError:
                tail = ""
        with Vertical(id="error-box"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.reason, id="error-reason", markup=False)
            if tail:
                yield Static(f"{self.log_path}:", classes="dialog-text", markup=False)
                yield Static(tail, id="error-log", markup=False)
        yield StableFooter()

    def action_back(self) -> None:
        self.app.call_later(self.app.action_open_picker)  # type: ignore[attr-defined]
