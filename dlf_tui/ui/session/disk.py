"""The disk-only source: a run directory read into a ``RunSession``, read-only.

A finished, crashed or unreachable run is opened from disk whole (``open``);
the live source catches up from disk to the hello's row counts and picks up
the rows an engine wrote last (``catch_up``, ``finish``); the compare view and
sweep members re-read a growing run (``poll``).  Rows are read in blocks of
``READ_BLOCK`` so memory stays flat, and only the columns of ``session.keep``
when it is set.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dlf_tui.core import series as S
from dlf_tui.core.states import RUNNING
from dlf_tui.store import run as runs
from dlf_tui.ui import messages as M
from dlf_tui.ui.history import DROP
from dlf_tui.ui.session.member import is_member
from dlf_tui.ui.timeline import Timeline

if TYPE_CHECKING:
    from dlf_tui.ui.session.base import Post, RunSession

READ_BLOCK = 1 << 15  # rows per disk read while catching up
def _count(v: Any, default: int = 0) -> int:
    """A step/period/total read from a file someone else wrote: a finite number, else ``default``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), -float("inf")):
        return default
    return int(v)


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    sec = doc.get(name)
    return sec if isinstance(sec, dict) else {}


EVENT_LEVELS = {"error": "error", "crashed": "error", "refused": "warning", "warning": "warning"}


