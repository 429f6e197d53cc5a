"""The sweep view: the phase diagram (mean final accuracy per cell over the
sweep's first two multi-valued axes) as a live heatmap, and the summary table
(one row per cell), their cursors in step.  Enter opens the cell's members
overlaid in the compare view.

A thread worker re-reads the sweep (``Sweep.summary()``, its state) about once
a second, longer when that is slow, and posts to the UI only when something
changed.  The sweep engine is a separate process: leaving this view, or the
TUI, never stops it; ``s`` does (SIGTERM after a confirm: members checkpoint).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from dlf_tui.core.states import CRASHED, RUNNING
from dlf_tui.store import run as runs, sweep as sweeps
from dlf_tui.ui import fmt, keys
from dlf_tui.ui.screens.sweep_grid import SweepGrid, scale, signature, snapshot
from dlf_tui.ui.widgets.charts.base import Style
from dlf_tui.ui.widgets.charts.heatmap import Heatmap
from dlf_tui.ui.widgets.footer import StableFooter
from dlf_tui.ui.widgets.status_bar import STATE_STYLE

if TYPE_CHECKING:
    from dlf_tui.ui.app import DlfApp

POLL_S = 1.0
COMPACT_W, COMPACT_H = 100, 30
METRICS = ("train", "val")
METRIC_NAME = {"train": "train accuracy", "val": "held-out accuracy"}


class SweepScreen(Screen):
    BINDINGS = keys.SWEEP

    def __init__(self, sweep: sweeps.Sweep, style: Style, **kw: Any) -> None:
        super().__init__(**kw)
        self.sweep = sweep
        self.style = style
        self.grid = SweepGrid(sweep)
        self.slice = 0
        self.metric = "train"
        self.snap: dict[str, Any] | None = None
        self.by_cell: dict[tuple, dict[str, Any]] = {}
        self.updates = 0  # snapshots applied (tests wait on it)
        self._sig = ""

    @property
    def dlf(self) -> "DlfApp":
        return self.app  # type: ignore[return-value]

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="sweep-status")
        yield Heatmap(id="heatmap", monochrome=self.style.no_color)
        yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
        yield StableFooter()

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        axes = self.sweep.axes
        for i, a in enumerate(axes):
            if len(a.values) > 1:
                t.add_column(a.short, key=f"axis{i}")
        thr = fmt.num(self.sweep.threshold)
        # done: members finished / seeds; update: the cell's slowest member; accuracies:
        # mean±std over seeds and how many seeds reached the threshold
        for key, label in (("finished", "done"), ("step", "update"), ("train", "train"),
                           ("train_hits", f"≥{thr}"), ("val", "val"), ("val_hits", f"val≥{thr}")):
            t.add_column(label, key=key)
        for cell in self.sweep.cells():
            t.add_row(*self.grid.table_row(cell, None), key=self._key(cell))
        self.query_one(Heatmap).border_title = METRIC_NAME[self.metric]
        self.show_heatmap()
        self.show_status()
        self.query_one(Heatmap).focus()
        self._poll()

    def on_resize(self) -> None:
        w, h = self.size
        self.set_class(w < COMPACT_W or h < COMPACT_H, "-compact")

    # -- cells ----------------------------------------------------------------------------
    def _key(self, cell: tuple) -> str:
        return self.sweep.label(cell)

    def current_cell(self) -> tuple:
        return self.grid.cell_at(*self.query_one(Heatmap).cursor, self.slice)

    # -- showing ---------------------------------------------------------------------------
    def show_heatmap(self) -> None:
        hm = self.query_one(Heatmap)
        axes, g = self.sweep.axes, self.grid
        cells = g.heat_cells(self.by_cell, self.metric, self.slice)
        lo, hi = scale(cells)
        rname = axes[g.row_axis].short if g.row_axis is not None else ""
        cname = axes[g.col_axis].short if g.col_axis is not None else ""
        corner = f"{rname}╲{cname}" if rname and cname else cname
        caption = f"mean ± std, seeds ≥ {fmt.num(self.sweep.threshold)}"
        if self.metric == "val" and not any(c.n for line in cells for c in line):
            caption = "no held-out accuracy in this sweep (v: training)"
        title = METRIC_NAME[self.metric]
        if g.slice_axes:
            sl = g.slices[self.slice]
            title += "  " + " ".join(f"{axes[i].short}={sweeps.slug(v)}"
                                     for i, v in zip(g.slice_axes, sl))
            title += f"  (slice {self.slice + 1}/{len(g.slices)}, n: next)"
        hm.border_title = title
        hm.set_data(g.axis_values(g.row_axis), g.axis_values(g.col_axis), cells,
                    corner=corner, caption=caption, lo=lo, hi=hi)

    def show_status(self) -> None:
        sw = self.sweep
        t = Text()
        t.append("sweep ", style="dim")
        t.append(sw.id, style="bold")
        t.append(f"  {sw.preset}  ")
        st = self.snap["state"] if self.snap else sw.state()
        state = str(st.get("state", "unknown"))
        t.append(state.upper(), style=STATE_STYLE.get(state, "bold"))
        if st.get("mode"):
            t.append(f"  mode {st['mode']}")
        if self.snap:
            done, total = self.snap["done"], self.snap["total"]
            pct = f" ({100 * done / total:.1f} %)" if total else ""
            t.append(f"  {fmt.count(done)}/{fmt.count(total)} updates{pct}")
            if state == RUNNING and isinstance(st.get("rate"), (int, float)) and st["rate"] > 0:
                t.append(f"  {fmt.rate(st['rate'])}")
        t.append(f"  {len(sw.members)} members · {len(sw.cells())} cells × {len(sw.seeds)} seeds",
                 style="dim")
        t.append(f"  threshold {fmt.num(sw.threshold)}", style="dim")
        if st.get("reason"):
            t.append(f"  {st['reason']}", style="red" if state == CRASHED else "dim")
        self.query_one("#sweep-status", Static).update(t)

    def apply(self, snap: dict[str, Any]) -> None:
        """A new snapshot from the poll worker (only sent when something changed)."""
        self.snap = snap
        self.by_cell = {row["cell"]: row for row in snap["summary"]}
        t = self.query_one(DataTable)
        for cell, s in self.by_cell.items():
            key = self._key(cell)
            for col, value in zip(t.columns, self.grid.table_row(cell, s)):
                try:
                    if t.get_cell(key, col) != value:
                        t.update_cell(key, col, value, update_width=True)
                except Exception:  # noqa: BLE001 - a cell the table does not hold (never expected)
                    continue
        self.show_heatmap()
        self.show_status()
        self.updates += 1

    # -- polling (a thread worker) ---------------------------------------------------------
    @work(thread=True, name="sweep-poll", group="sweep-poll", exclusive=True, exit_on_error=False)
    def _poll(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            t0 = time.monotonic()
            try:
                snap = snapshot(self.sweep)
            except (OSError, ValueError) as err:  # a file replaced under us: next time
                snap = None
                self.app.call_from_thread(self.notify, f"cannot read the sweep: {err}",
                                          severity="warning")
            if snap is not None:
                sig = signature(snap)
                if sig != self._sig:
                    self._sig = sig
                    self.app.call_from_thread(self.apply, snap)
            wait = max(POLL_S, 3 * (time.monotonic() - t0))  # a big sweep: read less often
            end = time.monotonic() + wait
            while not worker.is_cancelled and time.monotonic() < end:
                time.sleep(0.05)

    # -- cursor sync -------------------------------------------------------------------------
    @on(Heatmap.Moved)
    def _heatmap_moved(self, event: Heatmap.Moved) -> None:
        self._table_to(self.grid.cell_at(event.row, event.col, self.slice))

    def _table_to(self, cell: tuple) -> None:
        t = self.query_one(DataTable)
        try:
            idx = t.get_row_index(self._key(cell))
        except Exception:  # noqa: BLE001 - not in the table
            return
        if t.cursor_row != idx:
            t.move_cursor(row=idx)

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        cell = self._cell_of_key(event.row_key.value)
        if cell is None:
            return
        r, c, sl = self.grid.position(cell)
        if sl != self.slice:
            self.slice = sl
            self.show_heatmap()
        self.query_one(Heatmap).set_cursor(r, c)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        cell = self._cell_of_key(event.row_key.value)
        if cell is not None:
            self.open_cell(cell)

    def _cell_of_key(self, key: str | None) -> tuple | None:
        return next((c for c in self.sweep.cells() if self._key(c) == key), None)

    # -- actions -------------------------------------------------------------------------------
    def action_open_cell(self) -> None:
        self.open_cell(self.current_cell())

    def open_cell(self, cell: tuple) -> None:
        from dlf_tui.ui.screens.compare import CompareScreen

        members = self.sweep.members_of(cell)
        if not members:
            self.app.bell()
            return
        self.app.push_screen(CompareScreen(
            [m.run for m in members], self.style, labels=[f"seed {m.seed}" for m in members],
            title=f"{self.sweep.label(cell)}  ({self.sweep.id})"))

    def action_toggle_metric(self) -> None:
        self.metric = METRICS[(METRICS.index(self.metric) + 1) % len(METRICS)]
        self.show_heatmap()

    def action_next_slice(self) -> None:
        if len(self.grid.slices) < 2:
            self.notify("this sweep has no third axis to slice", severity="information")
            return
        self.slice = (self.slice + 1) % len(self.grid.slices)
        self.show_heatmap()
        self._table_to(self.current_cell())

    def action_stop(self) -> None:
        from dlf_tui.ui.screens.quit_confirm import ConfirmScreen

        if self.sweep.engine_pid() is None:
            state = self.sweep.state().get("state", "unknown")
            self.notify(f"the sweep is not running ({state})", severity="warning")
            self.app.bell()
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                if self.sweep.stop() is None:
                    self.notify("the sweep engine is already gone", severity="warning")
                    return
            except runs.RunError as err:
                self.notify(str(err), severity="error")
                return
            self.notify("stopping the sweep: members checkpoint after this round…")

        self.app.push_screen(ConfirmScreen(
            f"Stop sweep {self.sweep.id}?",
            "Every member checkpoints after the current round and stops; the sweep "
            "`dlf-tui resume SWEEP` continues the unfinished members."), done)
