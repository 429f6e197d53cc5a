"""The dashboard's fork and extend dialogs, and what they ask of the store.

``ForkScreen``: a new run from the watched run's exact parameters at an update
(a live run: the update of the checkpoint its engine takes when Enter is pressed;
an ended one: its last update), with the A, T and lr typed in the dashboard's own
``Controls`` (the same fields and checks) and the child's length.  It dismisses
with a ``ForkRequest``; the app's ``fork_run`` worker asks for the checkpoint, makes
the child (``store/fork.py``), starts its engine and opens the overlay of both.

``ExtendScreen``: N more updates for a finished or stopped run; the app's
``extend_run`` worker writes the new total (``store.fork.continued``, what
``resume --steps`` writes) and resumes the engine, and the dashboard follows it.
No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, Static
from textual.widgets.input import Selection

from dlf_tui.core.config import ConfigError
from dlf_tui.store import fork as forks
from dlf_tui.ui import fmt, keys
from dlf_tui.ui.widgets.controls import LABELS, Controls, parse_live

DEFAULT_MORE = 10_000  # more updates offered when the run's own length is not known
# the config key behind each live field (store/fork.LIVE_KEYS, the other way round)
SET_KEYS = {name: key for key, name in forks.LIVE_KEYS.items()}


def next_pace(current: Any) -> float:
    """The pace after ``current`` in ``keys.PACES`` (full → 10k → 1k → 100 → full); a
    pace outside the cycle (set by ``--set run.pace=…`` or ``ctl``) goes to the next
    slower one of it, or to full speed."""
    try:
        now = float(current or 0)
    except (TypeError, ValueError):
        now = 0.0
    if now in keys.PACES:
        return float(keys.PACES[(keys.PACES.index(now) + 1) % len(keys.PACES)])
    slower = [p for p in keys.PACES if 0 < p < now]
    return float(max(slower)) if slower else 0.0


def pace_text(pace: Any) -> str:
    """'1k/s', or 'full speed' for 0 / unknown."""
    try:
        p = float(pace or 0)
    except (TypeError, ValueError):
        p = 0.0
    return f"{fmt.si(p)}/s" if p > 0 else "full speed"


def more_default(total: int, done: int) -> int:
    """N more updates to offer: what a stopped run has left, else the run's own length
    (10,000 when it has none)."""
    if total > done:
        return total - done
    return total if total > 0 else DEFAULT_MORE


def parse_count(text: str, least: int, what: str) -> int:
    """An update count typed, at least ``least``; ConfigError (one line) otherwise."""
    text = text.strip().replace(",", "").replace("_", "")
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(f"{what}: a whole number of updates") from None
    if n < least:
        raise ConfigError(f"{what}: at least {least:,}")
    return n


class Count(Validator):
    def __init__(self, least: int, what: str) -> None:
        super().__init__()
        self.least, self.what = least, what

    def validate(self, value: str) -> ValidationResult:
        try:
            parse_count(value, self.least, self.what)
        except ConfigError as err:
            return self.failure(str(err))
        return self.success()


@dataclass
class ForkRequest:
    """What the fork dialog asked for: the live values changed, the child's length."""

    changes: dict[str, Any]
    steps: int
    pace: float | None = None  # the child's pace when not its config's (the parent's live one)
    sets: list[str] = field(init=False)

    def __post_init__(self) -> None:
        values = dict(self.changes)
        if self.pace is not None:
            values["pace"] = self.pace
        self.sets = [f"{SET_KEYS[k]}={v!r}" for k, v in values.items()]

    def describe(self) -> str:
        return ", ".join(f"{LABELS.get(k, k)}={fmt.num(v, 6)}" for k, v in self.changes.items())


