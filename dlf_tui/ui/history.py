"""The decimated history of one run, behind a lock: the event-pump thread
appends, the UI thread queries.

``RunHistory`` holds the metrics, eval and diag series of one run, each a
``pyramid.Pyramid`` (O(width) points per query, whatever the run's length),
and derives the F(t−1) − F(t) column (``DROP``) on the way in; for runs with
more than ``SUMMARY_CLASSES`` classes it also keeps a small derived series, the
Γ summary (the emphasised class's Γ and the others', see ``gamma_summary``),
which the Γ chart draws instead of 100 lines.  No textual, no torch.
"""

from __future__ import annotations

import math

import threading
from typing import Callable

import numpy as np

from dlf_tui.core import series as S
from dlf_tui.ui.pyramid import Pyramid, View, empty_view

DROP = "loss_drop"  # derived column: F(t-1) - F(t)
SUMMARY_CLASSES = 10  # with more Γ columns than this, RunHistory also keeps the Γ summary
GAMMA_SUMMARY = "gamma_summary"  # the derived series (see ``gamma_summary``)
SUMMARY_COLUMNS = [S.STEP, "emphasised", "class", "others", "spread"]
TIE = 1e-9  # relative: no class stands out when every |Γ_i − mean| is below this


def class_columns(columns: list[str], name: Callable[[int], str]) -> dict[int, str]:
    """{class index: column} of the per-class columns among ``columns`` that
    ``name`` names (``series.gamma``, ``series.accuracy_class``,
    ``series.val_accuracy_class``), in column order."""
    wanted = {name(i): i for i in range(len(columns))}
    return {wanted[c]: c for c in columns if c in wanted}


def ema(x: np.ndarray, y: np.ndarray, span: float) -> np.ndarray:
    """Exponential moving average of ``y`` over steps ``x`` with time constant
    ``span`` updates (points may be unevenly spaced; NaNs are skipped)."""
    out = np.empty_like(y)
    acc = np.nan
    prev = None
    for i in range(len(y)):
        v = y[i]
        if v != v:  # NaN
            out[i] = acc
            continue
        if acc != acc:
            acc = v
        else:
            a = np.exp(-(x[i] - prev) / span) if prev is not None else 0.0
            acc = a * acc + (1.0 - a) * v
        prev = x[i]
        out[i] = acc
    return out


