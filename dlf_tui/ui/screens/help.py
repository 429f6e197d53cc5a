"""`?`: every key of the screen underneath, with what it does."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


def key_table(screen: Screen) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", justify="right")
    table.add_column()
    seen = set()
    bindings = list(getattr(screen, "BINDINGS", [])) + list(screen.app.BINDINGS)
    for b in bindings:
        if not isinstance(b, Binding):
            b = Binding(*b)
        if b.description in seen or not b.description:
            continue
        seen.add(b.description)
        keys = b.key_display or " / ".join(screen.app.get_key_display(Binding(k.strip(), ""))
                                           for k in b.key.split(","))
        table.add_row(keys, b.description)
    table.add_row("ctrl+p", "Command palette (every action is there too)")
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
            yield Static("Escape leaves an input field; Enter in a field applies it.",
                         classes="dialog-text")

    def action_close(self) -> None:
        self.dismiss(None)