class DiskSource:
    """Reads ``session.run``'s directory into ``session`` (it remembers which
    events it posted, and the last poll, for the rate of a member without one)."""

    def __init__(self, session: "RunSession") -> None:
        self.s = session
        self._disk_events: set[tuple[int, str]] = set()
        self._events_read = 0  # lines of events.jsonl already posted
        self._rate_ref: tuple[float, int] | None = None  # (time, step) of the last poll
        self._disk_rate = 0.0

    # -- rows and events --------------------------------------------------------------------
    def catch_up(self, series: str, upto: int) -> None:
        """Read rows of ``series`` from disk up to row ``upto`` (those not held yet)."""
        s = self.s
        if series not in s.history.series:
            return
        have = s.history.count(series)
        pick = None
        if s.keep is not None:
            on_disk = s.run.columns(series)
            held = [c for c in s.history.columns[series] if c != DROP]
            pick = [on_disk.index(c) for c in held]
        while have < upto:
            stop = min(upto, have + READ_BLOCK)
            block = s.run.read(series, have, stop)
            if block.size == 0:
                break
            if pick is not None:
                block = block[:, pick]
            s.history.add(series, have, block)
            have += block.shape[0]
            time.sleep(0.001)  # let the UI thread paint between blocks (the GIL)

    def catch_up_all(self) -> None:
        for series in list(self.s.history.series):
            self.catch_up(series, self.s.run.rows(series))

    def load_events(self, post: "Post") -> None:
        """Post the events of events.jsonl not posted yet."""
        evs = self.s.run.events()
        new, self._events_read = evs[self._events_read:], len(evs)
        for ev in new:
            step = _count(ev.get("step"))
            kind = str(ev.get("kind", "?"))
            message = str(ev.get("message", ""))
            self._disk_events.add((step, message))
            if kind == "set" and isinstance(ev.get("changes"), dict):
                self.s.timeline.edit(step, ev["changes"], ev.get("phase"), ev.get("emphasized"))
            post(M.EventLogged(step, kind, message, EVENT_LEVELS.get(kind, "info")))

    def seen(self, step: int, message: str) -> bool:
        """A live log line already posted from events.jsonl (it is then forgotten)."""
        key = (step, message)
        if key in self._disk_events:
            self._disk_events.discard(key)
            return True
        return False

    # -- opening ----------------------------------------------------------------------------
    def load(self, why: str = "") -> None:
        """Config, state and columns from the run directory (no rows yet; no messages)."""
        s = self.s
        s.live = False
        try:
            s.config = s.run.config_doc()
        except runs.RunError:
            s.config = {}
        st = self._state(why)
        s.device = str(st.get("device", _section(s.config, "run").get("device", "")))
        s.history.setup(*(self._columns(name) for name in S.SERIES))
        period = max(1, _count(_section(s.config, "schedule").get("period"), 1))
        s.timeline = Timeline.start(period, s.classes)

    def open(self, post: "Post", why: str = "", ended: bool = True) -> None:
        """A finished / crashed / unreachable run: everything from disk, read-only
        (``ended`` False: a sweep member still training, followed by ``poll``)."""
        s = self.s
        self.load(why)
        post(M.RunStarted(live=False))
        self.catch_up_all()
        self.load_events(post)
        self._params()
        post(M.HistoryLoaded(s.history.rows, s.history.eval_rows))
        post(M.StateChanged(s.state, s.step, s.total, s.rate, s.reason))
        if ended:
            post(M.RunEnded(s.state, s.reason))

    def finish(self, post: "Post") -> None:
        """The engine is gone: pick up any rows it wrote last, then go read-only."""
        s = self.s
        s.live = False
        for series in s.history.series:
            self.catch_up(series, s.run.rows(series))
        st = s.run.state()
        s.state = str(st.get("state", "unknown"))
        s.reason = str(st.get("reason", ""))
        s.step = max(s.step, s.history.last_step())
        s.rate = 0.0
        post(M.MetricsArrived(0, s.history.rows))
        post(M.StateChanged(s.state, s.step, s.total, 0.0, s.reason))
        post(M.RunEnded(s.state, s.reason))

    def poll(self) -> bool:
        """Read the rows appended since the last read (and columns that appeared:
        a member's files are made when its engine starts); True if any arrived."""
        s = self.s
        before = s.history.version
        cols = [self._columns(name) for name in S.SERIES]
        held = [[c for c in s.history.columns[name] if c != DROP] for name in S.SERIES]
        if cols != held:
            s.history.setup(*cols)
        self.catch_up_all()
        self._state()
        now, step = time.monotonic(), s.history.last_step()
        if s.state == RUNNING and s.rate <= 0 and self._rate_ref is not None:
            t0, s0 = self._rate_ref  # a member's state.json has no rate: rows per second
            inst = (step - s0) / (now - t0) if now > t0 else 0.0
            self._disk_rate = inst if self._disk_rate <= 0 else 0.7 * self._disk_rate + 0.3 * inst
            s.rate = self._disk_rate
        self._rate_ref = (now, step)
        return s.history.version != before

    # -- state.json, columns, parameters ---------------------------------------------------
    def _state(self, why: str = "") -> dict[str, Any]:
        s = self.s
        st = s.run.state()
        if not s.run.raw_state() and is_member(s.run):  # the sweep engine has not reached it
            st = {"state": "pending", "reason": "not started by the sweep engine yet"}
        s.state = str(st.get("state", "unknown"))
        s.reason = str(st.get("reason", "")) or why
        s.total = _count(st.get("total")) or _count(_section(s.config, "run").get("steps"))
        rate = st.get("rate") if s.state == RUNNING else 0.0
        s.rate = float(rate) if isinstance(rate, (int, float)) else 0.0
        s.step = max(s.history.last_step(), _count(st.get("step")))
        return st

    def _columns(self, series: str) -> list[str]:
        try:
            cols = self.s.run.columns(series)
        except runs.RunError:  # an unreadable <series>.json: that series reads as empty
            return []
        if self.s.keep is None:
            return cols
        want = self.s.keep.get(series, ())
        kept = [c for c in cols if c in want]
        if series == S.METRICS and kept and S.LOSS_DYNAMICAL not in kept:
            return []  # the history derives F(t-1)-F(t) from it: it must be kept
        return kept if kept[:1] == [S.STEP] else []

    def _params(self) -> None:
        s = self.s
        last = s.history.last()
        sched, optim = _section(s.config, "schedule"), _section(s.config, "optim")
        s.params = {"amplitude": sched.get("amplitude"), "period": sched.get("period"),
                    "lr": optim.get("lr"), "kind": sched.get("kind", "")}
        for m in s.timeline.markers:  # the last value set for each parameter
            s.params.update({k: v for k, v in m.changes.items() if k in s.params})
        if S.AMPLITUDE in last:
            s.params["amplitude_now"] = last[S.AMPLITUDE]
        s.step = s.history.last_step() or s.step
