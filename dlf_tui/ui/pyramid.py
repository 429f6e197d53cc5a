"""Decimation: every chart gets O(width) points, whatever the run's length.

A ``Pyramid`` keeps a series (float64 rows, column 0 = the update step) at
``LEVELS`` resolutions.  Level 0 is a ring of the last ``CAPACITY`` raw rows;
level ``l`` is a ring of the last ``CAPACITY`` buckets of ``FACTOR**l`` rows,
each bucket holding the min, max, last, NaN-free sum and count of every column.
A level's arrays are allocated when the first bucket reaches it (level ``l``
after ``FACTOR**l`` rows) and double as they fill, up to ``CAPACITY`` buckets,
so memory follows what is held rather than the worst case: each doubling of
the run adds at most one level, up to every ring full.  Appending costs a few
numpy calls per level per chunk.

``Pyramid.query(x0, x1, npts)`` picks the finest level whose ring still reaches
back to ``x0`` with at most a few buckets per output point, then merges the
buckets into ``npts`` equal-width step columns (min of mins, max of maxes,
last of lasts, mean of the sums): the M4 idea, so the spikes of a dynamical
loss survive any zoom level.  Only the step and the asked-for columns are
copied out of the rings (a chart asks for a few of a 100-class run's 209).
No textual, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACTOR = 2
CAPACITY = 1024  # buckets per level: ≥ 2 × the widest chart in braille dots (2 × 240)
LEVELS = 22  # the top ring covers CAPACITY * FACTOR**21 ≈ 2.1e9 rows before it wraps
MIN_ROWS = 16  # a level's first allocation (buckets); it doubles up to CAPACITY
COUNT_DTYPE = np.float32  # bucket counts: exact integers (≤ 2**21 rows a bucket < 2**24)
assert FACTOR ** (LEVELS - 1) < 2 ** 24, "bucket counts must stay exact in COUNT_DTYPE"


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


def empty_view(columns: list[str]) -> View:
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
    """A ring of the last ``CAPACITY`` buckets of ``size`` rows.  Its arrays are
    allocated when the first bucket arrives and grow (doubling) until they
    hold ``CAPACITY`` buckets; only then does the ring wrap.  Until it wraps,
    bucket ``i`` is in slot ``i``, which is also ``i % CAPACITY``."""

    def __init__(self, size: int, ncols: int, raw: bool):
        self.size = size  # rows per bucket
        self.ncols = ncols
        self.raw = raw
        self.nb = 0  # completed buckets so far
        self.rows = 0  # slots allocated (0 … CAPACITY)
        self.last = self.mn = self.mx = self.s = self.c = None
        self.carry: _Stats | None = None  # items from the level below not yet a bucket

    def arrays(self) -> list[np.ndarray]:
        if self.rows == 0:
            return []
        return [self.last] if self.raw else [self.last, self.mn, self.mx, self.s, self.c]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())

    def _reserve(self, need: int) -> None:
        """Slots for buckets ``0 … need-1`` (all of the ring once it would wrap)."""
        K = CAPACITY
        if self.rows >= min(need, K):
            return
        new = K if need >= K else min(K, max(need, 2 * self.rows, MIN_ROWS))
        held = self.nb  # not wrapped yet: buckets 0 … nb-1 in slots 0 … nb-1
        shape = (new, self.ncols)

        def grown(old, dtype=np.float64):
            a = np.empty(shape, dtype)
            if old is not None and held:
                a[:held] = old[:held]
            return a

        self.last = grown(self.last)
        if self.raw:
            self.mn = self.mx = self.last
        else:
            self.mn, self.mx, self.s = grown(self.mn), grown(self.mx), grown(self.s)
            self.c = grown(self.c, COUNT_DTYPE)
        self.rows = new

    def write(self, items: _Stats) -> None:
        m = len(items)
        if m == 0:
            return
        self._reserve(self.nb + m)
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

    def held(self) -> int:
        """How many completed buckets the ring holds."""
        return self.nb - self.oldest()

    def _take(self, a: np.ndarray, cols: list[int], i0: int, i1: int) -> np.ndarray:
        """Columns ``cols`` of held buckets ``i0 … i1-1`` (0 = the oldest held),
        copying only those."""
        start, n = (self.oldest() + i0) % CAPACITY, max(0, i1 - i0)
        if n == 0:
            return np.empty((0, len(cols)), a.dtype)
        if start + n <= self.rows:
            return a[start:start + n][:, cols]
        return np.concatenate([a[start:][:, cols], a[:start + n - self.rows][:, cols]])

    def steps(self) -> tuple[np.ndarray, np.ndarray]:
        """The first and last step of every held bucket (a raw row: its step, twice)."""
        if self.rows == 0:
            return np.empty(0), np.empty(0)
        first = self._take(self.mn, [0], 0, self.held())[:, 0]
        return (first, first) if self.raw else (first, self._take(self.mx, [0], 0, self.held())[:, 0])

    def buckets(self, cols: list[int], i0: int = 0, i1: int | None = None) -> _Stats:
        """Columns ``cols`` of the completed buckets still held, oldest first
        (or of held buckets ``i0 … i1-1`` only)."""
        i1 = self.held() if i1 is None else i1
        if self.rows == 0:
            z = np.empty((0, len(cols)))
            return _Stats(z, z, z, None if self.raw else z, None if self.raw else z)
        if self.raw:
            rows = self._take(self.last, cols, i0, i1)
            return _Stats(rows, rows, rows, None, None)
        t = self._take
        return _Stats(t(self.mn, cols, i0, i1), t(self.mx, cols, i0, i1), t(self.last, cols, i0, i1),
                      t(self.s, cols, i0, i1), t(self.c, cols, i0, i1).astype(np.float64))


class Pyramid:
    """A multi-resolution store of one series (column 0 is the step)."""

    def __init__(self, columns: list[str]):
        self.columns = list(columns)
        n = len(columns)
        self.levels = [_Level(FACTOR ** lv, n, raw=lv == 0) for lv in range(LEVELS)]  # no arrays yet
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
    def _tail(self, level: int, cols: list[int]) -> _Stats | None:
        """Columns ``cols`` of the rows after the last completed bucket of
        ``level``, merged into one."""
        parts = []
        for lv in self.levels[level:0:-1]:  # coarse carries first (they are older)
            if lv.carry is not None and len(lv.carry):
                parts.append(_Stats(*(v[:, cols] for v in (lv.carry.mn, lv.carry.mx, lv.carry.last,
                                                            lv.carry.s, lv.carry.c))))
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
        ``npts`` equal-width points.  Only the step and the asked-for columns
        are copied out of the rings."""
        columns = list(self.columns if columns is None else columns)
        if self.n == 0 or npts < 1 or x1 < x0:
            return empty_view(columns)
        sel = [0, *(self.columns.index(c) for c in columns)]  # the step, then the asked-for columns
        idx = list(range(1, len(sel)))
        li = self._pick_level(x0, x1, npts)
        lv = self.levels[li]
        # which buckets the window needs, from the step column alone ...
        held = lv.held()
        xf, xl = lv.steps()
        tail = None if lv.raw else self._tail(li, sel)
        if tail is not None:  # the newest rows, not yet a whole bucket: one more point
            xf, xl = np.append(xf, tail.mn[0, 0]), np.append(xl, tail.mx[0, 0])
        keep = (xl >= x0) & (xf <= x1)
        if not keep.any():
            return empty_view(columns)
        lo, hi = np.flatnonzero(keep)[[0, -1]]
        xl = xl[lo:hi + 1]
        # ... then only those buckets' asked-for columns
        b = lv.buckets(sel, int(lo), int(min(hi + 1, held)))
        if lv.raw:
            mn = mx = last = b.last[:, idx]
            s, c = np.where(np.isnan(mn), 0.0, mn), (~np.isnan(mn)).astype(np.float64)
        else:
            if tail is not None and hi == held:
                b = _Stats.concat([b, tail])
            mn, mx, last, s, c = b.mn[:, idx], b.mx[:, idx], b.last[:, idx], b.s[:, idx], b.c[:, idx]
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

    def latest_finite(self, column: str) -> float:
        """The newest finite value of a column among the raw rows held (NaN if none)."""
        if self.last_row is None:
            return float("nan")
        j = self.columns.index(column)
        v = float(self.last_row[j])
        if v != v and self.n > 1:  # NaN in the newest row: look back over the raw ring
            vals = self.levels[0].buckets([j]).last[:, 0]  # the raw rows held
            vals = vals[~np.isnan(vals)]
            v = float(vals[-1]) if len(vals) else float("nan")
        return v
