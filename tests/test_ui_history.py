"""The UI's decimated history store and schedule clock (no Textual, no engine)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlf_tui.core.schedule import Schedule  # pure numpy: no torch
from dlf_tui.ui import history, pyramid
from dlf_tui.ui.history import DROP, RunHistory, ema
from dlf_tui.ui.pyramid import Pyramid
from dlf_tui.ui.timeline import MOST_MARKERS, Timeline


def rows(start: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + start)
    st_ = np.arange(start + 1, start + n + 1, dtype=np.float64)
    return np.column_stack([st_, rng.random(n), np.sin(st_ / 50.0)])


def feed(p: Pyramid, data: np.ndarray, sizes: list[int]) -> None:
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        p.append(data[i:i + n])
        i += n
        k += 1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 20_000), npts=st.integers(1, 500),
       sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=5))
def test_whole_run_keeps_extremes_mean_and_last(n, npts, sizes):
    data = rows(0, n)
    data[::7, 1] = np.nan  # per-class accuracy can be NaN (no sample of the class)
    p = Pyramid(["step", "a", "b"])
    feed(p, data, sizes)
    v = p.query(1, n, npts)
    assert 1 <= len(v) <= npts
    assert v.x[-1] == n  # the newest row is always drawn
    assert np.all(np.diff(v.x) > 0)
    for j, col in ((1, data[:, 1]), (2, data[:, 2])):
        if np.all(np.isnan(col)):
            continue
        assert np.nanmin(v.mn[:, j]) == pytest.approx(np.nanmin(col))
        assert np.nanmax(v.mx[:, j]) == pytest.approx(np.nanmax(col))
    one = p.query(1, n, 1)
    assert one.mean[0, 2] == pytest.approx(data[:, 2].mean())
    assert one.last[0, 2] == data[-1, 2]


def test_chunking_does_not_change_the_answer():
    data = rows(0, 50_000)
    a, b = Pyramid(["step", "a", "b"]), Pyramid(["step", "a", "b"])
    feed(a, data, [50_000])
    feed(b, data, [1, 1400, 7, 333])
    for x0, x1, npts in ((1, 50_000, 300), (40_001, 50_000, 100), (49_000, 50_000, 480)):
        va, vb = a.query(x0, x1, npts), b.query(x0, x1, npts)
        np.testing.assert_array_equal(va.x, vb.x)
        np.testing.assert_allclose(va.mn, vb.mn)
        np.testing.assert_allclose(va.mx, vb.mx)
        np.testing.assert_allclose(va.mean, vb.mean)


def test_recent_windows_stay_exact_after_a_long_run():
    p = Pyramid(["step", "a", "b"])
    for s in range(0, 1_000_000, 4096):
        p.append(rows(s, min(4096, 1_000_000 - s)))
    # the last 400 updates at 400 points: raw rows, exactly
    v = p.query(999_601, 1_000_000, 400)
    assert v.level == 0 and len(v) == 400
    np.testing.assert_array_equal(v.x, np.arange(999_601, 1_000_001))
    np.testing.assert_array_equal(v.mean[:, 2], np.sin(v.x / 50.0))
    # a 5,000-update period still gets one point per column, from a fine level
    v = p.query(995_001, 1_000_000, 200)
    assert len(v) == 200 and v.level <= 5
    # the whole run: every column holds a bucket
    v = p.query(1, 1_000_000, 480)
    assert len(v) == 480


def test_run_history_gaps_overlaps_and_the_drop_column():
    h = RunHistory()
    cols = ["step", "loss_dynamical", "loss_ce"]
    h.setup(cols, ["step", "val_loss_ce"])
    f = np.array([5.0, 4.0, 4.5, 1.0, 0.5])
    data = np.column_stack([np.arange(1, 6.0), f, f])
    assert h.add_metrics(0, data[:2])
    assert not h.add_metrics(3, data[3:])  # rows 2 missing: refused, nothing added
    assert h.rows == 2
    assert h.add_metrics(1, data[1:])  # overlap: row 1 skipped
    assert h.rows == 5 and h.last_step() == 5
    v = h.query("metrics", 1, 5, 5, ["step", DROP])
    np.testing.assert_allclose(v.mean[1:, 1], [1.0, -0.5, 3.5, 0.5])  # F(t-1) - F(t)
    assert np.isnan(v.mean[0, 1])
    assert h.last()["loss_ce"] == 0.5


def test_ema_is_exponential_in_updates_and_skips_nan():
    x = np.arange(1, 6, dtype=float)
    y = np.array([0.0, 1.0, np.nan, 1.0, 1.0])
    out = ema(x, y, span=1.0)
    a = np.exp(-1.0)
    assert out[0] == 0.0
    assert out[1] == pytest.approx(1 - a)
    assert out[2] == out[1]
    assert out[3] == pytest.approx(a ** 2 * (1 - a) + (1 - a ** 2))


def test_timeline_follows_the_engine_schedule_through_edits():
    rng = np.random.default_rng(1)
    sch = Schedule.create("triangle", 10, 37, 3, 10**6, False)
    tl = Timeline.start(37, 3)
    step = 0
    for _ in range(120):
        for _ in range(int(rng.integers(1, 400))):
            pos = tl.at(step + 1)
            assert (pos.phase, pos.cls) == (sch.s.t, sch.s.c)
            sch.advance(1)
            step += 1
        if rng.random() < 0.5:
            T = int(rng.integers(1, 90))
            sch.set_period(T)
            tl.edit(step + 1, {"period": T}, phase=sch.s.t, cls=sch.s.c)
        else:
            tl.edit(step + 1, {"amplitude": 3.0})
    # period numbers only ever grow, one per class switch
    assert tl.at(step).index > 1
    assert len(tl.markers) == 120
    assert not tl.edit(tl.markers[-1].step, tl.markers[-1].changes)  # the same edit twice: one marker


def test_a_run_edited_thousands_of_times_keeps_one_clock_and_thin_chart_markers():
    """lr edits (phase and class as the clock says) add markers but no reference point;
    a chart window gets at most MOST_MARKERS of them, the newest of each slice."""
    sch = Schedule.create("triangle", 10, 50, 3, 10**6, False)
    tl = Timeline.start(50, 3)
    for step in range(1, 20_001):
        if step % 4 == 0:  # the engine reports phase and class with each edit
            assert tl.edit(step, {"lr": 0.5 + step * 1e-7}, phase=sch.s.t, cls=sch.s.c)
        assert (tl.at(step).phase, tl.at(step).cls) == (sch.s.t, sch.s.c)
        sch.advance(1)
    assert len(tl.markers) == 5000 and len(tl.refs) == 1
    shown = tl.markers_between(0, 20_000)
    assert len(shown) <= MOST_MARKERS and shown[-1].step == 20_000
    assert [m.step for m in shown] == sorted(m.step for m in shown)
    assert [m.step for m in tl.markers_between(100, 200)] == list(range(100, 201, 4))
    assert not tl.edit(400, {"lr": 0.5 + 400 * 1e-7})  # seen already


# -- the store against the one it replaced -----------------------------------------------------
# ``OldPyramid`` is the preallocated store this module had before levels were
# allocated lazily and queries copied only the asked-for columns (the same
# algorithm, every array allocated up front, every column copied): the oracle.
class _OldLevel:
    def __init__(self, size, ncols, raw, K):
        self.size, self.raw, self.nb, self.K = size, raw, 0, K
        self.last = np.full((K, ncols), np.nan)
        if raw:
            self.mn = self.mx = self.last
            self.s = self.c = None
        else:
            self.mn, self.mx = np.full((K, ncols), np.nan), np.full((K, ncols), np.nan)
            self.s, self.c = np.zeros((K, ncols)), np.zeros((K, ncols))
        self.carry = None

    def write(self, items):
        m, K = len(items), self.K
        if m == 0:
            return
        if m > K:
            self.nb += m - K
            items = items.slice(m - K, m)
            m = K
        slots = (self.nb + np.arange(m)) % K
        self.last[slots] = items.last
        if not self.raw:
            self.mn[slots], self.mx[slots] = items.mn, items.mx
            self.s[slots], self.c[slots] = items.s, items.c
        self.nb += m

    def feed(self, items):
        if self.carry is not None:
            items = pyramid._Stats.concat([self.carry, items])
        full = len(items) // pyramid.FACTOR * pyramid.FACTOR
        self.carry = items.slice(full, len(items)) if full < len(items) else None
        if full == 0:
            return None
        done = items.slice(0, full).group(pyramid.FACTOR)
        self.write(done)
        return done

    def oldest(self):
        return max(0, self.nb - self.K)

    def buckets(self):
        order = np.arange(self.oldest(), self.nb) % self.K
        if self.raw:
            r = self.last[order]
            return pyramid._Stats(r, r, r, None, None)
        return pyramid._Stats(self.mn[order], self.mx[order], self.last[order], self.s[order], self.c[order])


class OldPyramid:
    def __init__(self, columns, K=1024, levels=22):
        self.columns, self.K = list(columns), K
        self.levels = [_OldLevel(pyramid.FACTOR ** lv, len(columns), lv == 0, K) for lv in range(levels)]
        self.n, self.first_x, self.last_x, self.last_row = 0, np.nan, np.nan, None

    def append(self, rows):
        rows = np.asarray(rows, dtype=np.float64)
        if self.n == 0:
            self.first_x = float(rows[0, 0])
        self.last_x, self.last_row = float(rows[-1, 0]), rows[-1].copy()
        self.n += rows.shape[0]
        self.levels[0].write(pyramid._Stats(rows, rows, rows, None, None))
        items = pyramid._Stats.raw(rows)
        for lv in self.levels[1:]:
            if items is None:
                break
            items = lv.feed(items)

    def _tail(self, level):
        parts = [lv.carry for lv in self.levels[level:0:-1] if lv.carry is not None and len(lv.carry)]
        return pyramid._Stats.concat(parts).merged() if parts else None

    def _covers(self, lv, x0):
        return lv.nb <= self.K or bool(lv.mn[lv.oldest() % self.K, 0] <= x0)

    def _pick_level(self, x0, x1, npts):
        span_rows = float(self.n)
        if self.n > 1 and self.last_x > self.first_x:
            span_rows = max(1.0, (x1 - x0 + 1) * (self.n - 1) / (self.last_x - self.first_x))
        want = 0
        while want + 1 < len(self.levels) and self.levels[want + 1].size * npts <= span_rows:
            want += 1
        for i in range(want, len(self.levels)):
            if self._covers(self.levels[i], x0):
                return i
        return len(self.levels) - 1

    def query(self, x0, x1, npts, columns=None):
        columns = list(self.columns if columns is None else columns)
        if self.n == 0 or npts < 1 or x1 < x0:
            return pyramid.empty_view(columns)
        idx = [self.columns.index(c) for c in columns]
        li = self._pick_level(x0, x1, npts)
        lv = self.levels[li]
        b, tail = lv.buckets(), self._tail(li)
        if lv.raw:
            mn = mx = last = b.last[:, idx]
            xf = xl = b.last[:, 0]
            s, c = np.where(np.isnan(mn), 0.0, mn), (~np.isnan(mn)).astype(np.float64)
        else:
            if tail is not None:
                b = pyramid._Stats.concat([b, tail])
            xf, xl = b.mn[:, 0], b.mx[:, 0]
            mn, mx, last, s, c = b.mn[:, idx], b.mx[:, idx], b.last[:, idx], b.s[:, idx], b.c[:, idx]
        keep = (xl >= x0) & (xf <= x1)
        if not keep.any():
            return pyramid.empty_view(columns)
        lo, hi = np.flatnonzero(keep)[[0, -1]]
        sl = slice(lo, hi + 1)
        xl, mn, mx, last, s, c = xl[sl], mn[sl], mx[sl], last[sl], s[sl], c[sl]
        g = np.clip(((xl - x0) * npts // max(x1 - x0 + 1, 1e-9)).astype(np.int64), 0, npts - 1)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(g)) + 1))
        ends = np.concatenate((starts[1:], [len(g)])) - 1
        gs, gc = np.add.reduceat(s, starts, axis=0), np.add.reduceat(c, starts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(gc > 0, gs / np.maximum(gc, 1), np.nan)
        gmn, gmx = np.fmin.reduceat(mn, starts, axis=0), np.fmax.reduceat(mx, starts, axis=0)
        return pyramid.View(xl[ends], gmn, gmx, last[ends], mean, columns, li)

    def latest_finite(self, column):
        j = self.columns.index(column)
        v = float(self.last_row[j])
        if v != v and self.n > 1:
            lv = self.levels[0]
            vals = lv.last[:, j][np.arange(lv.oldest(), lv.nb) % self.K]
            vals = vals[~np.isnan(vals)]
            v = float(vals[-1]) if len(vals) else float("nan")
        return v


def same_view(a, b, what) -> None:
    assert a.columns == b.columns and a.level == b.level, what
    for f in ("x", "mn", "mx", "last", "mean"):  # bit for bit, NaN where NaN
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"{what}: {f}")


def random_queries(rng, p_cols, n, k):
    """``k`` random (x0, x1, npts, columns): whole run, recent, inside, before the oldest held, empty."""
    out = []
    for i in range(k):
        kind = i % 5
        if kind == 0:
            x0, x1 = 1, n
        elif kind == 1:
            x0, x1 = max(1, n - int(rng.integers(1, n + 1))) + 1, n
        elif kind == 2:
            a, b = sorted(rng.integers(-50, n + 50, 2))
            x0, x1 = float(a), float(b) + rng.random()
        elif kind == 3:
            x0, x1 = -float(rng.integers(0, 100)), float(rng.integers(1, max(2, n // 3)))
        else:
            x0, x1 = float(rng.integers(1, n + 1)), float(rng.integers(-5, n + 1))  # often x1 < x0
        npts = int(rng.choice([1, 2, 7, int(rng.integers(1, 600))]))
        if rng.random() < 0.2:
            cols = None
        else:
            m = int(rng.integers(1, len(p_cols) + 1))
            cols = [p_cols[j] for j in rng.permutation(len(p_cols))[:m]]
            if rng.random() < 0.7:
                cols = ["step", *[c for c in cols if c != "step"]]
        out.append((x0, x1, npts, cols))
    return out


@pytest.mark.parametrize("K,levels,min_rows,n,ncols,seed", [
    (16, 8, 2, 10_000, 7, 0),  # every ring wraps, the top one too (16 × 2**7 rows)
    (8, 5, 1, 5_000, 4, 1),
    (16, 10, 4, 2_000, 12, 2),  # upper levels still growing
    (1024, 22, 16, 70_000, 9, 3),  # the real sizes: levels 0–6 wrapped, the rest growing
])
def test_lazy_store_answers_bit_for_bit_as_the_preallocated_one(monkeypatch, K, levels, min_rows, n, ncols,
                                                                 seed):
    monkeypatch.setattr(pyramid, "CAPACITY", K)
    monkeypatch.setattr(pyramid, "LEVELS", levels)
    monkeypatch.setattr(pyramid, "MIN_ROWS", min_rows)
    rng = np.random.default_rng(seed)
    cols = ["step", *[f"c{j}" for j in range(ncols - 1)]]
    steps = np.cumsum(rng.integers(1, 4, n)).astype(np.float64)  # uneven steps
    scale = 10.0 ** rng.integers(-3, 4, ncols - 1)
    data = np.column_stack([steps, rng.standard_normal((n, ncols - 1)) * scale])
    data[rng.random((n, ncols)) < 0.05] = np.nan
    data[:, 0] = steps
    data[: n // 3, 2] = np.nan  # a column with no value for a long stretch
    new, old = Pyramid(cols), OldPyramid(cols, K, levels)
    assert new.nbytes() == 0
    i = 0
    while i < n:
        m = int(rng.choice([1, 2, 3, int(rng.integers(1, 50)), int(rng.integers(1, 3 * K + 2))]))
        new.append(data[i:i + m])
        old.append(data[i:i + m])
        i += m
        last = data[min(i, n) - 1, 0]
        if rng.random() < 0.15 or i >= n:
            for q in random_queries(rng, cols, int(last), 12):
                same_view(new.query(*q), old.query(*q), f"after {min(i, n)} rows: query{q}")
            for c in cols:
                a, b = new.latest_finite(c), old.latest_finite(c)
                assert a == b or (a != a and b != b)
    # lazily: a level holds arrays only once a bucket reached it, and never more than its ring
    for lv in new.levels:
        assert (lv.rows > 0) == (lv.nb > 0) and lv.rows <= K
        assert lv.rows >= min(lv.nb, K)


def held_bytes(p: Pyramid) -> int:
    """What the buckets held take, tightly: raw rows 8 B a value, buckets 36 B
    (min, max, last, sum: float64; count: float32)."""
    per = lambda lv: 8 if lv.raw else 4 * 8 + 4  # noqa: E731
    return sum(min(lv.nb, pyramid.CAPACITY) * len(p.columns) * per(lv) for lv in p.levels)


def test_memory_follows_the_data_and_stays_under_the_old_worst_case():
    ncols = 12
    p = Pyramid(["step", *[f"c{j}" for j in range(ncols - 1)]])
    assert p.nbytes() == 0
    worst = (pyramid.CAPACITY * ncols * 8) * (1 + 4.5 * (pyramid.LEVELS - 1))  # every ring full
    old = (pyramid.CAPACITY * ncols * 8) * (1 + 5 * (pyramid.LEVELS - 1))  # what was preallocated
    sizes = []
    n = 0
    for target in (1_000, 10_000, 100_000, 1_000_000):
        while n < target:
            m = min(4096, target - n)
            p.append(np.column_stack([np.arange(n + 1, n + m + 1.0), np.ones((m, ncols - 1))]))
            n += m
        sizes.append(p.nbytes())
        # arrays double as they fill: never more than twice what the held buckets need
        assert held_bytes(p) <= p.nbytes() <= 2 * held_bytes(p) + 16 * ncols * 8 * pyramid.LEVELS
        assert sum(lv.rows > 0 for lv in p.levels) == int(np.log2(n)) + 1  # levels 0 … ⌊log2 n⌋
    assert sizes == sorted(sizes) and sizes[-1] <= worst < old
    # after 1M updates: a bit over half of the old preallocation (which was the same at any length);
    # scaled to a 100-class run (209 columns), under a bound the old preallocation exceeded
    assert sizes[-1] < 0.55 * old
    assert sizes[-1] / ncols * 209 < 100 * 2**20 < old / ncols * 209
    assert sizes[0] < 0.06 * old  # a short run holds little


# -- the Γ summary of many-class runs ------------------------------------------------------------
def test_gamma_summary_finds_the_emphasised_class_under_the_paper_schedule():
    C = 100
    for amplitude in (70.0, 0.3):  # emphasised above or below the rest
        sch = Schedule.create("triangle", amplitude, 37, C, 10**6, False)
        g, _, _ = sch.table(400)
        cls = np.arange(400) // 38 % C  # the emphasised class: the next one every T + 1 updates
        out = history.gamma_summary(np.arange(1, 401.0), g)
        assert history.SUMMARY_COLUMNS == ["step", "emphasised", "class", "others", "spread"]
        stands_out = np.abs(g.max(1) - g.min(1)) > 1e-12  # phase 0: every class 1
        assert stands_out.sum() > 300 and (~stands_out).sum() >= 10
        np.testing.assert_array_equal(out[stands_out, 2], cls[stands_out])
        assert np.isnan(out[~stands_out, 2]).all()
        r, c = np.arange(400), cls
        np.testing.assert_allclose(out[:, 1], g[r, c])
        rest = g.copy()
        rest[r, c] = np.nan
        np.testing.assert_allclose(out[:, 3], np.nanmean(rest, 1))
        np.testing.assert_allclose(out[:, 4], 0.0, atol=1e-12)
    g[:, 5] += 0.01 * np.arange(400) % 3  # class 5's weight moves on its own: the others differ
    out = history.gamma_summary(np.arange(1, 401.0), g)
    assert (out[:, 4] > 0).sum() > 200


def test_run_history_keeps_the_gamma_summary_only_for_many_classes():
    def cols(C):
        return ["step", "loss_dynamical", *[f"gamma_{i}" for i in range(C)]]

    for C, kept in ((10, False), (11, True)):
        h = RunHistory()
        h.setup(cols(C), [])
        sch = Schedule.create("triangle", 20.0, 50, C, 10**6, False)
        gam, _, _ = sch.table(1000)
        data = np.column_stack([np.arange(1, 1001.0), np.ones(1000), gam])
        assert h.add_metrics(0, data[:600]) and h.add_metrics(500, data[500:])  # an overlap
        assert h.metric_columns == [*cols(C), DROP] and history.GAMMA_SUMMARY not in h.series
        assert h.count(history.GAMMA_SUMMARY) == (1000 if kept else 0)
        if kept:
            v = h.query(history.GAMMA_SUMMARY, 1, 1000, 1000)
            np.testing.assert_array_equal(v.x, np.arange(1, 1001.0))
            np.testing.assert_array_equal(v.mean, history.gamma_summary(data[:, 0], data[:, 2:]))
            assert h.last_value(history.GAMMA_SUMMARY, "class") == (999 // 51) % C
            h.setup(cols(C)[:-1], [])  # new columns: the summary restarts with them
            assert h.count(history.GAMMA_SUMMARY) == 0
