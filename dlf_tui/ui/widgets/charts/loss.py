"""Loss: the dynamical loss F and the plain cross-entropy CE (log-y by default)."""

from __future__ import annotations

from dlf_tui.ui.widgets.charts.base import Chart, Context


class LossChart(Chart):
    TITLE = "loss"

    def plot(self, ctx: Context) -> str:
        view = ctx.history.query("metrics", ctx.x0, ctx.x1, self.npts(), ["step", "loss_dynamical", "loss_ce"])
        floor = None
        if ctx.log_y and len(view):
            floor = self.log_floor(view.mn[:, view.col("loss_dynamical")], view.mn[:, view.col("loss_ce")])
        (mf, cf), (mc, cc) = ctx.style.main(0), ctx.style.main(1)
        self.curve(view, "loss_ce", mc, cc, ctx.smoothing, floor)
        self.curve(view, "loss_dynamical", mf, cf, ctx.smoothing, floor)
        if self.points and ctx.log_y:
            self.plt.yscale("log")
        scale = "log-y" if ctx.log_y else "linear"
        return f"{ctx.style.legend_mark(mf, cf)} F  {ctx.style.legend_mark(mc, cc)} CE  {scale}"
