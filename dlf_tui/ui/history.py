"""Decimated history: every chart gets O(width) points, whatever the run's length.

A ``Pyramid`` keeps a series (float64 rows, column 0 = the update step) at
``LEVELS`` resolutions.  Level 0 is a ring of the last ``CAPACITY`` raw rows;
level ``l`` is a ring of the last ``CAPACITY`` buckets of ``FACTOR**l`` rows,
each bucket holding the min, max, last, NaN-free sum and count of every column.
All arrays are allocated once, so memory stays flat however long the run is
(about 7 MB for the 3-class spiral), and appending costs a few numpy calls per
level per chunk.

``Pyramid.query(x0, x1, npts)`` picks the finest level whose ring still reaches
back to ``x0`` with at most a few buckets per output point, then merges the
buckets into ``npts`` equal-width step columns (min of mins, max of maxes,
last of lasts, mean of the sums): the M4 idea, so the spikes of a dynamical
loss survive any zoom level.

``RunHistory`` holds the metrics, eval and diag pyramids of one run behind a lock
(the event-pump thread appends, the UI thread queries) and derives the
F(t−1) − F(t) column on the way in.  No textual, no torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

FACTOR = 2
CAPACITY = 1024  # buckets per level: ≥ 2 × the widest chart in braille dots (2 × 240)
LEVELS = 22  # the top ring covers CAPACITY * FACTOR**21 ≈ 2.1e9 rows before it wraps
DROP = "loss_drop"  # derived column: F(t-1) - F(t)


@dataclass
class View:
    """Decimated columns over a step window: one entry per output point."""

    x: np.ndarray  # step of the last row in each point
    mn: np.ndarray  # (points, columns)
    mx: np.ndarray
    last: np.ndarray
    mean: np.ndarray
    columns: list[str]
    level: int = 0

    def __len__(self) -> int:
        return len(self.x)

    def col(self, name: str) -> int:
        return self.columns.index(name)


def _empty_view(columns: list[str]) -> View:
    z = np.empty((0, len(columns)))
    return View(np.empty(0), z, z, z, z, list(columns))


class _Stats:
    """min / max / last / sum / count rows (``m × ncols`` each)."""

    __slots__ = ("mn", "mx", "last", "s", "c")

    def __init__(self, mn, mx, last, s, c):
        self.mn, self.mx, self.last, self.s, self.c = mn, mx, last, s, c

    @classmethod
    def raw(cls, rows: np.ndarray) -> "_Stats":
        ok = ~np.isnan(rows)
        return cls(rows, rows, rows, np.where(ok, rows, 0.0), ok.astype(np.float64))

    def __len__(self) -> int:
        return self.mn.shape[0]

    def slice(self, a: int, b: int) -> "_Stats":
        return _Stats(*(None if v is None else v[a:b] for v in
                        (self.mn, self.mx, self.last, self.s, self.c)))

    def group(self, k: int) -> "_Stats":
        """Merge consecutive groups of ``k`` rows (len must be a multiple of k)."""
        m, n = self.mn.shape[0] // k, self.mn.shape[1]
        r = lambda a: a.reshape(m, k, n)  # noqa: E731
        return _Stats(np.fmin.reduce(r(self.mn), axis=1), np.fmax.reduce(r(self.mx), axis=1),
                      r(self.last)[:, -1], r(self.s).sum(1), r(self.c).sum(1))

    @staticmethod
    def concat(parts: list["_Stats"]) -> "_Stats":
        parts = [p for p in parts if p is not None and len(p)]
        if len(parts) == 1:
            return parts[0]
        return _Stats(*(np.concatenate([getattr(p, f) for p in parts]) for f in _Stats.__slots__))

    def merged(self) -> "_Stats":
        """All rows merged into one."""
        return _Stats(np.fmin.reduce(self.mn, axis=0, keepdims=True),
                      np.fmax.reduce(self.mx, axis=0, keepdims=True),
                      self.last[-1:], self.s.sum(0, keepdims=True), self.c.sum(0, keepdims=True))


class _Level:
    def __init__(self, size: int, ncols: int, raw: bool):
        self.size = size  # rows per bucket
        self.raw = raw
        self.nb = 0  # completed buckets so far
        K = CAPACITY
        self.last = np.full((K, ncols), np.nan)
        if raw:
            self.mn = self.mx = self.last
            self.s = self.c = None
        else:
            self.mn = np.full((K, ncols), np.nan)
            self.mx = np.full((K, ncols), np.nan)
            self.s = np.zeros((K, ncols))
            self.c = np.zeros((K, ncols))
        self.carry: _Stats | None = None  # items from the level below not yet a bucket

    def nbytes(self) -> int:
        arrays = [self.last] if self.raw else [self.last, self.mn, self.mx, self.s, self.c]
        return sum(a.nbytes for a in arrays)

    def write(self, items: _Stats) -> None:
        m = len(items)
        if m == 0:
            return
        if m > CAPACITY:  # only the newest CAPACITY fit
            self.nb += m - CAPACITY
            items = items.slice(m - CAPACITY, m)
            m = CAPACITY
        slots = (self.nb + np.arange(m)) % CAPACITY
        self.last[slots] = items.last
        if not self.raw:
            self.mn[slots] = items.mn
            self.mx[slots] = items.mx
            self.s[slots] = items.s
            self.c[slots] = items.c
        self.nb += m

    def feed(self, items: _Stats) -> _Stats | None:
        """Take items (each ``size / FACTOR`` rows); return the buckets completed."""
        if self.carry is not None:
            items = _Stats.concat([self.carry, items])
        full = len(items) // FACTOR * FACTOR
        self.carry = items.slice(full, len(items)) if full < len(items) else None
        if full == 0:
            return None
        done = items.slice(0, full).group(FACTOR)
        self.write(done)
        return done

    def oldest(self) -> int:
        return max(0, self.nb - CAPACITY)

    def buckets(self) -> _Stats:
        """The completed buckets still held, oldest first."""
        order = np.arange(self.oldest(), self.nb) % CAPACITY
        if self.raw:
            rows = self.last[order]
            return _Stats(rows, rows, rows, None, None)
        return _Stats(self.mn[order], self.mx[order], self.last[order], self.s[order], self.c[order])


class Pyramid:
    """A multi-resolution store of one series (column 0 is the step)."""

    def __init__(self, columns: list[str]):
        self.columns = list(columns)
        n = len(columns)
        self.levels = [_Level(FACTOR ** lv, n, raw=lv == 0) for lv in range(LEVELS)]
        self.n = 0  # rows appended
        self.first_x = np.nan
        self.last_x = np.nan
        self.last_row: np.ndarray | None = None

    def nbytes(self) -> int:
        return sum(lv.nbytes() for lv in self.levels)

    def append(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[0] == 0:
            return
        if rows.shape[1] != len(self.columns):
            raise ValueError(f"expected {len(self.columns)} columns, got {rows.shape[1]}")
        if self.n == 0:
            self.first_x = float(rows[0, 0])
        self.last_x = float(rows[-1, 0])
        self.last_row = rows[-1].copy()
        self.n += rows.shape[0]
        self.levels[0].write(_Stats(rows, rows, rows, None, None))
        items: _Stats | None = _Stats.raw(rows)
        for lv in self.levels[1:]:
            if items is None:
                break
            items = lv.feed(items)

    # -- reading -----------------------------------------------------------------
    def _tail(self, level: int) -> _Stats | None:
        """The rows after the last completed bucket of ``level``, merged into one."""
        parts = []
        for lv in self.levels[level:0:-1]:  # coarse carries first (they are older)
            if lv.carry is not None and len(lv.carry):
                parts.append(lv.carry)
        if not parts:
            return None
        return _Stats.concat(parts).merged()

    def _covers(self, lv: _Level, x0: float) -> bool:
        if lv.nb <= CAPACITY:
            return True  # nothing dropped yet: it holds the whole run
        return bool(lv.mn[lv.oldest() % CAPACITY, 0] <= x0)

    def _pick_level(self, x0: float, x1: float, npts: int) -> int:
        """The coarsest level with at least one bucket per output point (so
        between 1 and FACTOR buckets per point) that still reaches back to x0."""
        span_rows = float(self.n)
        if self.n > 1 and self.last_x > self.first_x:
            density = (self.n - 1) / (self.last_x - self.first_x)
            span_rows = max(1.0, (x1 - x0 + 1) * density)
        want = 0
        while want + 1 < len(self.levels) and self.levels[want + 1].size * npts <= span_rows:
            want += 1
        for i in range(want, len(self.levels)):
            if self._covers(self.levels[i], x0):
                return i
        return len(self.levels) - 1

    def query(self, x0: float, x1: float, npts: int, columns: list[str] | None = None) -> View:
        """Columns (all by default) between steps ``x0..x1``, merged into at most
        ``npts`` equal-width points."""
        columns = list(self.columns if columns is None else columns)
        if self.n == 0 or npts < 1 or x1 < x0:
            return _empty_view(columns)
        idx = [self.columns.index(c) for c in columns]
        li = self._pick_level(x0, x1, npts)
        lv = self.levels[li]
        b = lv.buckets()
        tail = self._tail(li)
        if lv.raw:
            mn = mx = last = b.last[:, idx]
            xf = xl = b.last[:, 0]
            if tail is not None:  # pragma: no cover - level 0 has no carry
                raise AssertionError
            s, c = np.where(np.isnan(mn), 0.0, mn), (~np.isnan(mn)).astype(np.float64)
        else:
            if tail is not None:
                b = _Stats.concat([b, tail])
            xf, xl = b.mn[:, 0], b.mx[:, 0]
            mn, mx, last, s, c = b.mn[:, idx], b.mx[:, idx], b.last[:, idx], b.s[:, idx], b.c[:, idx]
        keep = (xl >= x0) & (xf <= x1)
        if not keep.any():
            return _empty_view(columns)
        lo, hi = np.flatnonzero(keep)[[0, -1]]
        sl = slice(lo, hi + 1)
        xl, mn, mx, last, s, c = xl[sl], mn[sl], mx[sl], last[sl], s[sl], c[sl]
        width = max(x1 - x0 + 1, 1e-9)
        g = np.clip(((xl - x0) * npts // width).astype(np.int64), 0, npts - 1)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(g)) + 1))
        ends = np.concatenate((starts[1:], [len(g)])) - 1
        gmn = np.fmin.reduceat(mn, starts, axis=0)
        gmx = np.fmax.reduceat(mx, starts, axis=0)
        gs = np.add.reduceat(s, starts, axis=0)
        gc = np.add.reduceat(c, starts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(gc > 0, gs / np.maximum(gc, 1), np.nan)
        return View(xl[ends], gmn, gmx, last[ends], mean, columns, li)


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


class RunHistory:
    """The series of one run (metrics, eval, diag), fed by the pump thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.series: dict[str, Pyramid] = {}
        self.columns: dict[str, list[str]] = {"metrics": [], "eval": [], "diag": []}
        self._prev_f = np.nan
        self.version = 0  # bumped on every append (charts redraw when it moves)

    def setup(self, metric_columns: list[str], eval_columns: list[str],
              diag_columns: list[str] | None = None) -> None:
        """(Re)start with these columns; keeps the data of a series whose columns are unchanged."""
        wanted = {"metrics": list(metric_columns) + [DROP] if metric_columns else [],
                  "eval": list(eval_columns), "diag": list(diag_columns or [])}
        with self.lock:
            for name, cols in wanted.items():
                if cols == self.columns.get(name) and (name in self.series or not cols):
                    continue
                self.columns[name] = cols
                self.series.pop(name, None)
                if cols:
                    self.series[name] = Pyramid(cols)
                if name == "metrics":
                    self._prev_f = np.nan
            self.version += 1

    @property
    def metric_columns(self) -> list[str]:
        return self.columns["metrics"]

    @property
    def eval_columns(self) -> list[str]:
        return self.columns["eval"]

    @property
    def diag_columns(self) -> list[str]:
        return self.columns["diag"]

    def count(self, series: str) -> int:
        p = self.series.get(series)
        return p.n if p is not None else 0

    @property
    def rows(self) -> int:
        return self.count("metrics")

    @property
    def eval_rows(self) -> int:
        return self.count("eval")

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
            if series == "metrics":
                f = rows[:, self.metric_columns.index("loss_dynamical")]
                drop = np.empty(len(f))
                drop[0] = self._prev_f - f[0]
                drop[1:] = f[:-1] - f[1:]
                self._prev_f = float(f[-1])
                rows = np.column_stack([rows, drop])
            p.append(rows)
            self.version += 1
            return True

    def add_metrics(self, start: int, rows: np.ndarray) -> bool:
        return self.add("metrics", start, rows)

    def add_eval(self, start: int, rows: np.ndarray) -> bool:
        return self.add("eval", start, rows)

    def last(self) -> dict[str, float]:
        """The newest metrics row as a dict (empty before any data)."""
        with self.lock:
            p = self.series.get("metrics")
            if p is None or p.last_row is None:
                return {}
            return dict(zip(self.metric_columns, (float(v) for v in p.last_row)))

    def last_value(self, series: str, column: str) -> float | None:
        """The newest finite value of a column (None when there is none)."""
        with self.lock:
            p = self.series.get(series)
            if p is None or p.last_row is None or column not in p.columns:
                return None
            v = float(p.last_row[p.columns.index(column)])
            if v != v and p.n > 1:  # NaN in the newest row: look back over the raw ring
                lv = p.levels[0]
                col = lv.last[:, p.columns.index(column)]
                order = np.arange(lv.oldest(), lv.nb) % CAPACITY
                vals = col[order]
                vals = vals[~np.isnan(vals)]
                v = float(vals[-1]) if len(vals) else float("nan")
            return None if v != v else v

    def last_step(self) -> int:
        with self.lock:
            p = self.series.get("metrics")
            if p is None or p.n == 0:
                return 0
            return int(p.last_x)

    def query(self, series: str, x0: float, x1: float, npts: int,
              columns: list[str] | None = None) -> View:
        with self.lock:
            p = self.series.get(series)
            if p is None:
                return _empty_view(columns or [])
            cols = [c for c in (columns or p.columns) if c in p.columns]
            return p.query(x0, x1, npts, cols)

    def has(self, series: str, column: str) -> bool:
        return column in self.columns.get(series, [])

    def nbytes(self) -> int:
        with self.lock:
            return sum(p.nbytes() for p in self.series.values())
