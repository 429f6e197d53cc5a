"""One open run as the UI sees it: its history, schedule clock, state and the
connection to its engine.  No textual widgets, no torch.

``pump`` runs in the app's event-pump thread worker: it connects (or opens the
run read-only from disk), reads the history on disk up to the hello's row
counts, then follows the engine's chunks and posts ``messages`` facts.
``send`` is called from short thread workers; replies come back through the
pump (a ``Client`` reads on one thread only).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import protocol, runs
from ..client import Client, ClientError
from . import messages as M
from .history import RunHistory
from .timeline import Timeline

Post = Callable[[Any], Any]
READ_BLOCK = 1 << 15  # rows per disk read while catching up (keeps memory flat)
EVENT_LEVELS = {"error": "error", "crashed": "error", "refused": "warning", "warning": "warning"}


_KINDS = (("paused", "pause"), ("resumed", "resume"), ("checkpoint", "checkpoint"),
          ("stopped", "stop"), ("finished", "finish"), ("refused", "refused"),
          ("started", "start"), ("last period", "static_tail"), ("engine crashed", "error"),
          ("edge of stability", "stability"))


def guess_kind(message: str, level: str) -> str:
    """The events.jsonl kind of a live log line (the wire ``log`` has only a level)."""
    for prefix, kind in _KINDS:
        if message.startswith(prefix):
            return kind
    if any(message.startswith(p) for p in ("amplitude ", "period ", "lr ")):
        return "set"
    return level


@dataclass
class Pending:
    name: str
    values: dict[str, Any] | None
    done: threading.Event = field(default_factory=threading.Event)
    reply: protocol.Reply | None = None


class RunSession:
    def __init__(self, run: runs.Run, proc: Any = None) -> None:
        self.run = run
        self.proc = proc  # the engine's Popen when this TUI spawned it
        self.history = RunHistory()
        self.timeline = Timeline.start(1, 1)
        self.config: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.state = "starting"
        self.step = 0
        self.total = 0
        self.rate = 0.0
        self.reason = ""
        self.device = ""
        self.live = False
        self.client: Client | None = None
        self.sent: list[tuple[str, dict[str, Any] | None]] = []  # every command that went out
        self._lock = threading.Lock()  # guards client/_pending/sent
        self._pending: dict[int, Pending] = {}
        self._disk_events: set[tuple[int, str]] = set()
        # Coalescing: a fast engine sends ~50 chunks/s; the UI needs one nudge
        # per redraw, not one message per chunk (it reads the data from here).
        self._data_posted = False
        self._state_posted: tuple[str, str] | None = None

    def ack_data(self) -> None:
        """The UI took note of new rows: post the next arrival again."""
        self._data_posted = False

    # -- facts -------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def preset(self) -> str:
        return str(self.config.get("name", "?"))

    @property
    def classes(self) -> int:
        return sum(1 for c in self.history.metric_columns if c.startswith("gamma_")) or int(
            self.config.get("data", {}).get("classes", 1) or 1)

    def eta(self) -> float | None:
        if self.state not in ("running",) or self.rate <= 0 or self.total <= self.step:
            return None
        return (self.total - self.step) / self.rate

    # -- commands (from a thread worker) ----------------------------------------------------
    def send(self, name: str, values: dict[str, Any] | None = None,
             wait: float = 0.0) -> Pending:
        """Send a command; with ``wait`` seconds, block (in a worker thread) for
        its reply.  Raises ``ClientError`` if the run is not live and
        ``protocol.ProtocolError`` for a value the protocol refuses (nothing is sent)."""
        with self._lock:
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

    # -- the pump (event-pump thread) ---------------------------------------------------------
    def pump(self, post: Post, cancelled: Callable[[], bool]) -> None:
        first = True
        waited = False
        while not cancelled():
            client = None
            why = ""
            if self.proc is not None or self.run.is_live():
                try:
                    client = Client.connect(self.run.path, timeout=2.0)
                except ClientError as err:
                    why = str(err)
            if client is None:
                if first and self.run.is_live() and (self.proc is None or self.proc.poll() is None):
                    # an engine still importing torch, or busy: keep trying
                    if not waited:
                        waited = True
                        post(M.EventLogged(0, "ui", f"waiting for the engine… ({why})"))
                    time.sleep(0.5)
                    continue
                if first:
                    self._open_from_disk(post, why)
                else:
                    self._finish(post)
                return
            try:
                self._follow(client, post, cancelled, reconnected=not first)
            finally:
                with self._lock:
                    self.client = None
                    for p in self._pending.values():
                        p.done.set()
                    self._pending.clear()
                client.close()
            first = False
            if cancelled():
                return
            # The connection ended: the engine exited, or dropped a slow reader.
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=3.0)
                except Exception:  # noqa: BLE001 - still running: we were dropped
                    pass
            if not self.run.is_live():
                self._finish(post)
                return
            time.sleep(0.2)

    def _apply_hello(self, hello: protocol.Hello) -> None:
        self.config = hello.config
        self.params = dict(hello.params)
        self.state = hello.state
        self.step = int(hello.params.get("step", 0))
        self.total = int(hello.params.get("total", 0))
        self.device = str(hello.params.get("device", ""))
        self.history.setup(hello.metrics_columns, hello.eval_columns,
                           getattr(hello, "diag_columns", []))
        if len(self.timeline.refs) == 1 and not self.timeline.markers:
            period = int(self.config.get("schedule", {}).get("period", 1))
            self.timeline = Timeline.start(period, self.classes)

    def _follow(self, client: Client, post: Post, cancelled: Callable[[], bool],
                reconnected: bool) -> None:
        hello = client.hello
        self._apply_hello(hello)
        self.live = True
        with self._lock:
            self.client = client
        post(M.RunStarted(live=True, reconnected=reconnected))
        self._catch_up("metrics", hello.metrics_rows)
        self._catch_up("eval", hello.eval_rows)
        self._catch_up("diag", getattr(hello, "diag_rows", 0))
        if not reconnected:
            self._load_events(post)
        p = hello.params
        u = int(p.get("step", 0)) + 1
        if "phase" in p and (not self.timeline.refs or self.timeline.refs[-1].update <= u):
            self.timeline.rebase(u, int(p["phase"]), int(p.get("emphasized", 0)),
                                 int(p.get("period", 1)))
        post(M.HistoryLoaded(self.history.rows, self.history.eval_rows))
        post(M.StateChanged(self.state, self.step, self.total, self.rate))
        while not cancelled():
            for msg in client.messages(timeout=0.5):
                self._dispatch(msg, post)
                if cancelled():
                    return
            if client.closed:
                return

    def _catch_up(self, series: str, upto: int) -> None:
        if series not in self.history.series:
            return
        have = self.history.count(series)
        while have < upto:
            stop = min(upto, have + READ_BLOCK)
            block = self.run.read(series, have, stop)
            if block.size == 0:
                break
            self.history.add(series, have, block)
            have += block.shape[0]
            time.sleep(0.001)  # let the UI thread paint between blocks (the GIL)

    def _load_events(self, post: Post) -> None:
        for ev in self.run.events():
            step = int(ev.get("step", 0) or 0)
            kind = str(ev.get("kind", "?"))
            message = str(ev.get("message", ""))
            self._disk_events.add((step, message))
            if kind == "set" and isinstance(ev.get("changes"), dict):
                self.timeline.edit(step, ev["changes"], ev.get("phase"), ev.get("emphasized"))
            post(M.EventLogged(step, kind, message, EVENT_LEVELS.get(kind, "info")))

    def _dispatch(self, msg: protocol.Message, post: Post) -> None:
        if isinstance(msg, protocol.Chunk):
            series = msg.type  # metrics | eval | diag
            arr = msg.array()
            if not self.history.add(series, msg.start, arr):
                self._catch_up(series, msg.start)  # rows missing (we were slow): from disk
                self.history.add(series, msg.start, arr)
            if not self._data_posted:
                self._data_posted = True
                post((M.MetricsArrived if series == "metrics" else M.EvalArrived)(msg.start, msg.rows))
        elif isinstance(msg, protocol.State):
            self.state, self.step, self.total = msg.state, msg.step, msg.total
            self.rate, self.reason = msg.rate, msg.reason
            if (msg.state, msg.reason) != self._state_posted:  # step/rate: read at redraw
                self._state_posted = (msg.state, msg.reason)
                post(M.StateChanged(msg.state, msg.step, msg.total, msg.rate, msg.reason))
        elif isinstance(msg, protocol.ParamsChanged):
            self.params = dict(msg.params)
            p = msg.params
            self.timeline.edit(msg.step, msg.changes, p.get("phase"), p.get("emphasized"),
                               p.get("period"))
            post(M.ParamsChanged(msg.step, msg.changes, msg.params, msg.source))
        elif isinstance(msg, protocol.Log):
            key = (msg.step, msg.message)
            if key in self._disk_events:
                self._disk_events.discard(key)
                return
            kind = msg.kind or guess_kind(msg.message, msg.level)  # older engines send no kind
            post(M.EventLogged(msg.step, kind, msg.message, msg.level))
        elif isinstance(msg, protocol.Reply):
            with self._lock:
                p = self._pending.pop(msg.id, None)
            if p is None:
                return
            p.reply = msg
            p.done.set()
            post(M.CommandAnswered(p.name, p.values, msg.ok, msg.error, msg.data))

    def _finish(self, post: Post) -> None:
        """The engine is gone: pick up any rows it wrote last, then go read-only."""
        self.live = False
        for series in self.history.series:
            self._catch_up(series, self.run.rows(series))
        st = self.run.state()
        self.state = str(st.get("state", "unknown"))
        self.reason = str(st.get("reason", ""))
        self.step = max(self.step, self.history.last_step())
        self.rate = 0.0
        post(M.MetricsArrived(0, self.history.rows))
        post(M.StateChanged(self.state, self.step, self.total, 0.0, self.reason))
        post(M.RunEnded(self.state, self.reason))

    def _open_from_disk(self, post: Post, why: str = "") -> None:
        """A finished / crashed / unreachable run: everything from disk, read-only."""
        self.live = False
        try:
            self.config = self.run.config_doc()
        except runs.RunError:
            self.config = {}
        st = self.run.state()
        self.state = str(st.get("state", "unknown"))
        self.reason = str(st.get("reason", "")) or why
        self.device = str(st.get("device", self.config.get("run", {}).get("device", "")))
        self.total = int(st.get("total") or self.config.get("run", {}).get("steps", 0) or 0)
        self.history.setup(self.run.columns("metrics"), self.run.columns("eval"),
                           self.run.columns("diag"))
        period = int(self.config.get("schedule", {}).get("period", 1) or 1)
        self.timeline = Timeline.start(period, self.classes)
        post(M.RunStarted(live=False))
        for series in list(self.history.series):
            self._catch_up(series, self.run.rows(series))
        self._load_events(post)
        last = self.history.last()
        sched, optim = self.config.get("schedule", {}), self.config.get("optim", {})
        self.params = {"amplitude": sched.get("amplitude"), "period": sched.get("period"),
                       "lr": optim.get("lr"), "kind": sched.get("kind", "")}
        for m in self.timeline.markers:  # the last value set for each parameter
            self.params.update({k: v for k, v in m.changes.items() if k in self.params})
        if "amplitude" in last:
            self.params["amplitude_now"] = last["amplitude"]
        self.step = self.history.last_step() or int(st.get("step", 0) or 0)
        post(M.HistoryLoaded(self.history.rows, self.history.eval_rows))
        post(M.StateChanged(self.state, self.step, self.total, 0.0, self.reason))
        post(M.RunEnded(self.state, self.reason))
