"""Compare: 2–32 runs overlaid on the same charts (CE loss, training and held-out
accuracy, Γ of class 0), e.g. static against dynamical loss from the same seeds.

Every run is read from its directory and followed by polling its files (a live
run's rows grow; a sweep member has no socket anyway), each into its own
decimated ``RunHistory``; the charts redraw on a timer only when one changed.
``ComparePicker`` chooses the runs to add to the one on the dashboard.

Lineage: a run that is a fork (its config's ``[fork] parent, at``) gets a line
"child ← parent @ update N" and a marker at N; the view can start at the first
fork update (``start``: the dashboard's fork opens it so) and ``w`` toggles that
window and the whole runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, SelectionList, Static
from textual.widgets.selection_list import Selection
from textual.worker import get_current_worker

from dlf_tui.core import series as S
from dlf_tui.core.states import LIVE
from dlf_tui.store import run as runs, sweep as sweeps
from dlf_tui.ui import fmt, keys
from dlf_tui.ui.session.base import RunSession
from dlf_tui.ui.session.disk import DiskSource
from dlf_tui.ui.session.member import PENDING, still_live
from dlf_tui.ui.timeline import Marker
from dlf_tui.ui.widgets.charts.base import Style
from dlf_tui.ui.widgets.charts.compare import MAX_RUNS, CompareChart, CompareContext, run_style
from dlf_tui.ui.widgets.footer import StableFooter

if TYPE_CHECKING:
    from dlf_tui.ui.app import DlfApp

REDRAW_S = 0.25
POLL_S = 1.0  # re-read the runs' files this often (longer when reading is slow)
SMOOTHING = (0.0, 10.0, 100.0, 1000.0)
COMPACT_W, COMPACT_H = 120, 36
# the columns the charts draw: a run's history grows with its columns, and up to 32 runs are held
KEEP = {S.METRICS: (S.STEP, S.LOSS_CE, S.LOSS_DYNAMICAL, S.ACCURACY, S.gamma(0)),
        S.EVAL: (S.STEP, S.VAL_ACCURACY)}


# -- labels -----------------------------------------------------------------------------------
def _member(run: runs.Run, cache: dict[Path, sweeps.Sweep | None]) -> tuple[Any, Any]:
    """(sweep, member) when ``run`` is a sweep member, else (None, None)."""
    parent = run.path.parent
    if parent not in cache:
        try:
            cache[parent] = sweeps.Sweep(parent) if sweeps.is_sweep(parent) else None
        except runs.RunError:
            cache[parent] = None
    sw = cache[parent]
    if sw is None:
        return None, None
    return sw, next((m for m in sw.members if m.id == run.id), None)


def run_labels(rs: list[runs.Run]) -> list[str]:
    """Short legend labels: a sweep member is its cell (only the axes that differ
    among the runs shown) and seed; any other run its id."""
    cache: dict[Path, sweeps.Sweep | None] = {}
    found = [_member(r, cache) for r in rs]
    members = [(sw, m) for sw, m in found if m is not None]
    varying: set[int] = set()
    if members:
        n_axes = max(len(m.cell) for _, m in members)
        for i in range(n_axes):
            if len({repr(m.cell[i]) if i < len(m.cell) else None for _, m in members}) > 1:
                varying.add(i)
    one_sweep = len(members) == len(rs) and len({sw.path for sw, _ in members}) == 1
    out = []
    for r, (sw, m) in zip(rs, found):
        if m is None:
            out.append(r.id)
            continue
        cell = " ".join(f"{a.short}={sweeps.slug(v)}" for i, (a, v) in enumerate(zip(sw.axes, m.cell))
                        if i in varying)
        label = f"{cell} s{m.seed}".strip()
        out.append(label if one_sweep else f"{sw.id[:15]}/{label}")
    return out


def fork_of(doc: dict[str, Any]) -> tuple[str, int] | None:
    """(parent directory, update) of a config document that is a fork's, else None."""
    fork = doc.get("fork")
    if not isinstance(fork, dict):
        return None
    parent, at = fork.get("parent"), fork.get("at")
    if not isinstance(parent, str) or not parent or isinstance(at, bool) or not isinstance(at, int):
        return None
    return parent, at


