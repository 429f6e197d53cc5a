"""One open run as the UI sees it: its history, schedule clock, state and the
command channel to its engine.  No textual widgets, no torch.

A ``RunSession`` only holds what the dashboard reads.  The sources fill it:
``session.live.LiveSource`` (a running engine's socket), ``session.disk.DiskSource``
(the run directory, read-only) and ``session.member.MemberPolling`` (a sweep
member without a socket, followed from disk); ``session.pump.pump`` picks them.
``send`` is called from short thread workers; replies come back through the
live source's pump (a ``Client`` reads on one thread only).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from dlf_tui.core import series as S
from dlf_tui.core.errors import ClientError
from dlf_tui.core.states import RUNNING, STARTING
from dlf_tui.store import run as runs
from dlf_tui.ui.history import RunHistory
from dlf_tui.ui.timeline import Timeline
from dlf_tui.wire import protocol
from dlf_tui.wire.client import Client

Post = Callable[[Any], Any]
Cancelled = Callable[[], bool]

RECONNECT_WAIT_S = 3.0  # a command waiting for its reply also waits this long for a reconnection


@dataclass
class Pending:
    name: str
    values: dict[str, Any] | None
    done: threading.Event = field(default_factory=threading.Event)
    reply: protocol.Reply | None = None


class RunSession:
    """The state of one open run that the dashboard and the compare view read."""

    def __init__(self, run: runs.Run, proc: Any = None,
                 keep: dict[str, tuple[str, ...]] | None = None) -> None:
        self.run = run
        self.proc = proc  # the engine's Popen when this TUI spawned it
        # read from disk only these columns of each series (the compare view holds up
        # to 32 runs); None: every column
        self.keep = keep
        self.history = RunHistory()
        self.timeline = Timeline.start(1, 1)
        self.config: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.state: str = STARTING
        self.step = 0
        self.total = 0
        self.rate = 0.0
        self.reason = ""
        self.device = ""
        self.live = False
        self.client: Client | None = None
        self.sent: list[tuple[str, dict[str, Any] | None]] = []  # every command that went out
        self._lock = threading.Lock()  # guards client/_pending/sent
        self._linked = threading.Condition(self._lock)  # notified when the connection changes
        self._pending: dict[int, Pending] = {}

    # -- facts -------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def preset(self) -> str:
        return str(self.config.get("name", "?"))

    @property
    def classes(self) -> int:
        return S.classes_of(self.history.metric_columns) or int(
            self.config.get("data", {}).get("classes", 1) or 1)

    def eta(self, rate: float | None = None) -> float | None:
        """Seconds left at ``rate`` updates/s (None: the engine's rate)."""
        rate = self.rate if rate is None else rate
        if self.state != RUNNING or rate <= 0 or self.total <= self.step:
            return None
        return (self.total - self.step) / rate

    # -- commands (from a thread worker) ----------------------------------------------------
    def send(self, name: str, values: dict[str, Any] | None = None,
             wait: float = 0.0) -> Pending:
        """Send a command; with ``wait`` seconds, block (in a worker thread) for
        its reply (waiting for a reconnection first, if one is under way).  Raises
        ``ClientError`` if the run is not live and
        ``protocol.ProtocolError`` for a value the protocol refuses (nothing is sent)."""
        with self._lock:
            if wait and self.live:  # a dropped slow reader reconnects within moments
                self._linked.wait_for(lambda: self.client is not None and not self.client.closed,
                                      timeout=min(wait, RECONNECT_WAIT_S))
            client = self.client
            if client is None or client.closed:
                raise ClientError("the run is not live (read-only)")
            cid = client.send(name, values)
            p = Pending(name, values)
            self._pending[cid] = p
            self.sent.append((name, values))
        if wait:
            p.done.wait(wait)
        return p

    def connected(self, client: Client | None) -> None:
        """The live source's connection (None: it ended; waiting senders are released)."""
        with self._lock:
            self.client = client
            self._linked.notify_all()
            if client is None:
                for p in self._pending.values():
                    p.done.set()
                self._pending.clear()

    def answered(self, reply: protocol.Reply) -> Pending | None:
        """The command ``reply`` answers, marked done (None: not one of ours)."""
        with self._lock:
            p = self._pending.pop(reply.id, None)
        if p is not None:
            p.reply = reply
            p.done.set()
        return p
