"""The preset picker: shipped and user presets with their description and key
settings; amplitude, period, lr, steps, seed and device can be edited before
Enter starts a run.  It also lists the live runs under the runs directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from dlf_tui.core import config as cfgmod
from dlf_tui.core import entries
from dlf_tui.core import presets as presetsmod
from dlf_tui.store import run as runs, sweep as sweeps
from dlf_tui.ui import fmt, keys
from dlf_tui.ui.widgets.footer import StableFooter

if TYPE_CHECKING:
    from dlf_tui.ui.app import DlfApp

# (form field, config key, label)
FIELDS = (
    ("amplitude", "schedule.amplitude", "amplitude A"),
    ("period", "schedule.period", "period T"),
    ("lr", "optim.lr", "lr"),
    ("steps", "run.steps", "steps"),
    ("seed", "run.seed", "seed"),
    ("device", "run.device", "device"),
    ("model", "model.kind", "model"),  # a built-in, a plugin's name or "./file.py:build"
    ("data", "data.name", "data"),
)


def field_value(cfg: cfgmod.Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


DEFAULT_PRESET = "spiral-fig4"


def plugin_line() -> str:
    """The models and data sets installed plugins offer by name ("" when none)."""
    offered = {role: sorted(entries.plugins(role)) for role in ("model", "data")}
    parts = [f"{what}: {', '.join(names)}" for what, names in
             (("models", offered["model"]), ("data sets", offered["data"])) if names]
    return "plugins — " + "; ".join(parts) + " (type one into model / data)" if parts else ""


class ConfigValue(Validator):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def validate(self, value: str) -> ValidationResult:
        section, name = self.key.split(".")
        try:
            if not value.strip():
                raise cfgmod.ConfigError(f"{self.key}: enter a value")
            cfgmod.check_value(section, name, cfgmod.parse_scalar(value))
        except cfgmod.ConfigError as err:
            return self.failure(str(err))
        return self.success()


def describe(cfg: cfgmod.Config) -> Text:
    """Key settings first (they fit at 80×24), then the preset's description."""
    d, m, s, o, r = cfg.data, cfg.model, cfg.schedule, cfg.optim, cfg.run
    if d.name == "spiral":
        data = (f"spiral {d.classes}×{d.points_per_class}, noise {fmt.num(d.noise)}"
                + (f", held-out seed {d.val_seed}" if d.val_seed >= 0 else ""))
    else:
        data = d.name + (f", batch {d.batch_size}" if d.batch_size else ", full batch")
        if d.augment not in ("", "none", "off"):
            data += f", augment {d.augment}"
    if m.kind == "mlp":
        model = f"mlp {'-'.join(str(h) for h in m.hidden)}, {m.activation}, {m.init} init"
    else:
        model = f"{m.kind}" + (f" width {m.width}" if m.width else "") + f", {m.init} init"
    rows = [
        ("schedule", f"{s.kind} A={fmt.num(s.amplitude)} T={s.period}"
                     + (", last period plain CE" if s.last_period_static else "")),
        ("optim", f"{o.name} lr={fmt.num(o.lr)}"
                  + (f" momentum {fmt.num(o.momentum)}" if o.momentum else "")),
        ("run", f"{fmt.count(r.steps)} updates, {r.dtype}, device {r.device}, seed {r.seed}"),
        ("data", data),
        ("model", model),
    ]
    t = Text()
    for k, v in rows:
        t.append(f"{k:>8} ", style="dim")
        t.append(v + "\n")
    t.append(cfg.description or "(no description)", style="italic")
    return t


