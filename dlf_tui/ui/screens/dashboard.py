"""The dashboard: its keys (``keys.DASHBOARD``: the footer, ``?`` and the command
palette all come from them) and the steering of a live run.

``DashboardScreen`` is ``DashboardView`` (``screens/dashboard_view.py``: the
layout, the refresh and the facts from the event pump) plus what the user
does: pause/resume, nudge or type A, T and lr, the pace, checkpoint, stop, fork
(``screens/fork.py``: a new run from the current update, overlaid with this one),
extend a finished or stopped run, and the chart view keys (window, EMA, log-y,
zoom, the accuracy chart's classes).  A command goes out through the app's
command worker; the engine's reply comes back as ``CommandAnswered``.  Keys that
do not apply are hidden (``check_action``).
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.widgets import Input

from dlf_tui.core.errors import RunError
from dlf_tui.core.states import PAUSED
from dlf_tui.store import code
from dlf_tui.ui import fmt, keys
from dlf_tui.ui import messages as M
from dlf_tui.ui.screens.fork import (ExtendScreen, ForkRequest, ForkScreen, more_default,
                                     next_pace, pace_text)
from dlf_tui.ui.screens.dashboard_view import LAST_N, SMOOTHING, DashboardView
from dlf_tui.ui.widgets.charts.accuracy import AccuracyChart
from dlf_tui.ui.widgets.charts.weights import WeightsChart
from dlf_tui.ui.widgets.controls import Controls
from dlf_tui.ui.widgets.event_log import EventLog

NUDGE = keys.NUDGE  # A and T move by this factor per key press


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


class DashboardScreen(DashboardView):
    BINDINGS = keys.DASHBOARD  # ids, tooltips: the palette and `?` are built from them

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Steering needs a live engine: hidden once the run is read-only (ended,
        or opened from disk), dimmed while none answers yet (starting, a sweep
        member followed from disk).  The pace needs an engine that has one; a fork
        a live engine or a checkpoint; extending a finished or stopped run."""
        if action in keys.STEERING and not self.live:
            return False if self.read_only else None
        if action == "cycle_pace":
            return self.session is not None and "pace" in self.session.params
        if action == "fork":
            return None if self.session is None else self.forkable
        if action == "extend":
            return self.extendable
        return True

    def refused(self, what: str, line: str) -> None:
        """A refusal the UI itself found (or a worker's): one line, nothing run."""
        self.log_event(self.session.step if self.session else 0, "refused", line, "warning")
        self.query_one(Controls).message(f"{what} refused: {line}", error=True)
        self.notify(line, title=f"{what} refused", severity="warning")
        self.app.bell()

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
            self.command("resume" if self.session.state == PAUSED else "pause")

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

    def action_cycle_pace(self) -> None:
        if self.session is None:
            return
        new = next_pace(self.session.params.get("pace"))
        if self.command("set", {"pace": new}):
            self.query_one(Controls).message(f"sending pace = {pace_text(new)}…")

    # -- fork and extend ---------------------------------------------------------------------
    def _trust_problem(self) -> str:
        """Why continuing the run's saved code needs --trust-code ('' when it does not)."""
        assert self.session is not None
        try:
            return code.trust_problem(self.session.run.path)
        except RunError as err:
            return str(err)

    def action_fork(self) -> None:
        s = self.session
        if s is None or not self.forkable:
            return
        problem = self._trust_problem()
        if problem:
            self.refused("fork", f"{s.run_id}: {problem.replace('resuming', 'forking')} "
                                 "(dlf-tui fork … --trust-code)")
            return
        pace = None
        if self.live:
            at = max(s.step, s.history.last_step())
            where = (f"at the update it has reached when you press Enter (now {at:,}: its "
                     "engine checkpoints it then)")
            steps = max(s.total, at + 1)
            live_pace = s.params.get("pace")
            configured = (s.config.get("run") or {}).get("pace", 0)
            if isinstance(live_pace, (int, float)) and live_pace != configured:
                pace = float(live_pace)  # the child keeps up with the parent
            note = f"pace: the parent's, {pace_text(live_pace)}"
        else:
            at = s.run.rows()
            where = f"at its last update, {at:,}"
            steps = at + more_default(s.total, at)
            note = "pace: as configured"

        def chosen(req: ForkRequest | None) -> None:
            if req is None or self.session is not s:
                return
            what = f" with {req.describe()}" if req.changes else ""
            self.query_one(Controls).message(f"forking {s.run_id}{what}: starting the child…")
            self.dlf.fork_run(s, req, self)

        self.app.push_screen(ForkScreen(s.run_id, s.params, where, steps, at + 1, pace, note), chosen)

    def forked(self, child_id: str, at: int, req: ForkRequest) -> None:
        what = f" with {req.describe()}" if req.changes else ""
        self.log_event(at, "fork", f"forked {child_id} at update {at:,}{what}")
        self.query_one(Controls).message(f"forked {child_id} at update {at:,}{what}")

    def action_extend(self) -> None:
        s = self.session
        if s is None or not self.extendable:
            return
        problem = self._trust_problem()
        if problem:
            self.refused("extend", f"{s.run_id}: {problem} (dlf-tui resume … --trust-code)")
            return
        done = s.run.rows()

        def chosen(more: int | None) -> None:
            if more is None or self.session is not s:
                return
            self.query_one(Controls).message(f"extending {s.run_id} to update {done + more:,}: "
                                             "resuming its engine…")
            self.dlf.extend_run(s.run, done + more, self)

        self.app.push_screen(ExtendScreen(s.run_id, s.state, done, s.total), chosen)

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
