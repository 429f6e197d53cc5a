"""Sharpness: the Hessian / NTK top eigenvalue against the stability line 2/lr
(gradient descent is stable only while λ_max < 2/η).

Draws the ``hessian_lambda_max`` / ``ntk_lambda_max`` columns of the run's
``diag`` series (or of ``eval``, for runs that put them there) as soon as they
hold values, and says "diagnostics off" until then.
"""

from __future__ import annotations

import numpy as np

from dlf_tui.core import series as S
from dlf_tui.ui.widgets.charts.base import Chart, Context

COLUMNS = (S.HESSIAN_LAMBDA_MAX, S.NTK_LAMBDA_MAX)
LABELS = {S.HESSIAN_LAMBDA_MAX: "Hessian", S.NTK_LAMBDA_MAX: "NTK"}


class SharpnessChart(Chart):
    TITLE = "sharpness λ_max vs 2/lr"
    EMPTY = "λ_max: diagnostics off\n(no Hessian / NTK λ_max in this run yet)"

    def plot(self, ctx: Context) -> str:
        h = ctx.history
        legend = []
        curves = []
        for series in (S.DIAG, S.EVAL):
            cols = [c for c in COLUMNS if h.has(series, c)]
            if not cols or not h.count(series):
                continue
            view = h.query(series, ctx.x0, ctx.x1, self.npts(), [S.STEP, *cols])
            for i, col in enumerate(cols):
                x, y = self.series(view, col, ctx.smoothing)
                if np.any(~np.isnan(y)):
                    curves.append((col, i, x, y))
            break
        if not curves:
            return ""
        m = h.query(S.METRICS, ctx.x0, ctx.x1, self.npts(), [S.STEP, S.LR])
        with np.errstate(divide="ignore", invalid="ignore"):
            edge = 2.0 / m.mean[:, m.col(S.LR)] if len(m) else np.empty(0)
        # log-y: the NTK's λ_max is orders of magnitude above the Hessian's and 2/lr
        floor = self.log_floor(*(y for *_, y in curves), edge)
        for col, i, x, y in curves:
            marker, color = ctx.style.cls(i)
            self.line(x, y, marker, color, floor)
            legend.append(f"{ctx.style.legend_mark(marker, color)} {LABELS[col]}")
        if len(edge):
            self.line(m.x, edge, "dot", "red+", floor)
            legend.append("[#ff0000]·[/] 2/lr" if not ctx.style.no_color else "· 2/lr")
        if self.points:
            self.plt.yscale("log")
        return "  ".join(legend) + "  log-y"
