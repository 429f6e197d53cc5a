"""Textual messages: past-tense facts the event pump (and the command worker)
post to the dashboard.  Data travel in ``RunSession``; a message says what
changed, so a handler never blocks on I/O."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class RunStarted(Message):
    """The run is open: an engine said hello (``live``), or a finished/crashed
    run was opened from disk (read-only)."""

    def __init__(self, live: bool, reconnected: bool = False) -> None:
        super().__init__()
        self.live = live
        self.reconnected = reconnected


class HistoryLoaded(Message):
    """Everything on disk up to the hello's row counts has been read."""

    def __init__(self, rows: int, eval_rows: int) -> None:
        super().__init__()
        self.rows = rows
        self.eval_rows = eval_rows


class MetricsArrived(Message):
    """Rows ``start .. start+rows-1`` were added to the history."""

    def __init__(self, start: int, rows: int) -> None:
        super().__init__()
        self.start = start
        self.rows = rows


class EvalArrived(Message):
    """Rows were added to a held-out (eval) or diagnostics (diag) series."""

    def __init__(self, start: int, rows: int) -> None:
        super().__init__()
        self.start = start
        self.rows = rows


class StateChanged(Message):
    def __init__(self, state: str, step: int, total: int, rate: float, reason: str = "") -> None:
        super().__init__()
        self.state = state
        self.step = step
        self.total = total
        self.rate = rate
        self.reason = reason


class EditApplied(Message):
    """A live edit (``set``) took effect from update ``step``; ``params`` are
    the engine's values after it (the wire's ``params_changed``)."""

    def __init__(self, step: int, changes: dict[str, Any], params: dict[str, Any],
                 source: str = "") -> None:
        super().__init__()
        self.step = step
        self.changes = changes
        self.params = params
        self.source = source


class EventLogged(Message):
    """A line for the event log (from events.jsonl, the engine, or the UI itself)."""

    def __init__(self, step: int, kind: str, message: str, level: str = "info") -> None:
        super().__init__()
        self.step = step
        self.kind = kind
        self.message = message
        self.level = level


class CommandSent(Message):
    def __init__(self, name: str, values: dict[str, Any] | None) -> None:
        super().__init__()
        self.name = name
        self.values = values or {}


class CommandAnswered(Message):
    """The engine replied to a command (``ok`` or an ``error`` line), or it
    could not be sent (``ok`` False, ``error`` says why)."""

    def __init__(self, name: str, values: dict[str, Any] | None, ok: bool, error: str = "",
                 data: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.name = name
        self.values = values or {}
        self.ok = ok
        self.error = error
        self.data = data or {}


class RunEnded(Message):
    """The engine closed the connection for good (finished, stopped, crashed),
    or the run was read-only from the start; the dashboard is now read-only."""

    def __init__(self, state: str, reason: str = "") -> None:
        super().__init__()
        self.state = state
        self.reason = reason
