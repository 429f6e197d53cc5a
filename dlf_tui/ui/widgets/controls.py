"""Steering inputs: amplitude, period and lr.  Each validates as you type with
the config's own rule (``config.check_live``); a bad value shows the one-line
reason and Enter sends nothing.  A good value posts ``Controls.Submitted``.

The fork dialog (``screens/fork.py``) holds a ``Controls`` of its own: the same
fields and checks, with ``hint`` saying what Enter does there."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Label, Static

from dlf_tui.core import config as cfgmod
from dlf_tui.ui import fmt

LABELS = {"amplitude": "A", "period": "T", "lr": "lr"}


def parse_live(name: str, text: str) -> Any:
    """The value typed for a live parameter, checked; raises ``ConfigError``."""
    text = text.strip()
    if not text:
        raise cfgmod.ConfigError(f"{name}: enter a value")
    return cfgmod.check_live(name, cfgmod.parse_scalar(text))


class LiveValue(Validator):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.param = name

    def validate(self, value: str) -> ValidationResult:
        try:
            parse_live(self.param, value)
        except cfgmod.ConfigError as err:
            return self.failure(str(err))
        return self.success()


class Controls(Horizontal):
    class Submitted(Message):
        """A valid value was entered for a live parameter."""

        def __init__(self, name: str, value: Any) -> None:
            super().__init__()
            self.name = name
            self.value = value

    def __init__(self, *, hint: str = "Enter sets {name}", **kw: Any) -> None:
        super().__init__(**kw)
        self.hint = hint  # shown while a valid value is typed ({name}: the parameter's)

    def compose(self) -> ComposeResult:
        for name, label in LABELS.items():
            yield Label(label, classes="control-label")
            yield Input(id=f"in-{name}", compact=True, validators=[LiveValue(name)],
                        validate_on=["changed", "submitted"], select_on_focus=True,
                        tooltip=f"{name}: type a value, Enter applies it")
        yield Static("", id="control-msg")

    def on_mount(self) -> None:
        self._shown: dict[str, str] = {}

    def input(self, name: str) -> Input:
        return self.query_one(f"#in-{name}", Input)

    def changed(self, name: str) -> bool:
        """The user typed something other than the value shown for ``name``."""
        inp = self.input(name)
        return inp.value != self._shown.get(name, inp.value)

    def message(self, text: str, error: bool = False) -> None:
        msg = self.query_one("#control-msg", Static)
        msg.update(text)
        msg.set_class(error, "-error")

    def show_params(self, params: dict[str, Any], force: bool = False) -> None:
        """Show the engine's values, except in a field the user is editing
        (``force``: there too, e.g. when the edit is abandoned)."""
        for name in LABELS:
            if name not in params or params[name] is None:
                continue
            inp = self.input(name)
            text = fmt.num(params[name], 6)
            if not force and inp.has_focus and inp.value != self._shown.get(name, inp.value):
                continue
            self._shown[name] = text
            inp.value = text

    def set_live(self, live: bool) -> None:
        for name in LABELS:
            self.input(name).disabled = not live

    def on_input_changed(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("in-")
        if name not in LABELS or event.input.value == self._shown.get(name):
            return  # our own update (or an edit undone): not the user's message to change
        if event.validation_result is not None and not event.validation_result.is_valid:
            self.message(event.validation_result.failure_descriptions[0], error=True)
        else:
            self.message(self.hint.format(name=name), error=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        name = (event.input.id or "").removeprefix("in-")
        if name not in LABELS:
            return
        event.stop()
        try:
            value = parse_live(name, event.value)
        except cfgmod.ConfigError as err:
            self.message(str(err), error=True)  # refused here: nothing is sent
            return
        self.message(f"sending {name} = {fmt.num(value, 6)}…")
        self.post_message(self.Submitted(name, value))
