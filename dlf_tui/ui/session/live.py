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

from dlf_tui.wire import protocol
from dlf_tui.store import run as runs, sweep as sweeps
from dlf_tui.wire.client import Client, ClientError
from dlf_tui.ui import messages as M
from dlf_tui.ui.history import DROP, RunHistory
from dlf_tui.ui.timeline import Timeline

Post = Callable[[Any], Any]
READ_BLOCK = 1 << 15  # rows per disk read while catching up (keeps memory flat)
DISK_POLL_S = 0.5  # how often a run without a socket (a sweep member) is re-read from disk
ENDED_STATES = ("finished", "stopped", "crashed", "diverged")
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
        self._events_read = 0  # lines of events.jsonl already posted
        self._rate_ref: tuple[float, int] | None = None  # (time, step) of the last disk poll
        self._disk_rate = 0.0
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
        if self.proc is None and self.is_member() and not self.run.file(runs.SOCKET).exists():
            if not self._follow_disk(post, cancelled):
                return
            # a sequential sweep started this member's own engine (with a socket): connect
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
        pick = None
        if self.keep is not None:
            on_disk = self.run.columns(series)
            held = [c for c in self.history.columns[series] if c != DROP]
            pick = [on_disk.index(c) for c in held]
        while have < upto:
            stop = min(upto, have + READ_BLOCK)
            block = self.run.read(series, have, stop)
            if block.size == 0:
                break
            if pick is not None:
                block = block[:, pick]
            self.history.add(series, have, block)
            have += block.shape[0]
            time.sleep(0.001)  # let the UI thread paint between blocks (the GIL)

    def _load_events(self, post: Post) -> None:
        """Post the events of events.jsonl not posted yet."""
        evs = self.run.events()
        new, self._events_read = evs[self._events_read:], len(evs)
        for ev in new:
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

    def _open_from_disk(self, post: Post, why: str = "", ended: bool = True) -> None:
        """A finished / crashed / unreachable run: everything from disk, read-only
        (``ended`` False: a sweep member still training, followed by ``poll_disk``)."""
        self.load_disk(why)
        post(M.RunStarted(live=False))
        for series in list(self.history.series):
            self._catch_up(series, self.run.rows(series))
        self._load_events(post)
        self._params_from_disk()
        post(M.HistoryLoaded(self.history.rows, self.history.eval_rows))
        post(M.StateChanged(self.state, self.step, self.total, self.rate, self.reason))
        if ended:
            post(M.RunEnded(self.state, self.reason))

    def load_disk(self, why: str = "") -> None:
        """Config, state and columns from the run directory (no rows yet; no messages)."""
        self.live = False
        try:
            self.config = self.run.config_doc()
        except runs.RunError:
            self.config = {}
        st = self._state_from_disk(why)
        self.device = str(st.get("device", self.config.get("run", {}).get("device", "")))
        self.history.setup(*(self._disk_columns(s) for s in ("metrics", "eval", "diag")))
        period = int(self.config.get("schedule", {}).get("period", 1) or 1)
        self.timeline = Timeline.start(period, self.classes)

    def _state_from_disk(self, why: str = "") -> dict[str, Any]:
        st = self.run.state()
        if not self.run.raw_state() and self.is_member():  # the sweep engine has not reached it
            st = {"state": "pending", "reason": "not started by the sweep engine yet"}
        self.state = str(st.get("state", "unknown"))
        self.reason = str(st.get("reason", "")) or why
        self.total = int(st.get("total") or self.config.get("run", {}).get("steps", 0) or 0)
        rate = st.get("rate") if self.state == "running" else 0.0
        self.rate = float(rate) if isinstance(rate, (int, float)) else 0.0
        self.step = max(self.history.last_step(), int(st.get("step", 0) or 0))
        return st

    def poll_disk(self) -> bool:
        """Read the rows appended since the last read (and columns that appeared:
        a member's files are made when its engine starts); True if any arrived."""
        before = self.history.version
        cols = [self._disk_columns(s) for s in ("metrics", "eval", "diag")]
        held = [[c for c in self.history.columns[s] if c != DROP] for s in ("metrics", "eval", "diag")]
        if cols != held:
            self.history.setup(*cols)
        for series in list(self.history.series):
            self._catch_up(series, self.run.rows(series))
        self._state_from_disk()
        now, step = time.monotonic(), self.history.last_step()
        if self.state == "running" and self.rate <= 0 and self._rate_ref is not None:
            t0, s0 = self._rate_ref  # a member's state.json has no rate: rows per second
            inst = (step - s0) / (now - t0) if now > t0 else 0.0
            self._disk_rate = inst if self._disk_rate <= 0 else 0.7 * self._disk_rate + 0.3 * inst
            self.rate = self._disk_rate
        self._rate_ref = (now, step)
        return self.history.version != before

    def _disk_columns(self, series: str) -> list[str]:
        cols = self.run.columns(series)
        if self.keep is None:
            return cols
        want = self.keep.get(series, ())
        kept = [c for c in cols if c in want]
        if series == "metrics" and kept and "loss_dynamical" not in kept:
            return []  # the history derives F(t-1)-F(t) from it: it must be kept
        return kept if kept[:1] == ["step"] else []

    def is_member(self) -> bool:
        """A member of a sweep (its directory is inside a sweep directory)."""
        return sweeps.is_sweep(self.run.path.parent)

    def member_live(self) -> bool:
        """A member still trains while its sweep engine runs and it has not ended
        (also before its first row: a pending member has no state yet)."""
        if self.run.is_live():
            return True
        own = self.run.raw_state().get("state")
        return own not in ENDED_STATES and runs.Run(self.run.path.parent).is_live()

    def _follow_disk(self, post: Post, cancelled: Callable[[], bool]) -> bool:
        """A sweep member without a socket (the sweep engine trains it in its own
        process): read-only, its files re-read every ``DISK_POLL_S``.  Returns True
        when the member got a socket of its own (a sequential sweep) to connect to."""
        self._open_from_disk(post, ended=False)
        sweep_id = self.run.path.parent.name
        post(M.EventLogged(0, "ui", f"member of sweep {sweep_id}: following its files "
                                    "(read-only; the sweep engine trains it)"))
        shown = (self.state, self.reason)
        while not cancelled() and self.member_live():
            time.sleep(DISK_POLL_S)
            if self.run.file(runs.SOCKET).exists():
                return True
            if self.poll_disk() and not self._data_posted:
                self._data_posted = True
                post(M.MetricsArrived(0, self.history.rows))
            self._load_events(post)
            if (self.state, self.reason) != shown:
                shown = (self.state, self.reason)
                post(M.StateChanged(self.state, self.step, self.total, self.rate, self.reason))
        if not cancelled():
            self._load_events(post)
            self._finish(post)
        return False

    def _params_from_disk(self) -> None:
        last = self.history.last()
        sched, optim = self.config.get("schedule", {}), self.config.get("optim", {})
        self.params = {"amplitude": sched.get("amplitude"), "period": sched.get("period"),
                       "lr": optim.get("lr"), "kind": sched.get("kind", "")}
        for m in self.timeline.markers:  # the last value set for each parameter
            self.params.update({k: v for k, v in m.changes.items() if k in self.params})
        if "amplitude" in last:
            self.params["amplitude_now"] = last["amplitude"]
        self.step = self.history.last_step() or self.step
