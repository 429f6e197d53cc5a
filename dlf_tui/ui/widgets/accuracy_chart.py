"""Accuracy: overall and per class on the training set; per class on the
held-out set (drawn as points) when the run evaluates one."""

from __future__ import annotations

from .chart import Chart, Context


class AccuracyChart(Chart):
    TITLE = "accuracy"

    def plot(self, ctx: Context) -> str:
        h = ctx.history
        cls_cols = [c for c in h.metric_columns if c.startswith("accuracy_class_")]
        view = h.query("metrics", ctx.x0, ctx.x1, self.npts(), ["step", "accuracy", *cls_cols])
        legend = []
        for i, col in enumerate(cls_cols):
            marker, color = ctx.style.cls(i)
            self.curve(view, col, marker, color, ctx.smoothing)
            legend.append(f"{ctx.style.legend_mark(marker, color)} {i}")
        marker, color = ctx.style.main(0)
        self.curve(view, "accuracy", marker, color, ctx.smoothing)
        legend.insert(0, f"{ctx.style.legend_mark(marker, color)} all")
        val_cols = [c for c in h.eval_columns if c.startswith("val_accuracy_class_")]
        if val_cols and h.eval_rows:
            ev = h.query("eval", ctx.x0, ctx.x1, max(8, self.npts() // 2), ["step", *val_cols])
            for i, col in enumerate(val_cols):
                _, color = ctx.style.cls(i)
                x, y = self.series(ev, col, 0.0)
                vmark = "•" if not (ctx.style.no_color or ctx.style.ascii) else str(i)
                self.line(x, y, vmark, color, scatter=True)
            legend.append("• val" if not (ctx.style.no_color or ctx.style.ascii) else "digit val")
        if self.points:
            self.plt.ylim(0, 1)
        return "  ".join(legend)
