"""Accuracy: overall and per class on the training set; per class on the
held-out set (drawn as points) when the run evaluates one.

Up to ``ALL_CLASSES`` classes (the distinct colours and markers of
``Style.cls``) every class is drawn.  With more (CIFAR-100), the chart draws
the overall accuracy (training line, held-out points) and a few classes: as
many as the title can name (3–10), chosen by the view that ``k`` cycles:

* ``worst``: the lowest latest accuracy first,
* ``best``: the highest first,
* ``index``: class 0, 1, 2, … a page at a time;

``[`` and ``]`` page through the ranking or the index.  "Latest" is the newest
held-out evaluation when the run has one, else the training accuracy over the
last ``RANK_SPAN`` updates (one step's per-class accuracy on a minibatch is
too noisy to rank by).  The title names the classes drawn (their real
indices); the subtitle says which view and ranking they come from.
"""

from __future__ import annotations

import numpy as np

from dlf_tui.core import series as S
from dlf_tui.ui.history import class_columns
from dlf_tui.ui.widgets.charts.base import Chart, Context

ALL_CLASSES = 10  # up to this many every class is drawn, as always
MIN_SHOWN = 3  # a subset view draws at least this many classes (the title may then be cut)
RANK_SPAN = 500  # rank by training accuracy: its mean over about this many updates
VIEWS = ("worst", "best", "index")


def order(classes: list[int], values, view: str) -> list[int]:
    """``classes`` in the view's order: ``worst`` (lowest value first), ``best``
    (highest first) or ``index``.  Classes without a value (NaN) go last; ties
    keep index order."""
    if view == "index":
        return sorted(classes)
    v = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(v)
    key = np.where(known, v if view == "worst" else -v, 0.0)
    return [classes[i] for i in np.lexsort((np.asarray(classes), key, ~known))]


def latest(history, classes: list[int], train_cols: dict[int, str]) -> tuple[np.ndarray, str]:
    """Each class's latest accuracy and where it comes from: ``val`` (the
    newest evaluation), ``train`` (the mean over about the last ``RANK_SPAN``
    updates) or ``""`` (no data yet)."""
    val_cols = class_columns(history.eval_columns, S.val_accuracy_class)
    if history.eval_rows and all(c in val_cols for c in classes):
        vals = [history.last_value(S.EVAL, val_cols[c]) for c in classes]
        v = np.array([np.nan if x is None else x for x in vals], dtype=np.float64)
        if not np.isnan(v).all():
            return v, "val"
    last = history.last_step()
    if last > 0 and all(c in train_cols for c in classes):
        view = history.query(S.METRICS, max(1, last - RANK_SPAN + 1), last, 1,
                             [S.STEP, *(train_cols[c] for c in classes)])
        if len(view):
            return view.mean[-1, 1:], "train"
    return np.full(len(classes), np.nan), ""


