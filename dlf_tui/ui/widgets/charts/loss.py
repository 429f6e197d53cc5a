"""Loss: the dynamical loss F and the plain cross-entropy CE (log-y by default)."""

from __future__ import annotations

from dlf_tui.core import series as S
from dlf_tui.ui.widgets.charts.base import Chart, Context


class LossChart(Chart):
    TITLE = "loss"

    def plot(self, ctx: Context) -> str:
        view = ctx.history.query(S.METRICS, ctx.x0, ctx.x1, self.npts(), [S.STEP, S.LOSS_DYNAMICAL, S.LOSS_CE])
        floor = None
        if ctx.log_y and len(view):
            floor = self.log_floor(view.mn[:, view.col(S.LOSS_DYNAMICAL)], view.mn[:, view.col(S.LOSS_CE)])
        (mf, cf), (mc, cc) = ctx.style.main(0), ctx.style.main(1)
        self.curve(view, S.LOSS_CE, mc, cc, ctx.smoothing, floor)
        self.curve(view, S.LOSS_DYNAMICAL, mf, cf, ctx.smoothing, floor)
        if self.points and ctx.log_y:
            self.plt.yscale("log")
        scale = "log-y" if ctx.log_y else "linear"
        return f"{ctx.style.legend_mark(mf, cf)} F  {ctx.style.legend_mark(mc, cc)} CE  {scale}"
