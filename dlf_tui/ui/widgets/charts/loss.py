"""Loss: the dynamical loss F and the plain loss, CE or MSE (log-y by default)."""

from __future__ import annotations

from dlf_tui.core import series as S
from dlf_tui.ui.widgets.charts.base import Chart, Context


class LossChart(Chart):
    TITLE = "loss"

    def plot(self, ctx: Context) -> str:
        plain = S.plain_loss(ctx.history.metric_columns)  # CE, or MSE for an MSE run
        view = ctx.history.query(S.METRICS, ctx.x0, ctx.x1, self.npts(), [S.STEP, S.LOSS_DYNAMICAL, plain])
        floor = None
        if ctx.log_y and len(view):
            floor = self.log_floor(view.mn[:, view.col(S.LOSS_DYNAMICAL)], view.mn[:, view.col(plain)])
        (mf, cf), (mc, cc) = ctx.style.main(0), ctx.style.main(1)
        self.curve(view, plain, mc, cc, ctx.smoothing, floor)
        self.curve(view, S.LOSS_DYNAMICAL, mf, cf, ctx.smoothing, floor)
        if self.points and ctx.log_y:
            self.set_log()
        scale = "log-y" if ctx.log_y else "linear"
        return f"{ctx.style.legend_mark(mf, cf)} F  {ctx.style.legend_mark(mc, cc)} {S.LOSS_LABEL[S.plain_loss(ctx.history.metric_columns)]}  {scale}"
