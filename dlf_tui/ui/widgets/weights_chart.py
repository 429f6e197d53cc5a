"""Γ_i(t): the weight of every class in the dynamical loss (ΣΓ = C)."""

from __future__ import annotations

from .chart import Chart, Context


class WeightsChart(Chart):
    TITLE = "Γᵢ(t)"

    def plot(self, ctx: Context) -> str:
        cols = [c for c in ctx.history.metric_columns if c.startswith("gamma_")]
        view = ctx.history.query("metrics", ctx.x0, ctx.x1, self.npts(), ["step", *cols])
        legend = []
        for i, col in enumerate(cols):
            marker, color = ctx.style.cls(i)
            self.curve(view, col, marker, color, ctx.smoothing)
            legend.append(f"{ctx.style.legend_mark(marker, color)} {i}")
        return "  ".join(legend)
