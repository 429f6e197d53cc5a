"""The accuracy chart with many classes (worst / best / by index, paged) and
the plotext fast paths that make chart builds cheaper (they must not change
a single cell)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
from rich.text import Text
from textual.geometry import Region

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_ui_widgets as W  # noqa: E402  (its ``loaded`` helper; a module, so its tests are not re-collected)
from test_ui_support import fake_run, isolated, sync  # noqa: E402,F401

from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.history import RunHistory  # noqa: E402
from dlf_tui.ui.widgets.charts import base as chart_mod  # noqa: E402
from dlf_tui.ui.widgets.charts import plotext_adapter as adapter  # noqa: E402
from dlf_tui.ui.widgets.charts.accuracy import RANK_SPAN, latest, order  # noqa: E402
from dlf_tui.ui.widgets.charts.base import CLASS_MARKERS  # noqa: E402
from dlf_tui.ui.widgets.controls import Controls  # noqa: E402


def shuffled_run(runs_dir: Path, classes: int = 100, seed: int = 0) -> tuple[runs.Run, np.ndarray, np.ndarray]:
    """``fake_run`` with the per-class curves shuffled: class i's training curve is
    fake class ``train[i]``'s and its held-out curve fake class ``val[i]``'s (two
    different permutations, so ranking by val and by train differ)."""
    run = fake_run(runs_dir, classes=classes)
    rng = np.random.default_rng(seed)
    perms = rng.permutation(classes), rng.permutation(classes)
    for name, prefix, perm in (("metrics", "accuracy_class_", perms[0]), ("eval", "val_accuracy_class_", perms[1])):
        cols = run.columns(name)
        rows = run.read(name)
        idx = np.array([cols.index(f"{prefix}{i}") for i in range(classes)])
        rows[:, idx] = rows[:, idx[perm]]
        w = runs.SeriesWriter(run.path, name, cols)
        w.truncate(0)
        w.append(rows)
        w.close()
    return run, perms[0], perms[1]


def expected_order(run: runs.Run, series: str, prefix: str, worst: bool) -> list[int]:
    """Classes ordered by the newest row of ``series`` straight from the run's file."""
    cols = run.columns(series)
    last = run.read(series)[-1]
    classes = sorted(int(c[len(prefix):]) for c in cols if c.startswith(prefix))
    vals = np.array([last[cols.index(f"{prefix}{c}")] for c in classes])
    ranked = np.argsort(vals if worst else -vals, kind="stable")
    return [classes[i] for i in ranked]


def plain(markup: str) -> str:
    return Text.from_markup(str(markup)).plain


async def loaded(pilot):
    """The dashboard once its charts drew everything the run has, evaluations included
    (they may load after the first redraw on a busy machine)."""
    dash = await W.loaded(pilot)
    for _ in range(500):
        if dash.session.history.eval_rows >= pilot.app.session.run.rows("eval"):
            break
        await pilot.pause(0.02)
    dash.redraw(force=True)
    await pilot.pause()
    return dash


def frame_text(widget) -> list[str]:
    """The widget as drawn on screen, border and titles included."""
    w, h = widget.outer_size
    return [s.text for s in widget.render_lines(Region(0, 0, w, h))]