def lineage(paths: list[Path], labels: list[str], docs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(fork update, "child ← parent @ update N") for each run that is a fork, its parent
    named by its label when it is shown too, else by its directory's name."""
    shown: dict[Path, str] = {}
    for path, label in zip(paths, labels):
        try:
            shown.setdefault(path.resolve(), label)
        except OSError:
            pass
    out = []
    for label, doc in zip(labels, docs):
        fork = fork_of(doc)
        if fork is None:
            continue
        parent, at = fork
        try:
            name = shown.get(Path(parent).resolve()) or Path(parent).name
        except OSError:
            name = Path(parent).name
        out.append((at, f"{label} ← {name} @ update {at:,}"))
    return out


# -- the view ----------------------------------------------------------------------------------
class CompareScreen(Screen):
    BINDINGS = keys.COMPARE

    def __init__(self, rs: list[runs.Run], style: Style, labels: list[str] | None = None,
                 title: str = "", start: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.dropped = max(0, len(rs) - MAX_RUNS)
        self.runs = list(rs)[:MAX_RUNS]
        self.labels = (list(labels) if labels is not None else run_labels(self.runs))[:MAX_RUNS]
        self.title_text = title
        self.style = style
        self.sessions = [RunSession(r, keep=KEEP) for r in self.runs]
        self.sources = [DiskSource(s) for s in self.sessions]  # each followed from disk
        self.smoothing = 0.0
        self.log_y = True
        self.loaded = False
        self.redraws = 0
        self.dirty = True
        self._drawn = -1
        self.start = max(0, int(start))  # the first fork update shown (0: none known yet)
        self.window = "fork" if self.start > 1 else "whole"
        self.lineage: list[tuple[int, str]] = []  # (fork update, line) of the forks shown

    @property
    def dlf(self) -> "DlfApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="compare-status")
        with Grid(id="compare-charts"):
            yield CompareChart("CE loss", S.METRICS, S.LOSS_CE, log=True, id="cmp-loss", classes="chart")
            yield CompareChart("train accuracy", S.METRICS, S.ACCURACY, unit=True, id="cmp-acc",
                               classes="chart")
            yield CompareChart("held-out accuracy", S.EVAL, S.VAL_ACCURACY, unit=True, id="cmp-val",
                               classes="chart")
            yield CompareChart("Γ₀(t)", S.METRICS, S.gamma(0), id="cmp-gamma", classes="chart")
        yield Static(id="compare-legend")
        yield Static(id="compare-lineage")
        yield StableFooter()

    def on_mount(self) -> None:
        self.show_legend()
        self.query_one("#compare-lineage").display = False
        self.show_status()
        self.set_interval(REDRAW_S, self.redraw)
        if self.dropped:
            self.notify(f"compare shows at most {MAX_RUNS} runs: {self.dropped} left out",
                        severity="warning")
        self._follow()

    def on_resize(self) -> None:
        w, h = self.size
        self.set_class(w < COMPACT_W or h < COMPACT_H, "-compact")
        self.dirty = True

    def on_screen_resume(self) -> None:
        self.dirty = True

    @property
    def charts(self) -> list[CompareChart]:
        return list(self.query(CompareChart))

    # -- reading (a thread worker) -----------------------------------------------------------
    @work(thread=True, name="compare-poll", group="compare-poll", exclusive=True, exit_on_error=False)
    def _follow(self) -> None:
        worker = get_current_worker()
        for d in self.sources:
            if worker.is_cancelled:
                return
            d.load()
            d.poll()
        self.app.call_from_thread(self._loaded)
        while not worker.is_cancelled:
            t0 = time.monotonic()
            if not any(still_live(s.run) for s in self.sessions):
                for d in self.sources:  # the rows written last
                    d.poll()
                self.app.call_from_thread(self.show_status)
                return  # all ended: nothing more will come
            for d in self.sources:
                d.poll()
            self.app.call_from_thread(self.show_status)
            wait = max(POLL_S, 3 * (time.monotonic() - t0))
            end = time.monotonic() + wait
            while not worker.is_cancelled and time.monotonic() < end:
                time.sleep(0.05)

    def _loaded(self) -> None:
        self.loaded = True
        self.lineage = lineage([s.run.path for s in self.sessions], self.labels,
                               [s.config for s in self.sessions])
        box = self.query_one("#compare-lineage", Static)
        box.update(Text("\n".join(line for _, line in self.lineage)))
        box.display = bool(self.lineage)
        if not self.start and self.lineage:  # forks shown: `w` can start at the first
            self.start = min(at for at, _ in self.lineage)
        self.refresh_bindings()
        has_val = any(s.history.eval_rows and s.history.has(S.EVAL, S.VAL_ACCURACY)
                      for s in self.sessions)
        if not has_val:  # no held-out set: the dynamical loss instead
            self.query_one("#cmp-val", CompareChart).configure("loss F", S.METRICS, S.LOSS_DYNAMICAL,
                                                                log=True)
        self.show_status()
        self.redraw(force=True)

    # -- drawing -------------------------------------------------------------------------------
    def version(self) -> int:
        return sum(s.history.version for s in self.sessions)

    def x_range(self) -> tuple[float, float]:
        last = max((s.history.last_step() for s in self.sessions), default=0)
        x0 = float(self.start) if self.window == "fork" and self.start > 1 else 1.0
        return x0, float(max(last, x0 + 1, 2))

    def context(self) -> CompareContext:
        x0, x1 = self.x_range()
        rs = [(s.history, *run_style(self.style, i)) for i, s in enumerate(self.sessions)]
        marks = [Marker(at, {"fork": line}) for at, line in self.lineage]
        return CompareContext(rs, x0, x1, self.smoothing, self.log_y, self.style, marks)

    def redraw(self, force: bool = False) -> None:
        if not self.loaded:
            return
        v = self.version()
        if v != self._drawn:
            self.dirty = True
        if not (self.dirty or force):
            return
        self.dirty = False
        self._drawn = v
        ctx = self.context()
        with self.app.batch_update():
            for chart in self.charts:
                if chart.display and chart.size.width > 0:
                    chart.draw(ctx)  # type: ignore[arg-type]
        self.redraws += 1

    def show_legend(self) -> None:
        parts = []
        for i, label in enumerate(self.labels):
            marker, color = run_style(self.style, i)
            parts.append(f"{self.style.legend_mark(marker, color)} {escape(label)}")
        self.query_one("#compare-legend", Static).update("  ".join(parts))

    def show_status(self) -> None:
        live = sum(1 for s in self.sessions if s.state in LIVE)
        t = Text()
        t.append("compare ", style="bold")
        t.append(f"{len(self.sessions)} runs")
        if self.title_text:
            t.append(f"  {self.title_text}", style="bold")
        if not self.loaded:
            t.append("  reading…", style="dim")
        else:
            last = max((s.history.last_step() for s in self.sessions), default=0)
            if self.window == "fork" and self.start > 1:
                t.append(f"  updates {fmt.count(self.start)}…{fmt.count(last)}")
            else:
                t.append(f"  up to update {fmt.count(last)}")
            t.append(f"  {live} live" if live else "  none live", style="green" if live else "dim")
        t.append(f"  {'EMA ' + fmt.si(self.smoothing) if self.smoothing else 'EMA off'}"
                 f"  {'log-y' if self.log_y else 'linear'}", style="dim")
        self.query_one("#compare-status", Static).update(t)

    # -- actions -----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cycle_window":  # only with a fork update to start at
            return self.start > 1
        return True

    def action_cycle_window(self) -> None:
        self.window = "whole" if self.window == "fork" else "fork"
        self.show_status()
        self.redraw(force=True)

    def action_back(self) -> None:
        if self.maximized is not None:
            self.minimize()
            self.dirty = True
            return
        self.workers.cancel_group(self, "compare-poll")
        if len(self.app.screen_stack) > 2:
            self.dismiss()
        else:  # opened by `dlf-tui compare`: nothing underneath
            self.app.exit()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.show_status()
        self.redraw(force=True)

    def action_cycle_smoothing(self) -> None:
        i = SMOOTHING.index(self.smoothing) if self.smoothing in SMOOTHING else 0
        self.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        self.show_status()
        self.redraw(force=True)

    def action_zoom(self) -> None:
        charts = self.charts
        current = self.maximized
        if current in charts and charts.index(current) + 1 < len(charts):
            self.maximize(charts[charts.index(current) + 1], container=False)
        elif current in charts:
            self.minimize()
        else:
            self.maximize(charts[0], container=False)
        self.dirty = True


# -- choosing runs --------------------------------------------------------------------------------
def candidates(current: runs.Run | None, runs_dir: Path) -> list[runs.Run]:
    """Runs to compare with ``current``: its sweep's other members first (when it is
    one), then the runs under ``runs_dir``, newest first."""
    out: list[runs.Run] = []
    if current is not None and sweeps.is_sweep(current.path.parent):
        try:
            out += [m.run for m in sweeps.Sweep(current.path.parent).members if m.id != current.id]
        except runs.RunError:
            pass
    here = current.path.resolve() if current is not None else None
    out += [r for r in reversed(runs.list_runs(Path(runs_dir))) if r.path.resolve() != here]
    return out


class ComparePicker(ModalScreen[list[runs.Run] | None]):
    """A multi-select list of runs; dismisses with the chosen ones (None: cancelled)."""

    BINDINGS = [
        Binding("enter", "compare", "Compare", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, current: runs.Run | None, runs_dir: Path) -> None:
        super().__init__(classes="dialog-screen")
        self.current = current
        self.options = candidates(current, runs_dir)
        self._sweeps: dict[Path, sweeps.Sweep | None] = {}
        self.limit = MAX_RUNS - (1 if current is not None else 0)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="compare-picker"):
            what = f"with [b]{escape(self.current.id)}[/b]" if self.current is not None else ""
            if self.current is not None and sweeps.is_sweep(self.current.path.parent):
                what += " (its sweep's members first)"
            yield Static(f"Compare {what}", classes="dialog-title")
            yield SelectionList[int](*(self._option(i, r) for i, r in enumerate(self.options)),
                                     id="compare-choices")
            yield Static("", id="compare-picked", classes="dialog-text")
            yield Static("space: choose / unchoose · enter: compare · escape: cancel",
                         classes="dialog-text")
            with Vertical(classes="dialog-buttons"):
                yield Button("Compare \\[enter]", id="compare-go", variant="primary")

    def _option(self, i: int, r: runs.Run) -> Selection[int]:
        st, last = r.state(), r.last_row()  # no config parsing: a sweep may have thousands
        acc = f" acc {last[S.ACCURACY]:.3f}" if S.ACCURACY in last else ""
        sw, m = _member(r, self._sweeps)
        name = f"{sw.label(m.cell)} s{m.seed}" if m is not None else r.id
        state = PENDING if m is not None and not r.raw_state() else st.get("state", "?")
        prompt = Text.assemble(name, (f"  {state} {fmt.count(last.get(S.STEP, 0))}/"
                                      f"{fmt.count(st.get('total', 0))}{acc}", "dim"))
        return Selection(prompt, i)

    def on_mount(self) -> None:
        if not self.options:
            self.query_one("#compare-picked", Static).update("no other runs to compare with")
        self.query_one(SelectionList).focus()
        self._count()

    @on(SelectionList.SelectedChanged)
    def _count(self) -> None:
        sel = self.query_one(SelectionList).selected
        if len(sel) > self.limit:
            self.query_one(SelectionList).deselect(sel[-1])
            self.app.bell()
            return
        self.query_one("#compare-picked", Static).update(
            f"{len(sel)} chosen (at most {self.limit})" if self.options else
            "no other runs to compare with")

    def chosen(self) -> list[runs.Run]:
        return [self.options[i] for i in sorted(self.query_one(SelectionList).selected)]

    def action_compare(self) -> None:
        picked = self.chosen()
        if not picked:
            self.query_one("#compare-picked", Static).update("choose at least one run (space)")
            self.app.bell()
            return
        self.dismiss(picked)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_compare()
