"""The Γ chart with many classes: the emphasised class and "others" (or, when
the others' Γ differ, the accuracy chart's classes) instead of 100 lines."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_ui_accuracy as A  # noqa: E402  (its helpers; a module, so its tests are not re-collected)
from test_ui_support import fake_run, isolated, sync  # noqa: E402,F401

from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.history import GAMMA_SUMMARY, SUMMARY_CLASSES  # noqa: E402
from dlf_tui.ui.widgets.charts.accuracy import ALL_CLASSES  # noqa: E402
from dlf_tui.ui.widgets.charts.plotext_adapter import drawn_series  # noqa: E402


def signals(chart) -> tuple[int, list[float]]:
    """How many series plotext was handed in the last draw, and all their y values."""
    n, y, _ = drawn_series(chart)
    return n, [float(v) for ys in y for v in ys]


def signal_colors(chart) -> list[str]:
    """Each series' colour, in drawing order, once (a min/max band is two series)."""
    out: list[str] = []
    for c in drawn_series(chart)[2]:
        if c and c[0] not in out:
            out.append(c[0])
    return out


def gammas(run: runs.Run) -> np.ndarray:
    cols = run.columns("metrics")
    return run.read("metrics")[:, [i for i, c in enumerate(cols) if c.startswith("gamma_")]]


@sync
async def test_100_classes_draw_the_emphasised_class_and_the_others(isolated, monkeypatch):
    assert SUMMARY_CLASSES == ALL_CLASSES  # the history keeps the summary exactly when the chart needs it
    run = fake_run(isolated / "runs", classes=100)  # period 500: class 11 is emphasised at update 6000
    g = gammas(run)
    app = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await A.loaded(pilot)
        chart = dash.query_one("#gamma")
        assert dash.session.history.count(GAMMA_SUMMARY) == 6000
        assert chart.mode == "others" and chart.emphasised == 11
        assert chart.lines == ["emphasised: 11", "others"]
        title, subtitle = A.plain(chart.border_title), A.plain(chart.border_subtitle)
        assert title == "Γᵢ(t)  ━ emphasised: 11  ━ others"
        assert subtitle == "100 classes: the other 99 share one Γ"
        frame = A.frame_text(chart)
        assert title in frame[0] and subtitle in frame[-1]  # both on screen, whole
        n, ys = signals(chart)
        assert 2 <= n <= 4  # two lines (a line or a min/max band each), not 100
        assert chart.points <= 4 * chart.npts()
        # the whole run's range of Γ is drawn: the emphasised peaks and the others' dips
        assert np.isclose(max(ys), g.max())
        assert np.isclose(min(ys), g.min())
        # each line in its own colour (the first two of Style.main)
        assert signal_colors(chart) == [dash.style.main(0)[1], dash.style.main(1)[1]]

    # without colour the two lines differ by marker
    monkeypatch.setenv("NO_COLOR", "1")
    app = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await A.loaded(pilot)
        chart = dash.query_one("#gamma")
        assert A.plain(chart.border_title) == "Γᵢ(t)  ━ emphasised: 11  • others"
        assert "•" in "\n".join(A.frame_text(chart)[1:-1])


def uneven_run(runs_dir: Path) -> runs.Run:
    """``fake_run`` with 100 classes whose non-emphasised Γ differ (not the paper's schedule)."""
    run = fake_run(runs_dir, classes=100)
    cols, rows = run.columns("metrics"), run.read("metrics")
    idx = np.array([cols.index(f"gamma_{i}") for i in range(100)])
    rows[:, idx] *= 1.0 + 0.01 * np.arange(100) / 100  # a small class-dependent tilt
    w = runs.SeriesWriter(run.path, "metrics", cols)
    w.truncate(0)
    w.append(rows)
    w.close()
    return run


@sync
async def test_when_the_others_differ_the_chart_draws_the_accuracy_charts_classes(isolated):
    run = uneven_run(isolated / "runs")
    app = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await A.loaded(pilot)
        chart, acc = dash.query_one("#gamma"), dash.query_one("#accuracy")
        shown = list(acc.shown)
        assert acc.subset and 3 <= len(shown) <= 10
        assert chart.mode == "accuracy" and chart.emphasised == 11
        assert chart.lines == ["emphasised: 11", *map(str, shown)]
        assert A.plain(chart.border_subtitle) == "the others' Γ differ: the accuracy chart's classes"
        title = A.plain(chart.border_title)
        assert title.startswith("Γᵢ(t)  ━ emphasised: 11  ")
        assert title.split()[4:] == [f"━{c}" for c in shown]
        n, _ = signals(chart)
        assert len(shown) + 1 <= n <= 2 * (len(shown) + 1)
        # the emphasised line, then the classes in the accuracy chart's colours, in its order
        colors = [dash.style.main(0)[1], *(dash.style.cls(s)[1] for s in range(len(shown)))]
        assert signal_colors(chart) == colors
        # the accuracy chart pages on: the Γ chart follows with the same key press
        await pilot.press("right_square_bracket")
        assert acc.shown != shown
        assert chart.lines == ["emphasised: 11", *map(str, acc.shown)]


@sync
async def test_up_to_10_classes_every_gamma_is_drawn_as_before(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs", classes=10))
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await A.loaded(pilot)
        chart = dash.query_one("#gamma")
        assert dash.session.history.count(GAMMA_SUMMARY) == 0
        assert chart.mode == "all" and chart.lines == [str(i) for i in range(10)]
        assert A.plain(chart.border_title) == "Γᵢ(t)  " + "  ".join(f"━ {i}" for i in range(10))
        assert not chart.border_subtitle
        assert signals(chart)[0] >= 10
