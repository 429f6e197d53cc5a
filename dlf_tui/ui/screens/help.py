"""`?`: every key of the screen underneath, with what it does and its binding
id (what ``keys.toml`` remaps).  The rows are the screen's active bindings
(``palette.key_rows``): remapped keys show as remapped, keys a read-only run
cannot use are not listed, keys not usable yet are dimmed."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from dlf_tui.ui import settings
from dlf_tui.ui.palette import key_rows


def key_table(screen: Screen) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", justify="right", no_wrap=True)
    table.add_column(ratio=1)  # what it does: wraps to the room left
    table.add_column(style="dim", no_wrap=True)  # the id, whole: what keys.toml names
    for row in key_rows(screen):
        what = row.binding.description + (f" — {row.detail}" if row.detail else "")
        style = "" if row.enabled else "dim"
        table.add_row(Text(row.key_text, style=style), Text(what, style=style), row.binding.id or "")
    table.add_row("ctrl+p", "Command palette (every action is there too)", "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, under: Screen) -> None:
        super().__init__(classes="dialog-screen")
        self.under = under

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Static("Keys", classes="dialog-title")
            yield Static(key_table(self.under))
            yield Static("Escape leaves an input field; Enter in a field applies it.  Remap a key "
                         f"by its id (right) in {settings.config_dir() / settings.KEYS_FILE}, "
                         "e.g. [dashboard] pause = \"p\".", classes="dialog-text", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