# -- many classes -----------------------------------------------------------------------------
@sync
async def test_100_classes_keys_cycle_worst_best_index_and_page(isolated):
    run, _, _ = shuffled_run(isolated / "runs")
    worst = expected_order(run, "eval", "val_accuracy_class_", worst=True)
    best = expected_order(run, "eval", "val_accuracy_class_", worst=False)
    app = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await loaded(pilot)
        acc = dash.query_one("#accuracy")
        k = acc.k
        assert acc.subset and 3 <= k <= 10 and acc.class_view == "worst" and acc.ranked_by == "val"

        def check(classes: list[int], label: str) -> None:
            assert acc.shown == classes
            title = plain(acc.border_title)
            assert title.startswith("accuracy") and [int(t[1:]) for t in title.split()[1:]] == classes
            assert plain(acc.border_subtitle).startswith(label)
            assert title in "".join(frame_text(acc)) and label in frame_text(acc)[-1]  # drawn whole

        check(worst[:k], f"worst {k} of 100 by val")
        await pilot.press("right_square_bracket")
        check(worst[k:2 * k], f"worst {k + 1}–{2 * k} of 100 by val")
        await pilot.press("left_square_bracket")
        check(worst[:k], f"worst {k} of 100 by val")
        await pilot.press("left_square_bracket")  # wraps to the last page
        last = (100 - 1) // k * k
        check(worst[last:], f"worst {last + 1}–100 of 100 by val")
        await pilot.press("k")
        check(best[:k], f"best {k} of 100 by val")
        assert "best" in str(dash.query_one("#control-msg").render())
        await pilot.press("k")
        check(list(range(k)), f"classes 0–{k - 1} of 100")
        assert acc.ranked_by == ""
        await pilot.press("right_square_bracket", "right_square_bracket")
        check(list(range(2 * k, 3 * k)), f"classes {2 * k}–{3 * k - 1} of 100")
        # the palette entries run the same actions as the keys
        cmds = {c.title: c for c in app.get_system_commands(dash)}
        await cmds["Previous accuracy classes"].callback()
        await pilot.pause()
        check(list(range(k, 2 * k)), f"classes {k}–{2 * k - 1} of 100")
        await cmds["Cycle accuracy classes"].callback()
        await pilot.pause()
        check(worst[:k], f"worst {k} of 100 by val")
        # each class drawn has its own colour
        colors = {dash.style.cls(s)[1] for s in range(len(acc.shown))}
        assert len(colors) == len(acc.shown)


