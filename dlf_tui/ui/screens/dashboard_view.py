"""The dashboard's layout and refresh: live charts, status bar, event log and
the steering controls, fed by the facts the event pump posts.

``DashboardView`` is the half of the dashboard that shows one ``RunSession``:
the pump posts facts (``messages``), handlers update the status and mark the
charts dirty, and a timer (every ``REDRAW_S``) redraws the dirty charts inside
``batch_update()`` (less often when a redraw is expensive, so keys stay
responsive on a busy machine).  Its keys and steering are ``DashboardScreen``'s
(``screens/dashboard.py``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.containers import Grid
from textual.screen import Screen

from dlf_tui.core import series as S
from dlf_tui.core.states import CRASHED, FINISHED, STOPPED
from dlf_tui.store import fork as forks
from dlf_tui.ui import fmt
from dlf_tui.ui import messages as M
from dlf_tui.ui.gpu import GpuProbe
from dlf_tui.ui.session.base import RunSession
from dlf_tui.ui.session.member import is_member
from dlf_tui.core.stability import stability
from dlf_tui.ui.widgets.charts.accuracy import AccuracyChart
from dlf_tui.ui.widgets.charts.base import Chart, Context, Style
from dlf_tui.ui.widgets.charts.drop import DropChart
from dlf_tui.ui.widgets.charts.loss import LossChart
from dlf_tui.ui.widgets.charts.sharpness import SharpnessChart
from dlf_tui.ui.widgets.charts.weights import WeightsChart
from dlf_tui.ui.widgets.controls import Controls
from dlf_tui.ui.widgets.event_log import EventLog
from dlf_tui.ui.widgets.footer import StableFooter
from dlf_tui.ui.widgets.status_bar import NOT_RESPONDING, StatusBar, StatusInfo

if TYPE_CHECKING:
    from dlf_tui.ui.app import DlfApp

REDRAW_S = 0.25  # chart redraw timer (only when something changed)
REDRAW_BUDGET = 0.3  # at most this fraction of the UI thread goes to charts (slow terminals, busy CPUs)
LAST_N = (1_000, 10_000)
SMOOTHING = (0.0, 10.0, 100.0, 1000.0)  # EMA time constants in updates; 0 = off
COMPACT_W, COMPACT_H = 120, 36


class DashboardView(Screen):
    is_dashboard = True
    ALLOW_IN_MAXIMIZED_VIEW = "Footer, StatusBar"  # the status stays in view while zoomed

    def __init__(self, session: RunSession | None, style: Style, **kw: Any) -> None:
        super().__init__(**kw)
        self.session = session
        self.style = style
        self.window = "whole"
        self.last_n = LAST_N[0]
        self.smoothing = 0.0
        self.log_y = True
        self.dirty = True
        self.live = False
        self.read_only = False  # the run ended, or was opened from disk: nothing to steer, ever
        self.silent = ""  # the live engine stopped answering: what to tell the user ('' : it answers)
        # facts about the run directory for fork and extend, read when the state changes
        # (not on every check_action): a user's own loop (the engine continues neither),
        # a checkpoint on disk, a sweep member (its sweep engine continues it)
        self._own_loop, self._has_checkpoint, self._member = True, False, False
        self.redraws = 0
        self.history_loaded = False  # everything on disk (up to the hello) has been read
        self._early_events: list[tuple[int, str, str, str]] = []
        self._next_redraw = 0.0
        self._drawn_version = -1
        self.gpu = GpuProbe()  # NVML, when installed: the status bar's GPU memory and utilisation

    @property
    def dlf(self) -> "DlfApp":
        return self.app  # type: ignore[return-value]

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Grid(id="charts"):
            yield LossChart(id="loss", classes="chart")
            yield WeightsChart(id="gamma", classes="chart")
            yield AccuracyChart(id="accuracy", classes="chart")
            yield DropChart(id="drop", classes="chart")
            yield SharpnessChart(id="sharpness", classes="chart")
            yield EventLog(id="events")
        yield Controls(id="controls")
        yield StableFooter()

    def on_mount(self) -> None:
        for entry in self._early_events:
            self.query_one(EventLog).add(*entry)
        self._early_events.clear()
        self.query_one(Controls).set_live(False)
        self.set_interval(REDRAW_S, self.redraw)
        self.update_status()

    def on_resize(self) -> None:
        w, h = self.size
        self.set_class(w < COMPACT_W or h < COMPACT_H, "-compact")
        self.dirty = True

    @property
    def charts(self) -> list[Chart]:
        return list(self.query(Chart))

    # -- session ----------------------------------------------------------------------------
    def attach(self, session: RunSession) -> None:
        self.session = session
        self.history_loaded = False
        self.dirty = True
        self.update_status()
        self.refresh_bindings()

    def find_abilities(self) -> None:
        """Read what fork and extend depend on in the run directory; then the keys follow."""
        s = self.session
        if s is not None:
            self._own_loop = bool(s.run.own_loop_reason())
            self._has_checkpoint = not self.live and bool(forks.checkpoints(s.run))
            self._member = is_member(s.run)
        self.refresh_bindings()

    @property
    def forkable(self) -> bool:
        """`f`: a live engine to checkpoint, or a checkpoint on disk."""
        return self.session is not None and not self._own_loop and (self.live or self._has_checkpoint)

    @property
    def extendable(self) -> bool:
        """`x`: a finished or stopped run that the engine can continue."""
        s = self.session
        return (s is not None and not self._own_loop and not self._member and not self.live
                and self.read_only and s.state in (FINISHED, STOPPED))

    # -- the view window -------------------------------------------------------------------
    def window_range(self) -> tuple[float, float]:
        s = self.session
        last = s.history.last_step() if s else 0
        if last <= 0:
            return 1.0, 2.0
        if self.window == "period" and s is not None:
            pos = s.timeline.at(last)
            return float(pos.period_start), float(max(pos.period_end, last))
        if self.window == "last":
            return float(max(1, last - self.last_n + 1)), float(max(last, 2))
        return 1.0, float(max(last, 2))

    def window_label(self) -> str:
        if self.window == "period":
            return "this period"
        if self.window == "last":
            return f"last {fmt.count(self.last_n)}"
        return "whole run"

    def context(self) -> Context:
        assert self.session is not None
        x0, x1 = self.window_range()
        lr = self.session.params.get("lr")
        return Context(self.session.history, x0, x1, self.smoothing, self.log_y,
                       self.session.timeline.markers_between(x0, x1), self.style, lr,
                       stability(self.session.config))

    def redraw(self, force: bool = False) -> None:
        """The timer: redraw charts only when new data (or a view change) arrived."""
        self.update_status()
        if self.session is None:
            return
        if self.session.history.version != self._drawn_version:
            self.dirty = True  # new rows, whether or not their message was handled yet
        if not (self.dirty or force):
            return
        now = time.monotonic()
        if not force and now < self._next_redraw:
            return  # the last redraw was expensive: skip a tick, stay responsive
        self.dirty = False
        self._drawn_version = self.session.history.version
        ctx = self.context()
        with self.app.batch_update():
            for chart in self.charts:
                if chart.display and chart.size.width > 0:
                    chart.draw(ctx)
        self.redraws += 1
        # draw_ms is this pass; build_ms is the previous pass's plotext build (done at paint time)
        cost = sum(c.draw_ms + c.build_ms for c in self.charts if c.display) / 1000
        self._next_redraw = now + max(REDRAW_S, cost / REDRAW_BUDGET)

    def on_screen_resume(self) -> None:
        self.dirty = True

    def update_status(self) -> None:
        s = self.session
        info = StatusInfo(window=self.window_label(),
                          smoothing="EMA off" if not self.smoothing else f"EMA {fmt.si(self.smoothing)}",
                          log_y=self.log_y)
        if s is not None:
            p = s.params
            step = max(s.step, s.history.last_step())
            pos = s.timeline.at(max(1, step))
            amp_now = p.get("amplitude_now")
            info.run_id, info.preset, info.device = s.run_id, s.preset, s.device
            info.state, info.live = (NOT_RESPONDING if self.silent and s.live else s.state), s.live
            # the engine's rate counts training time only; at a set pace the run goes
            # no faster than the pace, whatever the hardware could do
            pace = p.get("pace")
            info.pace = float(pace) if s.live and isinstance(pace, (int, float)) else 0.0
            rate = min(s.rate, info.pace) if info.pace > 0 and s.rate > 0 else s.rate
            info.step, info.total, info.rate, info.eta = step, s.total, rate, s.eta(rate)
            info.period_index = pos.index if step else 0
            flat = p.get("kind") == "static" or (amp_now if amp_now is not None else p.get("amplitude")) == 1
            info.emphasized = None if (flat or not step) else pos.cls
            info.amplitude, info.amplitude_now = p.get("amplitude"), amp_now
            info.period, info.lr = p.get("period"), p.get("lr")
            for series in (S.DIAG, S.EVAL):  # the newest measured sharpness, when the run has one
                lam = s.history.last_value(series, S.HESSIAN_LAMBDA_MAX)
                if lam is not None:
                    info.lambda_max = lam
                    edge = stability(s.config).edge
                    if edge is not None:
                        info.edge_label, info.edge = edge.label, edge.at(p.get("lr"))
                    break
            if s.live and s.device.startswith("cuda"):
                info.gpu = self.gpu.line(s.device)
        self.query_one(StatusBar).show(info)

    # -- facts from the pump ---------------------------------------------------------------------
    def on_run_started(self, msg: M.RunStarted) -> None:
        self.live = msg.live
        self.read_only = False
        self.find_abilities()  # the steering keys (check_action)
        self.query_one(Controls).set_live(msg.live)
        if self.session is not None:
            self.query_one(Controls).show_params(self.session.params)
        if msg.reconnected:
            self.log_event(self.session.step if self.session else 0, "ui", "reconnected to the engine")
        self.dirty = True
        self.update_status()

    def on_history_loaded(self, msg: M.HistoryLoaded) -> None:
        self.history_loaded = True
        self.find_abilities()
        if self.session is not None:
            self.query_one(Controls).show_params(self.session.params)
        self.dirty = True
        self.redraw()

    def on_metrics_arrived(self, msg: M.MetricsArrived) -> None:
        self.dirty = True

    def on_eval_arrived(self, msg: M.EvalArrived) -> None:
        self.dirty = True

    def on_state_changed(self, msg: M.StateChanged) -> None:
        self.update_status()

    def on_engine_silent(self, msg: M.EngineSilent) -> None:
        if msg.line:
            self.notify(msg.line, title="engine not responding", severity="error", timeout=30)
        elif self.silent:
            self.notify("the engine answers again", title="engine", timeout=5)
        self.silent = msg.line
        self.update_status()

    def on_edit_applied(self, msg: M.EditApplied) -> None:
        if self.session is not None:
            self.query_one(Controls).show_params(self.session.params)
        self.dirty = True
        self.update_status()

    def on_event_logged(self, msg: M.EventLogged) -> None:
        self.log_event(msg.step, msg.kind, msg.message, msg.level)

    def on_run_ended(self, msg: M.RunEnded) -> None:
        self.live = False
        self.silent = ""
        self.read_only = True
        self.find_abilities()
        self.query_one(Controls).set_live(False)
        if self.session is not None:
            self.query_one(Controls).show_params(self.session.params)
        self.query_one(Controls).message(f"run {msg.state}: read-only", error=msg.state == CRASHED)
        self.dirty = True
        self.update_status()

    def log_event(self, step: int, kind: str, message: str, level: str = "info") -> None:
        if not self.is_mounted:
            self._early_events.append((step, kind, message, level))
            return
        self.query_one(EventLog).add(step, kind, message, level)
