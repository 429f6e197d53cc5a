"""The live socket source: a running engine's stream into a ``RunSession``.

``pump`` runs in the app's event-pump thread worker: it connects, reads the
history on disk up to the hello's row counts (``DiskSource.catch_up``), then
follows the engine's chunks and posts ``messages`` facts.  It reconnects when
the engine drops a slow reader, opens the run from disk when no engine
answers, and goes read-only from disk when the engine exits.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dlf_tui.core import series as S
from dlf_tui.core.errors import ClientError
from dlf_tui.ui import messages as M
from dlf_tui.ui.timeline import Timeline
from dlf_tui.wire import protocol
from dlf_tui.wire.client import Client

if TYPE_CHECKING:
    from dlf_tui.ui.session.base import Cancelled, Post, RunSession
    from dlf_tui.ui.session.disk import DiskSource

CONNECT_TIMEOUT_S = 2.0
RETRY_S = 0.5  # between tries while the engine still starts
RECONNECT_S = 0.2  # before reconnecting after the engine dropped us
EXIT_WAIT_S = 3.0  # how long an engine this TUI spawned gets to exit once it closed the socket


class LiveSource:
    """Follows ``session.run``'s engine over its socket; ``disk`` fills gaps and
    takes over when the engine is gone."""

    def __init__(self, session: "RunSession", disk: "DiskSource") -> None:
        self.s = session
        self.disk = disk
        self._state_posted: tuple[str, str] | None = None

    def pump(self, post: "Post", cancelled: "Cancelled") -> None:
        s = self.s
        first = True
        waited = False
        while not cancelled():
            client = None
            why = ""
            if s.proc is not None or s.run.is_live():
                try:
                    client = Client.connect(s.run.path, timeout=CONNECT_TIMEOUT_S)
                except ClientError as err:
                    why = str(err)
            if client is None:
                if first and s.run.is_live() and (s.proc is None or s.proc.poll() is None):
                    # an engine still importing torch, or busy: keep trying
                    if not waited:
                        waited = True
                        post(M.EventLogged(0, "ui", f"waiting for the engine… ({why})"))
                    time.sleep(RETRY_S)
                    continue
                if first:
                    self.disk.open(post, why)
                else:
                    self.disk.finish(post)
                return
            try:
                self._follow(client, post, cancelled, reconnected=not first)
            finally:
                s.connected(None)
                client.close()
            first = False
            if cancelled():
                return
            # The connection ended: the engine exited, or dropped a slow reader.
            if s.proc is not None:
                try:
                    s.proc.wait(timeout=EXIT_WAIT_S)
                except Exception:  # noqa: BLE001 - still running: we were dropped
                    pass
            if not s.run.is_live():
                self.disk.finish(post)
                return
            time.sleep(RECONNECT_S)

    def _apply_hello(self, hello: protocol.Hello) -> None:
        s = self.s
        s.config = hello.config
        s.params = dict(hello.params)
        s.state = hello.state
        s.step = int(hello.params.get("step", 0))
        s.total = int(hello.params.get("total", 0))
        s.device = str(hello.params.get("device", ""))
        s.history.setup(hello.metrics_columns, hello.eval_columns, hello.diag_columns)
        if len(s.timeline.refs) == 1 and not s.timeline.markers:
            period = int(s.config.get("schedule", {}).get("period", 1))
            s.timeline = Timeline.start(period, s.classes)

    def _follow(self, client: Client, post: "Post", cancelled: "Cancelled",
                reconnected: bool) -> None:
        s = self.s
        hello = client.hello
        self._apply_hello(hello)
        s.live = True
        s.connected(client)
        post(M.RunStarted(live=True, reconnected=reconnected))
        self.disk.catch_up(S.METRICS, hello.metrics_rows)
        self.disk.catch_up(S.EVAL, hello.eval_rows)
        self.disk.catch_up(S.DIAG, hello.diag_rows)
        if not reconnected:
            self.disk.load_events(post)
        p = hello.params
        u = int(p.get("step", 0)) + 1
        if "phase" in p and (not s.timeline.refs or s.timeline.refs[-1].update <= u):
            s.timeline.rebase(u, int(p["phase"]), int(p.get("emphasized", 0)),
                              int(p.get("period", 1)))
        post(M.HistoryLoaded(s.history.rows, s.history.eval_rows))
        post(M.StateChanged(s.state, s.step, s.total, s.rate))
        silent = False
        while not cancelled():
            for msg in client.messages(timeout=0.5):
                if silent:  # it answers again
                    silent = False
                    post(M.EngineSilent(""))
                self.dispatch(msg, post)
                if cancelled():
                    return
            if client.closed:
                return
            line = client.silence()
            if line and not silent:  # nothing heard, not even a beat
                silent = True
                post(M.EngineSilent(line))

    def dispatch(self, msg: protocol.Message, post: "Post") -> None:
        """One message from the engine into the session (and a fact for the UI)."""
        s = self.s
        if isinstance(msg, protocol.Chunk):
            series = msg.type  # metrics | eval | diag
            arr = msg.array()
            if not s.history.add(series, msg.start, arr):
                self.disk.catch_up(series, msg.start)  # rows missing (we were slow): from disk
                s.history.add(series, msg.start, arr)
            # latest-value facts: a newer one replaces one still queued (Message.can_replace)
            post((M.MetricsArrived if series == S.METRICS else M.EvalArrived)(msg.start, msg.rows))
        elif isinstance(msg, protocol.State):
            s.state, s.step, s.total = msg.state, msg.step, msg.total
            s.rate, s.reason = msg.rate, msg.reason
            if (msg.state, msg.reason) != self._state_posted:  # step/rate: read at redraw
                self._state_posted = (msg.state, msg.reason)
                post(M.StateChanged(msg.state, msg.step, msg.total, msg.rate, msg.reason))
        elif isinstance(msg, protocol.ParamsChanged):
            s.params = dict(msg.params)
            p = msg.params
            s.timeline.edit(msg.step, msg.changes, p.get("phase"), p.get("emphasized"),
                            p.get("period"))
            post(M.EditApplied(msg.step, msg.changes, msg.params, msg.source))
        elif isinstance(msg, protocol.Log):
            if not self.disk.seen(msg.step, msg.message):
                post(M.EventLogged(msg.step, msg.kind, msg.message, msg.level))
        elif isinstance(msg, protocol.Reply):
            p = s.answered(msg)
            if p is not None:
                post(M.CommandAnswered(p.name, p.values, msg.ok, msg.error, msg.data))