class AccuracyChart(Chart):
    TITLE = "accuracy"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.class_view = VIEWS[0]
        self.first = 0  # position in the view's order of the first class drawn
        self.class_ids: list[int] = []  # the run's class indices
        self.shown: list[int] = []  # the classes drawn by the last draw, in legend order
        self.ranked_by = ""  # what the last draw ranked by: "val", "train" or "" (not ranked)
        self.k = 0  # classes per view at this size (every class while there are few)

    @property
    def subset(self) -> bool:
        """Too many classes to draw them all: a view of some is drawn."""
        return len(self.class_ids) > ALL_CLASSES

    # -- the keys ----------------------------------------------------------------------
    def cycle_view(self) -> str:
        """``k``: worst → best → by index → worst; returns what to tell the user."""
        if not self.subset:
            return f"every class is drawn ({len(self.class_ids)})"
        self.class_view = VIEWS[(VIEWS.index(self.class_view) + 1) % len(VIEWS)]
        self.first = 0
        return {"worst": "accuracy: the worst classes", "best": "accuracy: the best classes",
                "index": "accuracy: classes by index"}[self.class_view]

    def page(self, step: int) -> str | None:
        """``]`` / ``[``: the next / previous k classes of the view (wrapping round)."""
        if not self.subset:
            return f"every class is drawn ({len(self.class_ids)})"
        n, k = len(self.class_ids), max(1, self.k)
        if step > 0:
            self.first = self.first + k if self.first + k < n else 0
        elif self.first == 0:
            self.first = (n - 1) // k * k
        else:
            self.first = max(0, self.first - k)
        return None

    # -- drawing ------------------------------------------------------------------------
    def plot(self, ctx: Context) -> str:
        h = ctx.history
        train_cols = class_columns(h.metric_columns, S.accuracy_class)
        self.class_ids = sorted(train_cols)
        self.set_class(self.subset, "-subset")
        if self.subset:
            return self._plot_subset(ctx, train_cols)
        self.shown, self.ranked_by, self.k = list(self.class_ids), "", len(self.class_ids)
        if self.border_subtitle:
            self.border_subtitle = ""
        return self._plot_all(ctx)

    def _plot_all(self, ctx: Context) -> str:
        h = ctx.history
        cls_cols = list(class_columns(h.metric_columns, S.accuracy_class).values())
        view = h.query(S.METRICS, ctx.x0, ctx.x1, self.npts(), [S.STEP, S.ACCURACY, *cls_cols])
        legend, items = [], []
        for i, col in enumerate(cls_cols):
            marker, color = ctx.style.cls(i)
            items.append((col, marker, color))
            legend.append(f"{ctx.style.legend_mark(marker, color)} {i}")
        marker, color = ctx.style.main(0)
        items.append((S.ACCURACY, marker, color))
        self.class_curves(view, items, ctx.smoothing, ylim=(0.0, 1.0))  # at 1.0 every class stays visible
        legend.insert(0, f"{ctx.style.legend_mark(marker, color)} all")
        val_cols = list(class_columns(h.eval_columns, S.val_accuracy_class).values())
        if val_cols and h.eval_rows:
            ev = h.query(S.EVAL, ctx.x0, ctx.x1, max(8, self.npts() // 2), [S.STEP, *val_cols])
            for i, col in enumerate(val_cols):
                _, color = ctx.style.cls(i)
                x, y = self.series(ev, col, 0.0)
                vmark = "•" if not (ctx.style.no_color or ctx.style.ascii) else str(i)
                self.line(x, y, vmark, color, scatter=True)
            legend.append("• val" if not (ctx.style.no_color or ctx.style.ascii) else "digit val")
        if self.points:
            self.set_ylim(0, 1)
        return "  ".join(legend)

    def capacity(self, marked: bool) -> int:
        """How many classes the title can name at this width (3 to 10)."""
        digits = len(str(max(self.class_ids)))
        entry = 2 + digits + (2 if marked else 0)  # "━17 " or, with markers, "x0=17 "
        room = self.size.width - 4 - len(self.TITLE) - 2
        return max(MIN_SHOWN, min(ALL_CLASSES, room // entry))

    def _plot_subset(self, ctx: Context, train_cols: dict[int, str]) -> str:
        h, style = ctx.history, ctx.style
        marked = style.no_color or style.ascii  # classes told apart by marker; held-out points are digits
        values, source = latest(h, self.class_ids, train_cols)
        view_name = self.class_view if source else "index"
        ordered = order(self.class_ids, values, view_name)
        self.ranked_by = source if view_name != "index" else ""
        n = len(ordered)
        self.k = k = self.capacity(marked)
        if self.first >= n:
            self.first = 0
        shown = self.shown = ordered[self.first:self.first + k]
        view = h.query(S.METRICS, ctx.x0, ctx.x1, self.npts(),
                       [S.STEP, S.ACCURACY, *(train_cols[c] for c in shown)])
        slots = [style.cls(s) for s in range(len(shown))]
        all_marker, all_color = style.main(0)
        self.class_curves(view, [(train_cols[c], m, col) for c, (m, col) in zip(shown, slots)]
                          + [(S.ACCURACY, all_marker, all_color)], ctx.smoothing, ylim=(0.0, 1.0))
        val_cols = class_columns(h.eval_columns, S.val_accuracy_class)
        has_val = bool(h.eval_rows) and bool(val_cols)
        if has_val:
            cols = [val_cols[c] for c in shown if c in val_cols]
            overall = [S.VAL_ACCURACY] if h.has(S.EVAL, S.VAL_ACCURACY) else []
            ev = h.query(S.EVAL, ctx.x0, ctx.x1, max(8, self.npts() // 2), [S.STEP, *overall, *cols])
            for s, (c, (_, color)) in enumerate(zip(shown, slots)):
                if c in val_cols:
                    x, y = self.series(ev, val_cols[c], 0.0)
                    self.line(x, y, str(s) if marked else "•", color, scatter=True)
            if overall:
                x, y = self.series(ev, S.VAL_ACCURACY, 0.0)
                self.line(x, y, "v" if style.ascii else "•", all_color, scatter=True)
        if self.points:
            self.set_ylim(0, 1)
        # the subtitle: which classes these are, and what the other marks mean
        a, b = self.first + 1, self.first + len(shown)
        span = f"{a}–{b}" if b > a else f"{a}"
        if view_name == "index":
            lo, hi = shown[0], shown[-1]  # a page of consecutive classes
            label = f"classes {lo}–{hi} of {n}" if hi > lo else f"class {lo} of {n}"
        else:
            label = f"{view_name} {len(shown) if a == 1 else span} of {n} by {source}"
        marks = [f"{style.legend_mark(all_marker, all_color)} all"]
        if has_val:  # a class's held-out points: "•" in its colour, or the digit in "x0=17"
            marks.append(f"{style.legend_mark('v' if style.ascii else '•', all_color)} val")
        while marks and len(label) + 7 * len(marks) > self.size.width - 4:
            marks.pop()  # each mark is 7 cells ("  ━ all"); the label matters most
        subtitle = "  ".join([label, *marks])
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
        if marked and has_val:
            return " ".join(f"{style.legend_mark(m, col)}{s}={c}" for s, (c, (m, col)) in
                            enumerate(zip(shown, slots)))
        return " ".join(f"{style.legend_mark(m, col)}{c}" for c, (m, col) in zip(shown, slots))
