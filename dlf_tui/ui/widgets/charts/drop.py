"""F(t−1) − F(t): the paper's bifurcation panel.  Each point is the range
(min and max) of the drops in its step column, so the branches stay visible
however many updates a column holds."""

from __future__ import annotations

from dlf_tui.core import series as S
from dlf_tui.ui.history import DROP
from dlf_tui.ui.widgets.charts.base import Chart, Context


class DropChart(Chart):
    TITLE = "F(t−1)−F(t)"

    def plot(self, ctx: Context) -> str:
        view = ctx.history.query(S.METRICS, ctx.x0, ctx.x1, self.npts(), [S.STEP, DROP])
        if len(view) == 0:
            return ""
        marker, color = ctx.style.main(0)
        if ctx.style.ascii:
            marker = "."
        j = view.col(DROP)
        if ctx.smoothing > 0:
            x, y = self.series(view, DROP, ctx.smoothing)
            self.line(x, y, marker, color)
        else:
            self.line(view.x, view.mn[:, j], marker, color, scatter=True)
            self.line(view.x, view.mx[:, j], marker, color, scatter=True)
        return "min/max" if ctx.smoothing <= 0 else "EMA"
