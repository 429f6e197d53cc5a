"""Leaving a live run: stop it, leave it running, or cancel; and a yes/no confirm."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class QuitScreen(ModalScreen[str]):
    """Dismisses with ``"stop"``, ``"leave"`` or ``"cancel"``."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop the run"),
        Binding("l", "choose('leave')", "Leave it running"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__(classes="dialog-screen")
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Quit dlf-tui — run [b]{self.run_id}[/b] is live.", classes="dialog-title")
            yield Static("Stop it (checkpoint and exit the engine), or leave it running "
                         "(`dlf-tui attach` follows it again later)?", classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop the run \\[s]", id="stop", variant="error")
                yield Button("Leave it running \\[l]", id="leave", variant="primary")
                yield Button("Cancel \\[esc]", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes \\[y]", id="yes", variant="error")
                yield Button("No \\[n]", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
