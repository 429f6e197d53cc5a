"""Γ_i(t): the weight of every class in the dynamical loss (ΣΓ = C).

Up to ``ALL_CLASSES`` classes (10) every Γ_i is drawn, each in its own colour
and, without colour, its own marker; where they meet (a whole long run in 80
columns: every column spans whole periods, so every class's band covers the
same cells) they take turns by column (``Chart.class_curves``), so no class
hides another.

With more (CIFAR-100), a hundred lines would be an unreadable tangle and slow
to draw.  Under every schedule of this project (triangle, sine,
square, static) one class at a time is emphasised and all the others share one
weight: Γ_c = C·w/(w+C−1), the rest C/(w+C−1).  So the chart draws, from the
Γ summary that ``RunHistory`` keeps for such runs (``history.gamma_summary``):

* ``emphasised: k``: the Γ of the emphasised class at each update, whichever
  class that was (the peaks move from class to class, one per period); ``k``
  is the class emphasised at the newest update;
* ``others``: the one Γ that the other C−1 classes share.

If the other classes' Γ differ somewhere in the window (a schedule not of the
paper, metrics written by other code), one "others" line would hide that: the
chart then draws the emphasised line and the Γ of the classes the accuracy
chart shows (its ``shown``, in its colours and markers), so both charts speak
of the same classes.  The title names the lines; the subtitle says which of
the two views this is.
"""

from __future__ import annotations

import numpy as np

from dlf_tui.core import series as S
from dlf_tui.ui.history import GAMMA_SUMMARY, class_columns
from dlf_tui.ui.widgets.charts.accuracy import ALL_CLASSES, MIN_SHOWN, AccuracyChart
from dlf_tui.ui.widgets.charts.base import Chart, Context

DIFFER = 1e-6  # the others differ when their spread exceeds this (relative to their Γ)


class WeightsChart(Chart):
    TITLE = "Γᵢ(t)"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.mode = "all"  # the last draw: "all" Γ_i, "others" (emphasised + others) or "accuracy"
        self.lines: list[str] = []  # what the last draw drew, in legend order
        self.emphasised: int | None = None  # the class emphasised at the newest update

    def plot(self, ctx: Context) -> str:
        h = ctx.history
        cols = list(class_columns(h.metric_columns, S.gamma).values())
        if len(cols) > ALL_CLASSES and h.count(GAMMA_SUMMARY):
            return self._plot_summary(ctx, cols)
        self.mode, self.lines, self.emphasised = "all", [str(i) for i in range(len(cols))], None
        if self.border_subtitle:
            self.border_subtitle = ""
        view = h.query(S.METRICS, ctx.x0, ctx.x1, self.npts(), [S.STEP, *cols])
        legend, items = [], []
        for i, col in enumerate(cols):
            marker, color = ctx.style.cls(i)
            items.append((col, marker, color))
            legend.append(f"{ctx.style.legend_mark(marker, color)} {i}")
        self.class_curves(view, items, ctx.smoothing)  # where the Γ_i meet, each stays visible
        return "  ".join(legend)

    def _plot_summary(self, ctx: Context, cols: list[str]) -> str:
        h, style = ctx.history, ctx.style
        C = len(cols)
        view = h.query(GAMMA_SUMMARY, ctx.x0, ctx.x1, self.npts(), [S.STEP, "emphasised", "others", "spread"])
        now = h.last_value(GAMMA_SUMMARY, "class")
        self.emphasised = None if now is None else int(now)
        differ = False
        if len(view):
            with np.errstate(invalid="ignore"):
                spread = np.nanmax(view.mx[:, view.col("spread")], initial=0.0)
                level = np.nanmax(np.abs(view.mx[:, view.col("others")]), initial=1.0)
            differ = bool(spread > DIFFER * level)
        em_marker, em_color = style.main(0)
        self.curve(view, "emphasised", em_marker, em_color, ctx.smoothing)
        who = "none" if self.emphasised is None else str(self.emphasised)
        legend = [f"{style.legend_mark(em_marker, em_color)} emphasised: {who}"]
        self.lines = [f"emphasised: {who}"]
        if not differ:
            self.mode = "others"
            marker, color = style.main(1)
            self.curve(view, "others", marker, color, ctx.smoothing)
            legend.append(f"{style.legend_mark(marker, color)} others")
            self.lines.append("others")
            subtitle = f"{C} classes: the other {C - 1} share one Γ"
        else:
            self.mode = "accuracy"
            shown, source = self._accuracy_classes(cols)
            gcols = [S.gamma(c) for c in shown]
            cv = h.query(S.METRICS, ctx.x0, ctx.x1, self.npts(), [S.STEP, *gcols])
            items = []
            for s, (c, col) in enumerate(zip(shown, gcols)):
                marker, color = style.cls(s)
                items.append((col, marker, color))
                legend.append(f"{style.legend_mark(marker, color)}{c}")
                self.lines.append(str(c))
            self.class_curves(cv, items, ctx.smoothing)
            subtitle = f"the others' Γ differ: {source}"
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
        return "  ".join(legend[:2]) + (" " + " ".join(legend[2:]) if len(legend) > 2 else "")

    def _accuracy_classes(self, cols: list[str]) -> tuple[list[int], str]:
        """The classes the accuracy chart drew last (its first draw may come
        after this one: then the first few by index) and how to say so."""
        try:
            shown = [c for c in self.screen.query_one(AccuracyChart).shown if S.gamma(c) in cols]
        except Exception:  # noqa: BLE001 - not on a dashboard (no screen, no accuracy chart)
            shown = []
        if shown:
            return shown, "the accuracy chart's classes"
        first = sorted(class_columns(cols, S.gamma))[:MIN_SHOWN]
        return first, "classes " + ", ".join(map(str, first))
