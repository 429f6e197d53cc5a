"""The dashboard: live charts, status bar, event log and the steering controls.

It is the controller for one ``RunSession``: the event pump posts facts
(``messages``), handlers update the status and mark the charts dirty, and a
4 Hz timer redraws the dirty charts inside ``batch_update()`` (less often when
a redraw is expensive, so keys stay responsive on a busy machine).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Input

from dlf_tui.ui import fmt
from dlf_tui.ui import messages as M
from dlf_tui.ui.session.live import RunSession
from dlf_tui.ui.widgets.charts.accuracy import AccuracyChart
from dlf_tui.ui.widgets.charts.base import Chart, Context, Style
from dlf_tui.ui.widgets.controls import Controls
from dlf_tui.ui.widgets.charts.drop import DropChart
from dlf_tui.ui.widgets.event_log import EventLog
from dlf_tui.ui.widgets.footer import StableFooter
from dlf_tui.ui.widgets.charts.loss import LossChart
from dlf_tui.ui.widgets.charts.sharpness import SharpnessChart
from dlf_tui.ui.widgets.status_bar import StatusBar, StatusInfo
from dlf_tui.ui.widgets.charts.weights import WeightsChart

if TYPE_CHECKING:
    from dlf_tui.ui.app import DlfApp

REDRAW_S = 0.25  # chart redraw timer (only when something changed)
REDRAW_BUDGET = 0.3  # at most this fraction of the UI thread goes to charts (slow terminals, busy CPUs)
LAST_N = (1_000, 10_000)
SMOOTHING = (0.0, 10.0, 100.0, 1000.0)  # EMA time constants in updates; 0 = off
NUDGE = 1.25  # A and T move by this factor per key press
COMPACT_W, COMPACT_H = 120, 36


def nudged(name: str, value: float, up: bool) -> float | int:
    """The next value when nudging ``name`` up or down (A ≥ 1, T ≥ 1 integer)."""
    if name == "period":
        v = int(value)
        new = max(v + 1, round(v * NUDGE)) if up else min(v - 1, round(v / NUDGE))
        return max(1, new)
    new = value * NUDGE if up else value / NUDGE
    new = float(f"{new:.3g}")
    if name == "amplitude":
        new = max(1.0, new)
    return new


class DashboardScreen(Screen):
    is_dashboard = True
    ALLOW_IN_MAXIMIZED_VIEW = "Footer, StatusBar"  # the status stays in view while zoomed
    BINDINGS = [
        Binding("space", "pause_resume", "Pause/resume"),
        Binding("plus,equals_sign", "nudge('amplitude', 1)", "A+", key_display="+"),
        Binding("minus", "nudge('amplitude', 0)", "A−", key_display="-"),
        Binding("greater_than_sign,full_stop", "nudge('period', 1)", "T+", key_display=">"),
        Binding("less_than_sign,comma", "nudge('period', 0)", "T−", key_display="<"),
        Binding("a", "edit('amplitude')", "Edit A"),
        Binding("t", "edit('period')", "Edit T"),
        Binding("r", "edit('lr')", "Edit lr"),
        Binding("c", "checkpoint", "Checkpoint"),
        Binding("s", "stop", "Stop run"),
        Binding("w", "cycle_window", "Window"),
        Binding("e", "cycle_smoothing", "EMA"),
        Binding("l", "toggle_log", "Log-y"),
        Binding("v", "events", "Events"),
        Binding("z", "zoom", "Zoom chart"),
        Binding("o", "app.compare_picker", "Compare"),
        Binding("k", "class_view", "Classes"),
        Binding("left_square_bracket", "class_page(-1)", "Classes◂", key_display="["),
        Binding("right_square_bracket", "class_page(1)", "Classes▸", key_display="]"),
        Binding("escape", "leave_input", "Leave field", show=False),
    ]

    # (title, help, action) for the command palette; the keys above do the same
    PALETTE = [
        ("Pause / resume the run", "space: pause after this update, or resume", "pause_resume"),
        ("Increase amplitude A", f"+: multiply A by {NUDGE}", "nudge('amplitude', 1)"),
        ("Decrease amplitude A", f"-: divide A by {NUDGE} (not below 1)", "nudge('amplitude', 0)"),
        ("Increase period T", f">: multiply T by {NUDGE}", "nudge('period', 1)"),
        ("Decrease period T", f"<: divide T by {NUDGE} (not below 1)", "nudge('period', 0)"),
        ("Set amplitude A…", "a: type a new amplitude, Enter applies", "edit('amplitude')"),
        ("Set period T…", "t: type a new period, Enter applies", "edit('period')"),
        ("Set learning rate…", "r: type a new lr, Enter applies", "edit('lr')"),
        ("Checkpoint now", "c: save a checkpoint at the current update", "checkpoint"),
        ("Stop the run", "s: checkpoint and stop the engine (asks first)", "stop"),
        ("Cycle chart window", "w: whole run / current period / last N updates", "cycle_window"),
        ("Cycle EMA smoothing", "e: off / 10 / 100 / 1000 updates", "cycle_smoothing"),
        ("Toggle log-y loss", "l: log or linear y for the loss chart", "toggle_log"),
        ("Show the event log", "v: maximise / restore the event log", "events"),
        ("Zoom a chart", "z: fill the screen with one chart, then the next; Esc restores", "zoom"),
        ("Compare with other runs…", "o: choose runs to overlay with this one (same charts)",
         "app.compare_picker"),
        ("Cycle accuracy classes", "k: with over 10 classes, chart the worst / best / by index", "class_view"),
        ("Previous accuracy classes", "[: the previous classes of the accuracy chart's view", "class_page(-1)"),
        ("Next accuracy classes", "]: the next classes of the accuracy chart's view", "class_page(1)"),
    ]

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
        self.redraws = 0
        self.history_loaded = False  # everything on disk (up to the hello) has been read
        self._early_events: list[tuple[int, str, str, str]] = []
        self._next_redraw = 0.0
        self._drawn_version = -1

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
                       self.session.timeline.markers_between(x0, x1), self.style, lr)

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
            info.state, info.live = s.state, s.live
            info.step, info.total, info.rate, info.eta = step, s.total, s.rate, s.eta()
            info.period_index = pos.index if step else 0
            flat = p.get("kind") == "static" or (amp_now if amp_now is not None else p.get("amplitude")) == 1
            info.emphasized = None if (flat or not step) else pos.cls
            info.amplitude, info.amplitude_now = p.get("amplitude"), amp_now
            info.period, info.lr = p.get("period"), p.get("lr")
            for series in ("diag", "eval"):  # the newest measured sharpness, when the run has one
                lam = s.history.last_value(series, "hessian_lambda_max")
                if lam is not None:
                    info.lambda_max = lam
                    break
        self.query_one(StatusBar).show(info)

    # -- facts from the pump ---------------------------------------------------------------------
    def on_run_started(self, msg: M.RunStarted) -> None:
        self.live = msg.live
        self.query_one(Controls).set_live(msg.live)
        if self.session is not None:
            self.query_one(Controls).show_params(self.session.params)
        if msg.reconnected:
            self.log_event(self.session.step if self.session else 0, "ui", "reconnected to the engine")
        self.dirty = True
        self.update_status()

    def on_history_loaded(self, msg: M.HistoryLoaded) -> None:
        self.history_loaded = True
        if self.session is not None:
            self.query_one(Controls).show_params(self.session.params)
        self.dirty = True
        self.redraw()

    def on_metrics_arrived(self, msg: M.MetricsArrived) -> None:
        self.dirty = True
        if self.session is not None:
            self.session.ack_data()

    def on_eval_arrived(self, msg: M.EvalArrived) -> None:
        self.dirty = True
        if self.session is not None:
            self.session.ack_data()

    def on_state_changed(self, msg: M.StateChanged) -> None:
        self.update_status()

    def on_params_changed(self, msg: M.ParamsChanged) -> None:
        if self.session is not None:
            self.query_one(Controls).show_params(self.session.params)
        self.dirty = True
        self.update_status()

    def on_event_logged(self, msg: M.EventLogged) -> None:
        self.log_event(msg.step, msg.kind, msg.message, msg.level)

    def on_command_answered(self, msg: M.CommandAnswered) -> None:
        controls = self.query_one(Controls)
        if msg.ok:
            if msg.name == "set":
                controls.message("applied " + ", ".join(f"{k} = {fmt.num(v, 6)}" for k, v in msg.values.items()))
            return
        what = msg.name + (" " + ", ".join(f"{k}={v}" for k, v in msg.values.items()) if msg.values else "")
        self.log_event(self.session.step if self.session else 0, "refused", f"{what}: {msg.error}", "warning")
        controls.message(f"{msg.name} refused: {msg.error}", error=True)
        self.notify(msg.error, title=f"{msg.name} refused", severity="warning")

    def on_run_ended(self, msg: M.RunEnded) -> None:
        self.live = False
        self.query_one(Controls).set_live(False)
        if self.session is not None:
            self.query_one(Controls).show_params(self.session.params)
        self.query_one(Controls).message(f"run {msg.state}: read-only", error=msg.state == "crashed")
        self.dirty = True
        self.update_status()

    def log_event(self, step: int, kind: str, message: str, level: str = "info") -> None:
        if not self.is_mounted:
            self._early_events.append((step, kind, message, level))
            return
        self.query_one(EventLog).add(step, kind, message, level)

    # -- steering --------------------------------------------------------------------------------
    def command(self, name: str, values: dict[str, Any] | None = None) -> bool:
        if self.session is None or not self.live:
            self.query_one(Controls).message("the run is not live: nothing to steer", error=True)
            self.app.bell()
            return False
        self.dlf.send_command(self.session, name, values)
        return True

    def action_pause_resume(self) -> None:
        if self.session is not None:
            self.command("resume" if self.session.state == "paused" else "pause")

    def action_checkpoint(self) -> None:
        self.command("checkpoint")

    def action_stop(self) -> None:
        if self.session is None or not self.live:
            self.command("stop")
            return
        from dlf_tui.ui.screens.quit_confirm import ConfirmScreen

        def done(yes: bool | None) -> None:
            if yes:
                self.command("stop")

        self.app.push_screen(ConfirmScreen(f"Stop run {self.session.run_id}?",
                                           "The engine checkpoints and exits; "
                                           "`dlf-tui run --resume` can continue it."), done)

    def action_nudge(self, name: str, up: int) -> None:
        if self.session is None:
            return
        current = self.session.params.get(name)
        if current is None:
            return
        self.set_param(name, nudged(name, float(current), bool(up)))

    def set_param(self, name: str, value: Any) -> None:
        if self.command("set", {name: value}):
            self.query_one(Controls).message(f"sending {name} = {fmt.num(value, 6)}…")

    @on(Controls.Submitted)
    def _control_submitted(self, msg: Controls.Submitted) -> None:
        self.set_param(msg.name, msg.value)
        self.set_focus(None)

    def action_edit(self, name: str) -> None:
        inp = self.query_one(Controls).input(name)
        if not inp.disabled:
            inp.focus()

    def action_leave_input(self) -> None:
        if isinstance(self.focused, Input):
            if self.session is not None:
                self.query_one(Controls).show_params(self.session.params, force=True)
            self.query_one(Controls).message("")
            self.set_focus(None)
        elif self.maximized is not None:
            self.unzoom()

    def action_cycle_window(self) -> None:
        if self.window == "whole":
            self.window = "period"
        elif self.window == "period":
            self.window, self.last_n = "last", LAST_N[0]
        elif self.last_n != LAST_N[-1]:
            self.last_n = LAST_N[LAST_N.index(self.last_n) + 1]
        else:
            self.window = "whole"
        self.redraw(force=True)

    def action_cycle_smoothing(self) -> None:
        i = SMOOTHING.index(self.smoothing) if self.smoothing in SMOOTHING else 0
        self.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        self.redraw(force=True)

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.redraw(force=True)

    def action_zoom(self) -> None:
        charts = self.charts  # in the compact layout this is how the sharpness chart shows
        current = self.maximized
        if current in charts and charts.index(current) + 1 < len(charts):
            nxt = charts[charts.index(current) + 1]
        elif current in charts:
            self.unzoom()
            return
        else:
            nxt = charts[0]
        nxt.display = True  # the compact layout hides the sharpness chart until zoomed
        self.maximize(nxt, container=False)
        self.set_focus(None)  # keys keep steering; nothing may take them as text
        self.dirty = True

    def unzoom(self) -> None:
        self.minimize()
        self.query_one("#sharpness").styles.clear_rule("display")  # back to what the CSS says
        self.dirty = True

    def action_class_view(self) -> None:
        self._classes_changed(self.query_one(AccuracyChart).cycle_view())

    def action_class_page(self, step: int) -> None:
        self._classes_changed(self.query_one(AccuracyChart).page(step) or "")

    def _classes_changed(self, message: str) -> None:
        """After `k`, `[` or `]`: say so and redraw the accuracy chart (and the Γ
        chart only when it charts the accuracy chart's classes)."""
        self.query_one(Controls).message(message)
        if self.session is not None:
            ctx = self.context()
            self.query_one(AccuracyChart).draw(ctx)
            gamma = self.query_one(WeightsChart)
            if gamma.mode == "accuracy":
                gamma.draw(ctx)

    def action_events(self) -> None:
        if self.maximized is not None:
            self.unzoom()
        else:
            self.maximize(self.query_one(EventLog))
