"""The UI's decimated history store and schedule clock (no Textual, no engine)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlf_tui.engine.schedule import Schedule  # pure numpy: no torch
from dlf_tui.ui import history
from dlf_tui.ui.history import DROP, Pyramid, RunHistory, ema
from dlf_tui.ui.timeline import Timeline


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


def test_memory_is_flat():
    p = Pyramid(["step", "a", "b"])
    p.append(rows(0, 10))
    before = p.nbytes()
    for s in range(10, 300_000, 5000):
        p.append(rows(s, 5000))
    assert p.nbytes() == before
    assert before < 3 * 2**20  # 3 columns: a few MB, whatever the run length
    assert history.LEVELS >= 20


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