class PickerScreen(Screen):
    BINDINGS = keys.PICKER

    def __init__(self, runs_dir: Path, presets_dir: Path | None = None) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.presets_dir = presets_dir
        self.presets: list[presetsmod.Preset] = []
        self.loaded: dict[str, cfgmod.Config | str] = {}
        self.live_runs: list[runs.Run | sweeps.Sweep] = []  # live runs and live sweeps
        self.selected: presetsmod.Preset | None = None

    @property
    def dlf(self) -> "DlfApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal(id="picker"):
            with Vertical(id="picker-left"):
                yield OptionList(id="preset-list")
                yield OptionList(id="run-list")
            with Vertical(id="picker-right"):
                with VerticalScroll(id="preset-box"):
                    yield Static(id="preset-info")
                with Grid(id="preset-form"):
                    for name, key, label in FIELDS:
                        yield Label(label, classes="form-label")
                        yield Input(id=f"f-{name}", compact=True, validators=[ConfigValue(key)],
                                    validate_on=["changed", "submitted"], select_on_focus=True)
                plugins = plugin_line()
                if plugins:
                    yield Static(plugins, id="picker-plugins")
                yield Static("", id="picker-msg")
                yield Static("Enter starts the selected preset with these values "
                             "(Tab moves between fields).", id="picker-hint")
        yield StableFooter()

    def on_mount(self) -> None:
        self.query_one("#preset-list").border_title = "presets"
        self.query_one("#run-list").border_title = "live runs (Enter attaches)"
        self.query_one("#preset-box").border_title = "preset"
        try:
            self.presets = presetsmod.discover(self.presets_dir)
        except cfgmod.ConfigError as err:
            self.presets = []
            self.message(str(err), error=True)
        opts = self.query_one("#preset-list", OptionList)
        for p in self.presets:
            opts.add_option(Option(Text.assemble(p.name, (f"  {p.origin}", "dim")), id=p.name))
        if self.presets:
            # start on the paper's Fig. 4 run when it is there
            first = next((i for i, p in enumerate(self.presets) if p.name == DEFAULT_PRESET), 0)
            opts.highlighted = first
            self.select(self.presets[first])
        else:
            self.message("no presets found (looked in: "
                         + ", ".join(str(d) for _, d in presetsmod.search_path(self.presets_dir)) + ")",
                         error=True)
        self.refresh_runs()
        self.set_interval(2.0, self.refresh_runs)
        opts.focus()

    # -- presets ----------------------------------------------------------------------
    def load(self, p: presetsmod.Preset) -> cfgmod.Config | str:
        if p.name not in self.loaded:
            try:
                self.loaded[p.name] = p.load()
            except cfgmod.ConfigError as err:
                self.loaded[p.name] = str(err)
        return self.loaded[p.name]

    def select(self, p: presetsmod.Preset) -> None:
        self.selected = p
        cfg = self.load(p)
        info = self.query_one("#preset-info", Static)
        box = self.query_one("#preset-box")
        box.border_title = f"{p.name} ({p.origin})"
        box.border_subtitle = p.path.name
        box.scroll_home(animate=False)
        if isinstance(cfg, str):
            info.update(Text(f"invalid preset: {cfg}", style="red"))
            return
        info.update(describe(cfg))
        for name, key, _ in FIELDS:
            inp = self.query_one(f"#f-{name}", Input)
            inp.value = fmt.num(field_value(cfg, key), 8) if name != "device" else str(field_value(cfg, key))
        self.message("")

    @on(OptionList.OptionHighlighted, "#preset-list")
    def _preset_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        for p in self.presets:
            if p.name == event.option.id:
                self.select(p)

    @on(OptionList.OptionSelected, "#preset-list")
    def _preset_chosen(self, event: OptionList.OptionSelected) -> None:
        self.action_start()

    @on(OptionList.OptionSelected, "#run-list")
    def _run_chosen(self, event: OptionList.OptionSelected) -> None:
        idx = event.option_index
        if 0 <= idx < len(self.live_runs):
            self.open_live(self.live_runs[idx])

    def open_live(self, item: "runs.Run | sweeps.Sweep") -> None:
        if isinstance(item, sweeps.Sweep):
            self.dlf.open_sweep(item)
        else:
            self.dlf.open_run(item)

    @on(Input.Changed)
    def _field_changed(self, event: Input.Changed) -> None:
        if event.validation_result is not None and not event.validation_result.is_valid:
            self.message(event.validation_result.failure_descriptions[0], error=True)
        else:
            self.message("")

    @on(Input.Submitted)
    def _field_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_start()

    def message(self, text: str, error: bool = False) -> None:
        msg = self.query_one("#picker-msg", Static)
        msg.update(Text(text))
        msg.set_class(error, "-error")

    def build_config(self) -> cfgmod.Config:
        """The selected preset with the form's values; raises ``ConfigError``."""
        if self.selected is None:
            raise cfgmod.ConfigError("no preset selected")
        cfg = self.load(self.selected)
        if isinstance(cfg, str):
            raise cfgmod.ConfigError(cfg)
        items = []
        for name, key, _ in FIELDS:
            text = self.query_one(f"#f-{name}", Input).value.strip()
            result = ConfigValue(key).validate(text)
            if not result.is_valid:  # the field's own one-line reason
                raise cfgmod.ConfigError(result.failure_descriptions[0])
            items.append(f"{key}={text}")
        if getattr(self.app, "offline", False):  # dlf-tui --offline
            items.append("data.download=false")
        try:
            return cfgmod.apply_overrides(cfg, items, source="")
        except cfgmod.ConfigError as err:  # a rule across fields
            raise cfgmod.ConfigError(str(err).split(": ", 1)[-1]) from None

    def action_start(self) -> None:
        if self.focused is self.query_one("#run-list"):
            ol = self.query_one("#run-list", OptionList)
            if ol.highlighted is not None and ol.highlighted < len(self.live_runs):
                self.open_live(self.live_runs[ol.highlighted])
            return
        try:
            cfg = self.build_config()
        except cfgmod.ConfigError as err:
            self.message(str(err), error=True)  # one line; nothing is started
            self.app.bell()
            return
        self.message(f"starting {cfg.name}…")
        self.dlf.start_run(cfg)

    def action_leave_input(self) -> None:
        self.query_one("#preset-list").focus()

    # -- live runs -----------------------------------------------------------------------
    def refresh_runs(self) -> None:
        found: list[runs.Run | sweeps.Sweep] = [
            r for r in runs.list_runs(self.runs_dir)[-200:] if r.is_live()]
        found += self.live_sweeps()
        found.sort(key=lambda r: r.id, reverse=True)  # newest first
        ol = self.query_one("#run-list", OptionList)
        if [r.id for r in found] == [r.id for r in self.live_runs] and found:
            return
        self.live_runs = found
        ol.clear_options()
        if not found:
            ol.add_option(Option(Text("none running", style="dim"), disabled=True))
            return
        for r in found:
            if isinstance(r, sweeps.Sweep):
                st = r.state()
                done, total = st.get("done", 0), st.get("total", 0)
                pct = f"{100 * done / total:.0f}%" if total else ""
                ol.add_option(Option(Text.assemble(r.id, (f"  sweep {st.get('state', '?')} "
                                                          f"{len(r.members)} members {pct}", "dim"))))
                continue
            s = r.summary()
            ol.add_option(Option(Text.assemble(r.id, (f"  {s['state']} {fmt.count(s['step'])}/"
                                                      f"{fmt.count(s['total'])}", "dim"))))
        ol.highlighted = 0

    def live_sweeps(self) -> list[sweeps.Sweep]:
        """Live sweeps (their state first: a sweep.json can list thousands of members)."""
        try:
            dirs = sorted(p for p in self.runs_dir.iterdir() if sweeps.is_sweep(p))[-50:]
        except OSError:
            return []
        out = []
        for p in dirs:
            if runs.Run(p).is_live():
                try:
                    out.append(sweeps.Sweep(p))
                except runs.RunError:
                    continue
        return out

    def action_refresh_runs(self) -> None:
        self.refresh_runs()