class ForkScreen(ModalScreen[ForkRequest | None]):
    """A, T, lr (the dashboard's ``Controls``) and the child's length; Enter forks."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_id: str, params: dict[str, Any], where: str, steps: int,
                 least: int, pace: float | None = None, pace_note: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.run_id = run_id
        self.params = dict(params)
        self.where = where  # at which update, in words
        self.steps = steps  # the child's length offered
        self.least = least  # the child's length must be at least this
        self.pace = pace  # the parent's live pace, given to the child (None: its config's)
        self.pace_note = pace_note or "pace: as configured"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="fork-dialog"):
            yield Static(f"Fork {self.run_id}", classes="dialog-title", markup=False)
            yield Static(f"A new run from its exact parameters {self.where}; from the next "
                         "update on it trains with these values:", classes="dialog-text",
                         markup=False)
            yield Controls(id="fork-params", hint="Enter forks with these values")
            with Horizontal(id="fork-steps"):
                yield Label("updates", classes="control-label")
                yield Input(str(self.steps), id="in-steps", compact=True,
                            validators=[Count(self.least, "updates")],
                            validate_on=["changed", "submitted"], select_on_focus=True,
                            tooltip="the child's length (its run.steps), counted from update 1")
                yield Static("the child's total (run.steps)", id="steps-msg")
            yield Static(f"{self.pace_note}.  The overlay of both opens from the fork update on.",
                         classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Fork \\[enter]", id="fork-go", variant="primary")
                yield Button("Cancel \\[esc]", id="fork-cancel")

    def on_mount(self) -> None:
        controls = self.query_one(Controls)
        controls.show_params(self.params, force=True)
        controls.set_live(True)
        first = controls.input("amplitude")
        first.focus()
        _select_all(first)  # focused before its value was shown: typing replaces it

    def request(self) -> ForkRequest | None:
        """The values typed, checked (None: one is wrong; its reason is shown)."""
        controls = self.query_one(Controls)
        changes: dict[str, Any] = {}
        for name in LABELS:
            inp = controls.input(name)
            if not controls.changed(name):
                continue
            try:
                value = parse_live(name, inp.value)
            except ConfigError as err:
                controls.message(str(err), error=True)
                inp.focus()
                return None
            if value != self.params.get(name):
                changes[name] = value
        steps_in = self.query_one("#in-steps", Input)
        try:
            steps = parse_count(steps_in.value, self.least, "updates")
        except ConfigError as err:
            self._steps_message(str(err), error=True)
            steps_in.focus()
            return None
        return ForkRequest(changes, steps, self.pace)

    def _steps_message(self, text: str, error: bool = False) -> None:
        msg = self.query_one("#steps-msg", Static)
        msg.update(text)
        msg.set_class(error, "-error")

    def submit(self) -> None:
        req = self.request()
        if req is None:
            self.app.bell()
            return
        self.dismiss(req)

    @on(Controls.Submitted)
    def _field_submitted(self, msg: Controls.Submitted) -> None:
        msg.stop()
        self.submit()

    @on(Input.Submitted, "#in-steps")
    def _steps_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    @on(Input.Changed, "#in-steps")
    def _steps_changed(self, event: Input.Changed) -> None:
        result = event.validation_result
        if result is not None and not result.is_valid:
            self._steps_message(result.failure_descriptions[0], error=True)
        else:
            self._steps_message("the child's total (run.steps)")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "fork-go":
            self.submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ExtendScreen(ModalScreen[int | None]):
    """N more updates for an ended run; dismisses with N (None: cancelled)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_id: str, state: str, done: int, total: int) -> None:
        super().__init__(classes="dialog-screen")
        self.run_id, self.state, self.done, self.total = run_id, state, done, total

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="extend-dialog"):
            yield Static(f"Extend {self.run_id}", classes="dialog-title", markup=False)
            yield Static(f"It {self.state} at update {self.done:,} of {self.total:,}.  Its engine "
                         "resumes from its last checkpoint and trains on, as "
                         "`dlf-tui resume RUN --steps TOTAL` does.", classes="dialog-text",
                         markup=False)
            with Horizontal(id="extend-more"):
                yield Label("more updates", classes="control-label")
                yield Input(str(more_default(self.total, self.done)), id="in-more", compact=True,
                            validators=[Count(1, "more updates")],
                            validate_on=["changed", "submitted"], select_on_focus=True)
                yield Static("", id="more-msg")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Extend \\[enter]", id="extend-go", variant="primary")
                yield Button("Cancel \\[esc]", id="extend-cancel")

    def on_mount(self) -> None:
        inp = self.query_one("#in-more", Input)
        inp.focus()
        _select_all(inp)
        self._show_total()

    def _show_total(self, error: str = "") -> None:
        msg = self.query_one("#more-msg", Static)
        if not error:
            try:
                more = parse_count(self.query_one("#in-more", Input).value, 1, "more updates")
            except ConfigError as err:
                error = str(err)
            else:
                msg.update(f"→ update {self.done + more:,} in all")
        if error:
            msg.update(error)
        msg.set_class(bool(error), "-error")

    @on(Input.Changed, "#in-more")
    def _more_changed(self) -> None:
        self._show_total()

    def submit(self) -> None:
        try:
            more = parse_count(self.query_one("#in-more", Input).value, 1, "more updates")
        except ConfigError as err:
            self._show_total(str(err))
            self.app.bell()
            return
        self.dismiss(more)

    @on(Input.Submitted, "#in-more")
    def _more_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "extend-go":
            self.submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _select_all(inp: Input) -> None:
    """Select the whole value, so typing replaces it (Input.select_all is newer than
    the textual floor pyproject.toml declares)."""
    inp.selection = Selection(0, len(inp.value))
