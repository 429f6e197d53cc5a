"""Sharpness: the Hessian's top eigenvalue against the optimiser's stability
line (``core/stability.py``: 2/η for gradient descent, 2(1+β)/η for heavy-ball
momentum, none for Adam), and the NTK's top eigenvalue on an axis of its own.

The two λ_max live orders of magnitude apart (the spiral: Hessian ≈ 0.3–10,
NTK ≈ 1e5), so one axis would squash the Hessian against the bottom: the
Hessian and its line use the left log axis, the NTK the right one, each with
its own 1-2-5 ticks.  A run that measures only one of them draws it on the left.

Draws the ``hessian_lambda_max`` / ``ntk_lambda_max`` columns of the run's
``diag`` series (or of ``eval``, for runs that put them there) as soon as they
hold values, and says "diagnostics off" until then.
"""

from __future__ import annotations

import numpy as np

from dlf_tui.core import series as S
from dlf_tui.core.stability import Stability
from dlf_tui.ui.widgets.charts.base import Chart, Context

COLUMNS = (S.HESSIAN_LAMBDA_MAX, S.NTK_LAMBDA_MAX)
LABELS = {S.HESSIAN_LAMBDA_MAX: "Hessian", S.NTK_LAMBDA_MAX: "NTK"}
EDGE_COLOR = "red+"


class SharpnessChart(Chart):
    TITLE = "λmax"
    EMPTY = "λ_max: diagnostics off\n(no Hessian / NTK λ_max in this run yet)"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.sides: dict[str, str] = {}  # column → the y side it was drawn on (tests, legend)
        self.edge_label = ""  # the stability line drawn last ("" when none)

    def plot(self, ctx: Context) -> str:
        h = ctx.history
        curves = []
        for series in (S.DIAG, S.EVAL):
            cols = [c for c in COLUMNS if h.has(series, c)]
            if not cols or not h.count(series):
                continue
            view = h.query(series, ctx.x0, ctx.x1, self.npts(), [S.STEP, *cols])
            for col in cols:
                x, y = self.series(view, col, ctx.smoothing)
                if np.any(np.isfinite(y) & (y > 0)):
                    curves.append((col, x, y))
            break
        self.sides, self.edge_label = {}, ""
        if not curves:
            self._subtitle("")
            return ""
        stab: Stability = ctx.stability or Stability(None, "")
        hessian = any(col == S.HESSIAN_LAMBDA_MAX for col, _, _ in curves)
        legend, notes = [], []
        edge_x = edge_y = np.empty(0)
        if hessian and stab.edge is not None:
            m = ctx.history.query(S.METRICS, ctx.x0, ctx.x1, self.npts(), [S.STEP, S.LR])
            if len(m):
                with np.errstate(divide="ignore", invalid="ignore"):
                    edge_x, edge_y = m.x, stab.edge.factor / m.mean[:, m.col(S.LR)]
        drawn = {}
        # the right axis first: what is drawn last shows where lines cross, and the
        # Hessian and its stability line are what this chart is for
        for i in reversed(range(len(curves))):
            col, x, y = curves[i]
            side = "left" if i == 0 else "right"  # the first measured: the Hessian when there is one
            floor = self.log_floor(y, *([edge_y] if side == "left" and len(edge_y) else []))
            marker, color = ctx.style.cls(i)
            self.line(x, y, marker, color, floor, yside=side)
            self.set_log(side)
            self.sides[col] = side
            drawn[col] = f"{ctx.style.legend_mark(marker, color)} {LABELS[col]}" + (" ▸" if side == "right" else "")
            if side == "left" and len(edge_y):
                self.line(edge_x, edge_y, "dot", EDGE_COLOR, floor, yside="left")
                self.edge_label = stab.edge.label
        for col, _, _ in curves:
            legend.append(drawn[col])
            if self.edge_label and self.sides[col] == "left":
                mark = "·" if ctx.style.no_color else "[#ff0000]·[/]"
                legend.append(f"{mark} {stab.edge.label}")
        if self.edge_label and stab.edge.note:
            notes.append(stab.edge.note)
        elif hessian and stab.edge is None and stab.why_none:
            notes.append(stab.why_none)
        if len(curves) > 1:
            notes.append(f"▸ {LABELS[curves[1][0]]}: right axis")
        notes.append("log-y")
        self._subtitle("  ".join(notes))
        return "  ".join(legend)

    def _subtitle(self, text: str) -> None:
        if text != self.border_subtitle:
            self.border_subtitle = text
