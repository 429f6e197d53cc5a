"""Every remappable key of the TUI, once: each ``Binding`` has an ``id`` (what
``keys.toml`` remaps, see ``settings.py``) and a ``tooltip``, ``"Title: what
it does"``, which the footer shows on hover and the command palette and ``?``
are built from (``palette.py``): nothing lists a key twice.

The screens take their ``BINDINGS`` from here; this module imports nothing
heavy, so the app knows every id (to check ``keys.toml``) before the dashboard
(numpy, plotext) is first imported.  Dialogs (quit, confirm, help) keep fixed
keys: their buttons name them.
"""

from __future__ import annotations

from textual.binding import Binding

NUDGE = 1.25  # A and T move by this factor per key press
PACES = (0, 10_000, 1_000, 100)  # the pace key's cycle, updates per second (0: full speed)

APP = [
    Binding("q", "quit", "Quit", id="app.quit",
            tooltip="Quit: stop a live run, leave it running, or cancel (asks first)"),
    Binding("ctrl+q", "quit", "Quit", show=False, priority=True),  # works in a text field too
    Binding("question_mark", "help", "Keys", key_display="?", id="app.help",
            tooltip="Keys: every key of this screen and what it does"),
]

PICKER = [
    Binding("enter", "start", "Start / attach", id="picker.start",
            tooltip="Start the preset: with the form's values (or attach to the live run chosen)"),
    Binding("ctrl+r", "refresh_runs", "Refresh runs", id="picker.refresh_runs",
            tooltip="Refresh the live runs: read the runs directory again"),
    Binding("escape", "leave_input", "Back to list", show=False),
]

DASHBOARD = [
    Binding("space", "pause_resume", "Pause/resume", id="dashboard.pause",
            tooltip="Pause / resume the run: pause after this update, or resume"),
    Binding("plus,equals_sign", "nudge('amplitude', 1)", "A+", key_display="+", id="dashboard.amplitude_up",
            tooltip=f"Increase amplitude A: multiply A by {NUDGE}"),
    Binding("minus", "nudge('amplitude', 0)", "A−", key_display="-", id="dashboard.amplitude_down",
            tooltip=f"Decrease amplitude A: divide A by {NUDGE} (not below 1)"),
    Binding("greater_than_sign,full_stop", "nudge('period', 1)", "T+", key_display=">",
            id="dashboard.period_up", tooltip=f"Increase period T: multiply T by {NUDGE}"),
    Binding("less_than_sign,comma", "nudge('period', 0)", "T−", key_display="<", id="dashboard.period_down",
            tooltip=f"Decrease period T: divide T by {NUDGE} (not below 1)"),
    Binding("a", "edit('amplitude')", "Edit A", id="dashboard.edit_amplitude",
            tooltip="Set amplitude A…: type a new amplitude, Enter applies"),
    Binding("t", "edit('period')", "Edit T", id="dashboard.edit_period",
            tooltip="Set period T…: type a new period, Enter applies"),
    Binding("r", "edit('lr')", "Edit lr", id="dashboard.edit_lr",
            tooltip="Set learning rate…: type a new lr, Enter applies"),
    Binding("c", "checkpoint", "Checkpoint", id="dashboard.checkpoint",
            tooltip="Checkpoint now: save a checkpoint at the current update"),
    Binding("s", "stop", "Stop run", id="dashboard.stop",
            tooltip="Stop the run: checkpoint and stop the engine (asks first)"),
    Binding("w", "cycle_window", "Window", id="dashboard.window",
            tooltip="Cycle chart window: whole run / current period / last N updates"),
    Binding("e", "cycle_smoothing", "EMA", id="dashboard.ema",
            tooltip="Cycle EMA smoothing: off / 10 / 100 / 1000 updates"),
    Binding("l", "toggle_log", "Log-y", id="dashboard.log_y",
            tooltip="Toggle log-y loss: log or linear y for the loss chart"),
    Binding("v", "events", "Events", id="dashboard.events",
            tooltip="Show the event log: maximise / restore the event log"),
    Binding("z", "zoom", "Zoom chart", id="dashboard.zoom",
            tooltip="Zoom a chart: fill the screen with one chart, then the next; Esc restores"),
    Binding("o", "app.compare_picker", "Compare", id="dashboard.compare",
            tooltip="Compare with other runs…: choose runs to overlay with this one (same charts)"),
    Binding("k", "class_view", "Classes", id="dashboard.classes",
            tooltip="Cycle accuracy classes: with over 10 classes, chart the worst / best / by index"),
    Binding("left_square_bracket", "class_page(-1)", "Classes◂", key_display="[",
            id="dashboard.classes_previous",
            tooltip="Previous accuracy classes: the previous classes of the accuracy chart's view"),
    Binding("right_square_bracket", "class_page(1)", "Classes▸", key_display="]", id="dashboard.classes_next",
            tooltip="Next accuracy classes: the next classes of the accuracy chart's view"),
    Binding("f", "fork", "Fork", id="dashboard.fork",
            tooltip="Fork the run…: a new run from this one's exact parameters at the current "
                    "update, with the A, T, lr you set; then both overlaid from there"),
    Binding("p", "cycle_pace", "Pace", id="dashboard.pace",
            tooltip="Cycle the pace: full speed / 10k / 1k / 100 updates per second "
                    "(pace only waits: the run's updates stay the same)"),
    Binding("x", "extend", "Extend", id="dashboard.extend",
            tooltip="Extend the run…: train a finished or stopped run N more updates "
                    "(resume --steps), followed live"),
    Binding("escape", "leave_input", "Leave field", show=False),
]
# what steers the engine: hidden on a read-only run, dimmed while none is live yet
STEERING = frozenset({"pause_resume", "nudge", "edit", "checkpoint", "stop", "cycle_pace"})

COMPARE = [
    Binding("escape", "back", "Back", id="compare.back", tooltip="Back: leave the comparison"),
    Binding("l", "toggle_log", "Log-y", id="compare.log_y",
            tooltip="Toggle log-y loss: log or linear y for the loss chart"),
    Binding("e", "cycle_smoothing", "EMA", id="compare.ema",
            tooltip="Cycle EMA smoothing: off / 10 / 100 / 1000 updates"),
    Binding("z", "zoom", "Zoom chart", id="compare.zoom",
            tooltip="Zoom a chart: fill the screen with one chart, then the next; Esc restores"),
    Binding("w", "cycle_window", "Window", id="compare.window",
            tooltip="Toggle the window: from the fork update on / the whole runs"),
]

SWEEP = [
    Binding("enter", "open_cell", "Open", id="sweep.open",
            tooltip="Open the cell's runs: overlay the selected cell's seeds in the compare view"),
    Binding("v", "toggle_metric", "Train/val", id="sweep.metric",
            tooltip="Toggle train / held-out accuracy: which accuracy the heatmap and its colours show"),
    Binding("n", "next_slice", "Slice", id="sweep.slice",
            tooltip="Next slice: the next value of the third (and further) axis"),
    Binding("s", "stop", "Stop", id="sweep.stop",
            tooltip="Stop the sweep: every member checkpoints and stops (asks first)"),
]

ERROR = [
    Binding("q", "app.exit_code(1)", "Quit", id="error.quit", tooltip="Quit: leave dlf-tui"),
    Binding("escape,b", "back", "Back to presets", id="error.back",
            tooltip="Back to presets: the preset picker"),
]

ALL = APP + PICKER + DASHBOARD + COMPARE + SWEEP + ERROR
IDS = frozenset(b.id for b in ALL if b.id)
