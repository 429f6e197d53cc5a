"""DlfApp: the screens, the app-wide keys, the event-pump worker and the one
worker-error handler.  ``run_app`` is the entry point the CLI calls.

Keys are ``keys.py``'s (remapped from ``keys.toml`` by a Textual keymap); the
command palette lists what the screen's keys do (``palette.py``) besides
Textual's own entries, less its "Quit" and "Keys" (ours ask, and are ``?``).
The theme last chosen is remembered in ``ui.json`` (``settings.py``).

The UI process never imports torch: training runs in the engine process
(``python -m dlf_tui.engine RUN_DIR``, its own session), and this process only
reads the run directory and talks to the engine's socket.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from dlf_tui.core.errors import ConfigError, RunError, first_line
from dlf_tui.wire import client as wire_client
from dlf_tui.wire import protocol
from dlf_tui.store import fork as forks
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.wire.client import ClientError
from dlf_tui.ui import keys, settings
from dlf_tui.ui import messages as M
from dlf_tui.ui.palette import key_rows
from dlf_tui.ui.screens.error import ErrorScreen
from dlf_tui.ui.screens.help import HelpScreen
from dlf_tui.ui.screens.picker import PickerScreen
from dlf_tui.ui.screens.quit_confirm import QuitScreen

if TYPE_CHECKING:
    from dlf_tui.core.config import Config
    from dlf_tui.store.sweep import Sweep
    from dlf_tui.ui.screens.dashboard import DashboardScreen
    from dlf_tui.ui.screens.fork import ForkRequest
    from dlf_tui.ui.session.base import RunSession

# The dashboard (numpy, plotext) is imported when first shown, so the picker's
# first frame does not pay for it.


def _dashboard_cls():
    from dlf_tui.ui.screens.dashboard import DashboardScreen

    return DashboardScreen


def _is_dashboard(screen: Screen) -> bool:
    return getattr(screen, "is_dashboard", False)


STOP_WAIT_S = 10.0  # how long "stop the run" waits for the engine's reply before exiting
CHECKPOINT_WAIT_S = 60.0  # how long a fork of a live run waits for its engine's checkpoint


class DlfApp(App[None]):
    CSS_PATH = Path(__file__).resolve().parent / "app.tcss"
    TITLE = "dlf-tui"
    BINDINGS = keys.APP

    def __init__(self, *, runs_dir: Path, presets_dir: Path | None = None,
                 config: "Config | None" = None, attach: runs.Run | None = None,
                 ascii_markers: bool = False, sweep: "Sweep | None" = None,
                 compare: "list[runs.Run] | None" = None, offline: bool = False) -> None:
        super().__init__()
        keymap, self.setting_problems = settings.load_keymap(set(keys.IDS))
        self.set_keymap(keymap)
        self._clashes_told: set[frozenset[str]] = set()
        self.offline = offline  # the picker's runs never download a data set
        self.runs_dir = Path(runs_dir)
        self.presets_dir = presets_dir
        self.initial_config = config
        self.initial_run = attach
        self.initial_sweep = sweep
        self.initial_compare = list(compare) if compare else None
        self.monochrome = "NO_COLOR" in os.environ  # per-class series then differ by marker
        self.ascii_markers = ascii_markers
        self.session: RunSession | None = None
        self.dashboard: DashboardScreen | None = None
        self.starting: tuple[runs.Run, Any] | None = None  # an engine still starting up
        self.forks: list[tuple[runs.Run, Any]] = []  # (child, its engine's Popen) forked here

    # -- settings: theme and keys -------------------------------------------------------------
    def _restore_theme(self) -> None:
        saved = settings.load_state().get("theme")
        if isinstance(saved, str) and saved in self.available_themes and saved != self.theme:
            self.theme = saved
        self.theme_changed_signal.subscribe(self, self._theme_chosen)

    def _theme_chosen(self, theme: Any) -> None:
        settings.save_state({"theme": getattr(theme, "name", str(theme))})

    def handle_bindings_clash(self, clashed_bindings: set[Binding], node: DOMNode) -> None:
        """A key of keys.toml that another binding of the same screen has: say so once."""
        ids = frozenset(b.id or b.action for b in clashed_bindings)
        if ids in self._clashes_told:
            return
        self._clashes_told.add(ids)
        what = ", ".join(sorted(f"{b.key} ({b.id or b.action})" for b in clashed_bindings))
        self.notify(f"{settings.KEYS_FILE}: these keys were taken by a remapped binding: {what}",
                    title="key clash", severity="warning", timeout=10)

    # -- opening ----------------------------------------------------------------------------
    def on_mount(self) -> None:
        self._restore_theme()
        for line in self.setting_problems:
            self.notify(line, title="keys not remapped", severity="warning", timeout=10)
        if self.initial_config is not None:
            self.start_run(self.initial_config)
        elif self.initial_run is not None:
            self.open_run(self.initial_run)
        elif self.initial_sweep is not None:
            self.open_sweep(self.initial_sweep)
        elif self.initial_compare is not None:
            self.open_compare(self.initial_compare)
        else:
            self.push_screen(PickerScreen(self.runs_dir, self.presets_dir))

    def _show(self, screen: Screen) -> None:
        if len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def action_open_picker(self) -> None:
        self._close_session()
        self._show(PickerScreen(self.runs_dir, self.presets_dir))

    def start_run(self, cfg: "Config") -> None:
        """Create the run directory, start its engine (in a thread: importing
        torch takes seconds), then follow it on the dashboard."""
        self._close_session()
        self.dashboard = self._new_dashboard(None)
        self._show(self.dashboard)
        self.dashboard.log_event(0, "ui", f"starting {cfg.name}: creating the run and its engine…")
        self._spawn(cfg, self.dashboard)

    @work(thread=True, name="spawn-engine", group="spawn", exit_on_error=False)
    def _spawn(self, cfg: "Config", dashboard: "DashboardScreen") -> None:
        run = None
        try:
            run = runs.create_run(cfg, self.runs_dir)
            proc = launch.spawn_run_engine(run)
            self.starting = (run, proc)
            launch.wait_until_listening(run, proc)
        except (runs.RunError, OSError) as err:
            self.starting = None
            log = run.file(runs.LOG) if run is not None else None
            self.call_from_thread(self.show_error, "The run could not start", str(err), log)
            return
        self.call_from_thread(self.open_run, run, proc, dashboard)

    def open_run(self, run: runs.Run, proc: Any = None,
                 dashboard: "DashboardScreen | None" = None) -> None:
        """Show ``run`` on the dashboard and start its event pump."""
        from dlf_tui.ui.session.base import RunSession

        self._close_session()
        self.starting = None
        self.session = RunSession(run, proc)
        if dashboard is None or dashboard is not self.dashboard:
            self.dashboard = self._new_dashboard(self.session)
            self._show(self.dashboard)
        else:
            dashboard.attach(self.session)
        # start reading after the first paint: the layout shows at once, data follows
        self.call_after_refresh(self._pump, self.session, self.dashboard)

    def _new_dashboard(self, session: "RunSession | None") -> "DashboardScreen":
        return _dashboard_cls()(session, self.chart_style())

    def chart_style(self):
        from dlf_tui.ui.widgets.charts.base import Style

        return Style(no_color=self.monochrome, ascii=self.ascii_markers)

    def open_sweep(self, sweep: "Sweep") -> None:
        """The sweep view: live heatmap and summary of ``sweep`` (its engine runs apart)."""
        from dlf_tui.ui.screens.sweep import SweepScreen

        self._close_session()
        self._show(SweepScreen(sweep, self.chart_style()))

    def open_compare(self, rs: "list[runs.Run]", title: str = "", start: int = 0) -> None:
        """Overlay ``rs`` on the compare view (over the current screen; Escape returns),
        from update ``start`` on (0: the whole runs)."""
        from dlf_tui.ui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(list(rs), self.chart_style(), title=title, start=start))

    # -- fork and extend (the dashboard's `f` and `x`) ------------------------------------------
    @work(thread=True, name="fork", group="fork", exclusive=True, exit_on_error=False)
    def fork_run(self, session: "RunSession", req: "ForkRequest",
                 dashboard: "DashboardScreen") -> None:
        """Fork ``session``'s run: at the checkpoint its live engine takes now (the same
        as ``dlf-tui fork RUN --at now``), else at its last update; make the child,
        start its engine, then overlay parent and child from the fork update on."""
        parent = session.run
        try:
            if session.live:
                reply = wire_client.request(parent.path, "checkpoint", timeout=CHECKPOINT_WAIT_S)
                at = forks.checkpoint_step(Path(str(reply.data.get("path", ""))))
                if at is None:
                    raise RunError(f"{parent.id}: the engine's checkpoint reply names no checkpoint")
            else:
                at = parent.rows()
            plan = forks.plan(parent, at, req.sets, req.steps)
            child = forks.create(plan, self.runs_dir)
            proc = launch.spawn_run_engine(child, fork=True)
            self.forks.append((child, proc))
            launch.wait_until_listening(child, proc)
        except (ClientError, ConfigError, RunError) as err:
            self.call_from_thread(dashboard.refused, "fork", first_line(err))
            return
        except OSError as err:
            self.call_from_thread(dashboard.refused, "fork",
                                  f"cannot start the fork's engine: {err.strerror or err}")
            return
        self.call_from_thread(self._forked, dashboard, parent, child, plan.at, req)

    def _forked(self, dashboard: "DashboardScreen", parent: runs.Run, child: runs.Run, at: int,
                req: "ForkRequest") -> None:
        dashboard.forked(child.id, at, req)
        if self.screen is dashboard:  # still watching the parent: the overlay of both
            self.open_compare([parent, child], title=f"fork at update {at:,}", start=at)
        else:
            self.notify(f"{child.id}: forked from {parent.id} at update {at:,}", title="fork")

    @work(thread=True, name="extend", group="fork", exclusive=True, exit_on_error=False)
    def extend_run(self, run: runs.Run, total: int, dashboard: "DashboardScreen") -> None:
        """Train the ended ``run`` on to update ``total`` (what ``dlf-tui resume RUN
        --steps TOTAL`` does), then follow it live on a fresh dashboard."""
        try:
            forks.continued(run, total, [])
            proc = launch.spawn_run_engine(run, resume=True)
            self.starting = (run, proc)
            launch.wait_until_listening(run, proc)
        except (ConfigError, RunError) as err:
            self.starting = None
            self.call_from_thread(dashboard.refused, "extend", first_line(err))
            return
        except OSError as err:
            self.starting = None
            self.call_from_thread(dashboard.refused, "extend",
                                  f"cannot start the engine: {err.strerror or err}")
            return
        self.call_from_thread(self._extended, dashboard, run, proc)

    def _extended(self, dashboard: "DashboardScreen", run: runs.Run, proc: Any) -> None:
        if self.dashboard is dashboard and dashboard.session is not None \
                and dashboard.session.run.path == run.path:
            self.open_run(run, proc)  # a fresh dashboard, live (its history read again)
        else:
            self.starting = None
            self.notify(f"{run.id}: extended, training again", title="extend")

    def action_compare_picker(self) -> None:
        """Choose runs to overlay with the one on the dashboard."""
        from dlf_tui.ui.screens.compare import ComparePicker

        current = self.session.run if self.session is not None else None

        def chosen(picked: "list[runs.Run] | None") -> None:
            if picked:
                self.open_compare(([current] if current is not None else []) + picked)

        self.push_screen(ComparePicker(current, self.runs_dir), chosen)

    def _close_session(self) -> None:
        self.workers.cancel_group(self, "pump")
        self.session = None

    @work(thread=True, name="event-pump", group="pump", exclusive=True, exit_on_error=False)
    def _pump(self, session: "RunSession", target: "DashboardScreen") -> None:
        from dlf_tui.ui.session.pump import pump

        worker = get_current_worker()
        pump(session, target.post_message, lambda: worker.is_cancelled)

    # -- commands ----------------------------------------------------------------------------
    @work(thread=True, name="command", group="commands", exit_on_error=False)
    def send_command(self, session: "RunSession", name: str,
                     values: dict[str, Any] | None = None) -> None:
        """Send one command from a worker thread; the pump posts the reply."""
        target = self.dashboard
        try:
            session.send(name, values)
        except (ClientError, protocol.ProtocolError) as err:
            if target is not None:
                target.post_message(M.CommandAnswered(name, values, False, str(err)))
            return
        if target is not None:
            target.post_message(M.CommandSent(name, values))

    @work(thread=True, name="stop-and-exit", group="commands", exit_on_error=False)
    def _stop_and_exit(self, session: "RunSession") -> None:
        try:
            p = session.send("stop", wait=STOP_WAIT_S)
            # No reply yet only means our reader is behind the engine's stream:
            # the engine acts on a command as soon as it reads it.  Only a refusal fails.
            ok = p.reply is None or p.reply.ok
        except (ClientError, protocol.ProtocolError):
            ok = False
        if session.proc is not None:  # we started it: wait for its checkpoint, then reap it
            try:
                session.proc.wait(timeout=STOP_WAIT_S)
            except Exception:  # noqa: BLE001 - it keeps stopping on its own
                pass
        self.call_from_thread(partial(self.exit, return_code=0 if ok else 1))

    # -- the one worker-error handler ----------------------------------------------------------
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        err = event.worker.error
        line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if event.worker.name == "event-pump":
            if self.dashboard is not None:
                self.dashboard.log_event(0, "error", f"lost the run: {line}", "error")
            self.notify(line, title="event pump failed", severity="error", timeout=10)
        else:
            self.notify(line, title=f"{event.worker.name} failed", severity="error", timeout=10)

    def show_error(self, title: str, reason: str, log: Path | None = None) -> None:
        self._show(ErrorScreen(title, reason, log))

    # -- app-wide actions ------------------------------------------------------------------------
    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.screen))

    async def action_quit(self) -> None:
        s = self.session
        if isinstance(self.screen, QuitScreen):
            return
        if s is None and self.starting is not None and self.starting[1].poll() is None:
            run, proc = self.starting  # quitting while the engine still imports torch

            def early(choice: str | None) -> None:
                if choice == "stop":
                    proc.terminate()
                if choice in ("stop", "leave"):
                    self.exit(return_code=0)

            self.push_screen(QuitScreen(run.id), early)
            return
        if s is None or not s.live or not any(map(_is_dashboard, self.screen_stack)):
            self.exit(return_code=0)
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                self.dashboard and self.dashboard.log_event(s.step, "ui", "stopping the run…")
                self._stop_and_exit(s)
            elif choice == "leave":
                self.exit(return_code=0)

        self.push_screen(QuitScreen(s.run_id), chosen)

    def action_exit_code(self, code: int) -> None:
        self.exit(return_code=code)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's entries (theme, screenshot, maximize …), less its Quit (ours
        asks) and its keys panel (``?`` is ours); then every key of the screen,
        from its bindings' tooltips."""
        replaced = (self.action_quit, self.action_show_help_panel, self.action_hide_help_panel)
        for cmd in super().get_system_commands(screen):
            if cmd.callback not in replaced:
                yield cmd
        for row in key_rows(screen):
            if row.enabled and row.tooltip:
                help_text = f"{row.key_text}: {row.detail}" if row.detail else row.key_text
                # the palette reads help as markup: the [ and ] keys must stay text
                yield SystemCommand(row.title, help_text.replace("[", "\\["),
                                    partial(self.run_action, row.binding.action, row.node))


def run_app(*, runs_dir: Path, presets_dir: Path | None = None, config: "Config | None" = None,
            attach: "runs.Run | None" = None, ascii_markers: bool = False,
            sweep: "Sweep | None" = None, compare: "list[runs.Run] | None" = None,
            offline: bool = False) -> int:
    """Open the TUI: the picker, or a new run from ``config``, or ``attach``, or
    the sweep view of ``sweep``, or ``compare`` (runs overlaid).
    Returns the exit code (0, or 1 when a run could not start / stop)."""
    app = DlfApp(runs_dir=runs_dir, presets_dir=presets_dir, config=config, attach=attach,
                 ascii_markers=ascii_markers, sweep=sweep, compare=compare, offline=offline)
    app.run()
    return int(app.return_code or 0)