def gamma_summary(steps: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Rows of ``SUMMARY_COLUMNS`` for Γ rows ``g`` (updates × classes):

    * ``emphasised``: the Γ of the class farthest from the row's mean (under
      the paper's schedule, the emphasised class: Γ_c = C·w/(w+C−1) against
      C/(w+C−1) for the rest, whether w is above or below 1),
    * ``class``: that class's index, NaN when no class stands out (all equal),
    * ``others``: the mean Γ of the other classes,
    * ``spread``: max − min of the other classes' Γ (0 when they are equal,
      as under every schedule of this project).
    """
    g = np.array(g, dtype=np.float64, order="C")  # our own copy (changed below), the same sums for any layout
    n, C = g.shape
    r = np.arange(n)
    jmax, jmin = g.argmax(1), g.argmin(1)
    gmax, gmin = g[r, jmax], g[r, jmin]
    total = g.sum(1)
    up, down = gmax - total / C, total / C - gmin
    high = up >= down  # the odd one out is the largest (w > 1) or the smallest (w < 1)
    j = np.where(high, jmax, jmin)
    emph = np.where(high, gmax, gmin)
    others = (total - emph) / (C - 1)
    g[r, j] = g[r, (j + 1) % C]  # the emphasised one replaced by another class's value
    spread = g.max(1) - g.min(1)
    with np.errstate(invalid="ignore"):
        tied = ~(np.maximum(up, down) > TIE * np.maximum(1.0, np.maximum(np.abs(gmax), np.abs(gmin))))
    cls = np.where(tied, np.nan, j.astype(np.float64))
    return np.column_stack([steps, emph, cls, others, spread])


class RunHistory:
    """The series of one run (metrics, eval, diag), fed by the pump thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.series: dict[str, Pyramid] = {}
        self.columns: dict[str, list[str]] = {S.METRICS: [], S.EVAL: [], S.DIAG: []}
        self._prev_f = np.nan
        self.version = 0  # bumped on every append (charts redraw when it moves)
        # derived series, kept beside (not in) ``series``: the Γ summary of a many-class run
        self.derived: dict[str, Pyramid] = {}
        self._gamma_idx: list[int] = []

    def setup(self, metric_columns: list[str], eval_columns: list[str],
              diag_columns: list[str] | None = None) -> None:
        """(Re)start with these columns; keeps the data of a series whose columns are unchanged."""
        wanted = {S.METRICS: list(metric_columns) + [DROP] if metric_columns else [],
                  S.EVAL: list(eval_columns), S.DIAG: list(diag_columns or [])}
        with self.lock:
            for name, cols in wanted.items():
                if cols == self.columns.get(name) and (name in self.series or not cols):
                    continue
                self.columns[name] = cols
                self.series.pop(name, None)
                if cols:
                    self.series[name] = Pyramid(cols)
                if name == S.METRICS:
                    self._prev_f = np.nan
                    gammas = set(class_columns(cols, S.gamma).values())
                    gam = [i for i, c in enumerate(cols) if c in gammas]
                    self._gamma_idx = gam if len(gam) > SUMMARY_CLASSES else []
                    self.derived.pop(GAMMA_SUMMARY, None)
                    if self._gamma_idx:
                        self.derived[GAMMA_SUMMARY] = Pyramid(SUMMARY_COLUMNS)
            self.version += 1

    @property
    def metric_columns(self) -> list[str]:
        return self.columns[S.METRICS]

    @property
    def eval_columns(self) -> list[str]:
        return self.columns[S.EVAL]

    @property
    def diag_columns(self) -> list[str]:
        return self.columns[S.DIAG]

    def count(self, series: str) -> int:
        p = self._pyramid(series)
        return p.n if p is not None else 0

    @property
    def rows(self) -> int:
        return self.count(S.METRICS)

    @property
    def eval_rows(self) -> int:
        return self.count(S.EVAL)

    def add(self, series: str, start: int, rows: np.ndarray) -> bool:
        """Append rows ``start..`` of a series (skipping ones already held).
        Returns False, appending nothing, when rows are missing before ``start``."""
        with self.lock:
            p = self.series.get(series)
            if p is None:
                return True
            n = p.n
            if start > n:
                return False
            rows = np.asarray(rows, dtype=np.float64)[n - start:]
            if len(rows) == 0:
                return True
            if series == S.METRICS:
                f = rows[:, self.metric_columns.index(S.LOSS_DYNAMICAL)]
                drop = np.empty(len(f))
                drop[0] = self._prev_f - f[0]
                drop[1:] = f[:-1] - f[1:]
                self._prev_f = float(f[-1])
                rows = np.column_stack([rows, drop])
                if self._gamma_idx:
                    self.derived[GAMMA_SUMMARY].append(gamma_summary(rows[:, 0], rows[:, self._gamma_idx]))
            p.append(rows)
            self.version += 1
            return True

    def add_metrics(self, start: int, rows: np.ndarray) -> bool:
        return self.add(S.METRICS, start, rows)

    def add_eval(self, start: int, rows: np.ndarray) -> bool:
        return self.add(S.EVAL, start, rows)

    def last(self) -> dict[str, float]:
        """The newest metrics row as a dict (empty before any data)."""
        with self.lock:
            p = self.series.get(S.METRICS)
            if p is None or p.last_row is None:
                return {}
            return dict(zip(self.metric_columns, (float(v) for v in p.last_row)))

    def last_value(self, series: str, column: str) -> float | None:
        """The newest finite value of a column (None when there is none)."""
        with self.lock:
            p = self._pyramid(series)
            if p is None or p.last_row is None or column not in p.columns:
                return None
            v = p.latest_finite(column)
            return None if v != v else v

    def last_step(self) -> int:
        with self.lock:
            p = self.series.get(S.METRICS)
            if p is None or p.n == 0:
                return 0
            x = p.last_x
            return int(x) if math.isfinite(x) else 0  # a damaged file's step: not an update

    def _pyramid(self, series: str) -> Pyramid | None:
        return self.series.get(series) or self.derived.get(series)

    def query(self, series: str, x0: float, x1: float, npts: int,
              columns: list[str] | None = None) -> View:
        """A series (``metrics``, ``eval``, ``diag``, or the derived ``GAMMA_SUMMARY``)."""
        with self.lock:
            p = self._pyramid(series)
            if p is None:
                return empty_view(columns or [])
            cols = [c for c in (columns or p.columns) if c in p.columns]
            return p.query(x0, x1, npts, cols)

    def has(self, series: str, column: str) -> bool:
        return column in self.columns.get(series, [])

    def nbytes(self) -> int:
        with self.lock:
            return sum(p.nbytes() for p in (*self.series.values(), *self.derived.values()))
