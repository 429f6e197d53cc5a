"""What the sweep view shows, without Textual: the snapshot read from disk,
where each cell sits on the heatmap, and the summary table's rows.

The heatmap's rows are the sweep's first multi-valued axis and its columns the
second (a single multi-valued axis is one row); every further multi-valued
axis is a slice, one heatmap per combination of their values (``n`` steps
through them).
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import product
from typing import Any

from dlf_tui.store import sweep as sweeps
from dlf_tui.ui import fmt
from dlf_tui.ui.widgets.charts.heatmap import HeatCell


def snapshot(sweep: sweeps.Sweep) -> dict[str, Any]:
    """What the view shows, read from disk (the poll worker calls this)."""
    state = sweep.state()
    if "done" in state and "total" in state:  # the engine writes its progress each second
        done, total = int(state["done"]), int(state["total"])
    else:
        done, total = sweep.progress()
    return {"state": state, "done": done, "total": total, "summary": sweep.summary()}


def signature(snap: dict[str, Any]) -> str:
    """Equal when nothing shown changed (NaN-safe, unlike ==)."""
    st = snap["state"]
    return repr((st.get("state"), st.get("mode"), st.get("reason"), snap["done"], snap["total"],
                 snap["summary"]))


def pm(stats: dict[str, Any] | None) -> str:
    if not stats or not stats.get("n"):
        return "–"
    return f"{stats['mean']:.3f}±{stats['std']:.3f}"


def hits(stats: dict[str, Any] | None) -> str:
    if not stats or not stats.get("n"):
        return "–"
    return f"{round(stats['frac'] * stats['n'])}/{stats['n']}"


def scale(cells: list[list[HeatCell]]) -> tuple[float, float]:
    """The colour range: from a round value at or below the lowest mean, to 1."""
    vals = [c.mean for line in cells for c in line if c.n and not math.isnan(c.mean)]
    if not vals:
        return 0.0, 1.0
    lo = math.floor(min(vals) * 10) / 10
    hi = max(1.0, max(vals))
    return (min(lo, hi - 0.1), hi)


class SweepGrid:
    """The cells of a sweep laid out as heatmap rows × columns × slices."""

    def __init__(self, sweep: sweeps.Sweep) -> None:
        self.sweep = sweep
        axes = list(sweep.axes)
        multi = [i for i, a in enumerate(axes) if len(a.values) > 1]
        # rows: the first axis, columns: the second; a single axis is one row
        self.row_axis = multi[0] if len(multi) > 1 else None
        self.col_axis = multi[1] if len(multi) > 1 else (multi[0] if multi else None)
        self.slice_axes = multi[2:]
        self.slices = list(product(*(axes[i].values for i in self.slice_axes))) or [()]
        self.seeds_of = Counter(m.cell for m in sweep.members)

    def cell_at(self, row: int, col: int, slice_index: int) -> tuple:
        """The sweep cell at heatmap position (row, col) in a slice."""
        values = []
        sl = self.slices[slice_index]
        for i, a in enumerate(self.sweep.axes):
            if i == self.row_axis:
                values.append(a.values[row])
            elif i == self.col_axis:
                values.append(a.values[col])
            elif i in self.slice_axes:
                values.append(sl[self.slice_axes.index(i)])
            else:
                values.append(a.values[0])
        return tuple(values)

    def position(self, cell: tuple) -> tuple[int, int, int]:
        """(row, col, slice) of a cell on the heatmap."""
        axes = self.sweep.axes
        r = axes[self.row_axis].values.index(cell[self.row_axis]) if self.row_axis is not None else 0
        c = axes[self.col_axis].values.index(cell[self.col_axis]) if self.col_axis is not None else 0
        sl = tuple(cell[i] for i in self.slice_axes)
        return r, c, self.slices.index(sl) if sl in self.slices else 0

    def axis_values(self, i: int | None) -> list[str]:
        if i is None:
            return [""]
        return [sweeps.slug(v) for v in self.sweep.axes[i].values]

    def heat_cells(self, by_cell: dict[tuple, dict[str, Any]], metric: str,
                   slice_index: int) -> list[list[HeatCell]]:
        """The heatmap of one slice: each cell's ``metric`` statistics over its seeds."""
        rows = self.axis_values(self.row_axis)
        cols = self.axis_values(self.col_axis)
        out = []
        for r in range(len(rows)):
            line = []
            for c in range(len(cols)):
                s = by_cell.get(self.cell_at(r, c, slice_index))
                st = s.get(metric) if s else None
                if not st or not st.get("n"):
                    line.append(HeatCell(n=0))
                else:
                    line.append(HeatCell(st["mean"], st["std"], round(st["frac"] * st["n"]), st["n"]))
            out.append(line)
        return out

    def table_row(self, cell: tuple, s: dict[str, Any] | None) -> list[Any]:
        """The summary table's row of a cell (``s``: its summary, None before the first)."""
        vals = [sweeps.slug(v) for i, v in enumerate(cell) if len(self.sweep.axes[i].values) > 1]
        if s is None:
            return [*vals, f"0/{self.seeds_of[cell]}", "0", "–", "–", "–", "–"]
        return [*vals, f"{s['finished']}/{s['seeds']}", fmt.count(s["step"]),
                pm(s["train"]), hits(s["train"]), pm(s["val"]), hits(s["val"])]
