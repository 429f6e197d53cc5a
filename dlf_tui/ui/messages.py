"""Textual messages: past-tense facts the event pump (and the command worker)
post to the dashboard.  Data travel in ``RunSession``; a message says what
changed, so a handler never blocks on I/O.

Each is a dataclass (``Message.__post_init__`` initialises the message).  The
latest-value facts (``MetricsArrived``, ``EvalArrived``, ``StateChanged``) say
so with ``can_replace``: one still waiting in the dashboard's queue is dropped
when a newer one of its kind arrives behind it, so a fast engine's many chunks a
second cost the UI one handler call per turn of its loop, not one per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


class _Latest(Message):
    """A fact whose newest instance says all the older ones said."""

    def can_replace(self, message: Message) -> bool:
        return type(message) is type(self)


@dataclass
class RunStarted(Message):
    """The run is open: an engine said hello (``live``), or a finished/crashed
    run was opened from disk (read-only)."""

    live: bool
    reconnected: bool = False


@dataclass
class HistoryLoaded(Message):
    """Everything on disk up to the hello's row counts has been read."""

    rows: int
    eval_rows: int


@dataclass
class MetricsArrived(_Latest):
    """Rows were added to the history: the newest chunk's first row ``start``
    and its ``rows`` (older chunks' messages may have been replaced)."""

    start: int
    rows: int


@dataclass
class EvalArrived(_Latest):
    """Rows were added to a held-out (eval) or diagnostics (diag) series."""

    start: int
    rows: int


@dataclass
class StateChanged(_Latest):
    state: str
    step: int
    total: int
    rate: float
    reason: str = ""


@dataclass
class EngineSilent(Message):
    """The engine has sent nothing, not even its beat, for ``Client.silence``'s limit:
    ``line`` says its pid is not responding and what to do ('' : it answers again)."""

    line: str


@dataclass
class EditApplied(Message):
    """A live edit (``set``) took effect from update ``step``; ``params`` are
    the engine's values after it (the wire's ``params_changed``)."""

    step: int
    changes: dict[str, Any]
    params: dict[str, Any]
    source: str = ""


@dataclass
class EventLogged(Message):
    """A line for the event log (from events.jsonl, the engine, or the UI itself)."""

    step: int
    kind: str
    message: str
    level: str = "info"


@dataclass
class CommandSent(Message):
    name: str
    values: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.values = self.values or {}


@dataclass
class CommandAnswered(Message):
    """The engine replied to a command (``ok`` or an ``error`` line), or it
    could not be sent (``ok`` False, ``error`` says why)."""

    name: str
    values: dict[str, Any] | None
    ok: bool
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.values = self.values or {}
        self.data = self.data or {}


@dataclass
class RunEnded(Message):
    """The engine closed the connection for good (finished, stopped, crashed),
    or the run was read-only from the start; the dashboard is now read-only."""

    state: str
    reason: str = ""