@sync
async def test_100_classes_at_80x24_without_colour(isolated, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    run, _, _ = shuffled_run(isolated / "runs", seed=3)
    worst = expected_order(run, "eval", "val_accuracy_class_", worst=True)
    app = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = await loaded(pilot)
        acc = dash.query_one("#accuracy")
        assert dash.has_class("-compact") and acc.has_class("-subset")
        k = acc.k
        assert k >= 3 and acc.shown == worst[:k]
        frame = frame_text(acc)
        # the title names every class drawn: its marker, the digit of its held-out points, its index
        entries = [f"{CLASS_MARKERS[s]}{s}={c}" for s, c in enumerate(acc.shown)]
        assert frame[0].startswith("─accuracy  " + " ".join(entries))
        assert f"worst {k} of 100 by val" in frame[-1]  # the subtitle is on screen
        assert len({e[0] for e in entries}) == k  # k distinct markers ...
        body = "\n".join(frame[1:-1])
        assert set(CLASS_MARKERS[:k]) & set(body)  # ... drawn (curves may hide one another)
        assert acc.size.height >= 5
        await pilot.press("k", "k", "right_square_bracket")
        assert acc.shown == list(range(k, 2 * k)) and f"classes {k}–{2 * k - 1} of 100" in frame_text(acc)[-1]


def test_ranking_by_training_accuracy_without_evaluations():
    """No held-out set: rank by the training accuracy over about the last RANK_SPAN
    updates (a single noisy step does not decide); NaN (never seen) goes last."""
    C, n = 12, 4000
    rng = np.random.default_rng(1)
    level = rng.permutation(C) / C  # class i's accuracy level
    cols = ["step", "loss_dynamical", "accuracy", *[f"accuracy_class_{i}" for i in range(C)]]
    st = np.arange(1, n + 1, dtype=np.float64)
    acc = np.clip(level[None, :] + 0.05 * rng.standard_normal((n, C)), 0, 1)
    acc[-1] = 1 - level  # the newest step alone would reverse the order
    acc[:, 5] = np.nan
    h = RunHistory()
    h.setup(cols, [])
    h.add_metrics(0, np.column_stack([st, np.ones(n), np.nanmean(acc, 1), acc]))
    train_cols = {i: f"accuracy_class_{i}" for i in range(C)}
    values, source = latest(h, list(range(C)), train_cols)
    assert source == "train"
    seen = [i for i in range(C) if i != 5]
    assert np.isnan(values[5]) and np.allclose(values[seen], acc[-RANK_SPAN:, seen].mean(0), atol=0.02)
    known = [i for i in np.argsort(level, kind="stable") if i != 5]
    assert order(list(range(C)), values, "worst") == [*known, 5]
    assert order(list(range(C)), values, "best") == [*known[::-1], 5]
    assert order(list(range(C)), values, "index") == list(range(C))


# -- few classes: as before ----------------------------------------------------------------------
@sync
async def test_10_classes_are_all_drawn_as_before(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs", classes=10))
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await loaded(pilot)
        acc = dash.query_one("#accuracy")
        assert not acc.subset and not acc.has_class("-subset") and acc.shown == list(range(10))
        legend = "  ".join(["━ all", *(f"━ {i}" for i in range(10)), "• val"])
        assert plain(acc.border_title) == f"accuracy  {legend}" and not acc.border_subtitle
        before = W.chart_text(acc)
        await pilot.press("k", "right_square_bracket")
        assert acc.shown == list(range(10)) and W.chart_text(acc) == before
        assert "every class is drawn (10)" in str(dash.query_one(Controls).query_one("#control-msg").render())


# -- plotext fast paths ---------------------------------------------------------------------------
def test_fast_plotext_helpers_return_what_plotext_returns():
    orig = adapter.PLOTEXT_ORIGINALS
    rnd = random.Random(0)
    for trial in range(150):
        n = rnd.randint(1, 200)
        fx, fy = rnd.choice([(2, 4), (2, 3), (2, 2), (1, 1)])
        x = [rnd.randint(0, 170) for _ in range(n)]
        y = [rnd.randint(0, 60) for _ in range(n)]
        args = (x, y, [fx] * n, [fy] * n)
        assert adapter.fast_hd_group(*args) == orig["hd_group"](*args), trial
    rng = np.random.default_rng(0)
    for trial in range(150):
        n = int(rng.integers(8, 200))
        lo = float(rng.normal() * 10.0 ** rng.integers(-3, 6))
        hi = lo + float(rng.random() * 10.0 ** rng.integers(-3, 6)) + 1e-9
        data = [rng.uniform(lo - (hi - lo), hi + (hi - lo), n), np.linspace(lo, hi, n),
                np.round(rng.uniform(lo, hi, n), 2)][trial % 3].tolist()
        bins = int(rng.integers(2, 500))
        assert adapter.fast_matrix_data(data, [lo, hi], bins) == orig["get_matrix_data"](data, [lo, hi], bins)
    steps = list(range(1, 5001, 7))  # ints, and values landing exactly on cell edges
    for bins in (2, 3, 7, 64, 99, 100, 141, 157, 160, 199):
        assert adapter.fast_matrix_data(steps, [1, 5000], bins) == orig["get_matrix_data"](steps, [1, 5000], bins)
    for n in (1, 2, 3, 70, 71):  # the band test's median, as numpy's
        v = rng.standard_normal(n)
        v[rng.random(n) < 0.2] = np.nan
        if not np.isnan(v).all():
            assert chart_mod.nan_median(v) == np.nanmedian(v)
    # what plotext cannot handle it still cannot handle, the same way
    nan = [0.1] * 9 + [float("nan")]
    fast, own = adapter.fast_matrix_data(nan, [0, 1], 10), orig["get_matrix_data"](nan, [0, 1], 10)
    assert fast[:-1] == own[:-1] and np.isnan(fast[-1]) and np.isnan(own[-1])


@sync
async def test_charts_render_the_same_cells_with_and_without_the_fast_paths(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs", diag=True))
    async with app.run_test(size=(160, 48)) as pilot:
        dash = await loaded(pilot)
        ctx = dash.context()

        def cells() -> list:
            out = []
            for c in dash.charts:
                c._cache = None
                c.draw(ctx)
                out.append([[(seg.text, seg.style) for seg in strip] for strip in c.rendered_strips()])
            return out

        try:
            adapter.use_fast_plotext(False)
            slow = cells()
        finally:
            adapter.use_fast_plotext(True)
        fast = cells()
        assert sum(len(c) for c in fast) > 50 and fast == slow
