"""Snapshots of the picker and the dashboard on FIXED fake metrics.

Update with ``pytest tests/test_ui_snapshots.py --snapshot-update`` after a
deliberate visual change (and look at the SVGs in tests/snapshots/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pts = pytest.importorskip("pytest_textual_snapshot")  # (the floor check of .ci/run runs without it)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import fake_run, isolated, tiny_config  # noqa: E402,F401
from test_ui_sweep import fake_sweep, shown  # noqa: E402

from dlf_tui.core import config, presets  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402


class _InTestsSnapshots(pts.SVGImageExtension):
    """Keep the SVGs in tests/snapshots/<test file>/ (not __snapshots__)."""

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)


@pytest.fixture(autouse=True)
def _snapshot_dir(monkeypatch):
    monkeypatch.setattr(pts, "SVGImageExtension", _InTestsSnapshots)


@pytest.fixture
def finished_app(isolated):
    run = fake_run(isolated / "runs")
    return DlfApp(runs_dir=isolated / "runs", attach=run)


async def _loaded(pilot) -> None:
    app = pilot.app
    for _ in range(400):
        dash = app.dashboard
        if (dash is not None and dash.history_loaded and dash.redraws > 0
                and all(c.has_data for c in dash.charts if c.id != "sharpness" and c.display)):
            break
        await pilot.pause(0.02)
    dash.redraw(force=True)
    await pilot.pause(0.1)


def test_dashboard_80x24(finished_app, snap_compare):
    assert snap_compare(finished_app, terminal_size=(80, 24), run_before=_loaded)


def test_dashboard_160x48(finished_app, snap_compare):
    assert snap_compare(finished_app, terminal_size=(160, 48), run_before=_loaded)


def test_dashboard_period_window_linear_ema_80x24(finished_app, snap_compare):
    async def run_before(pilot):
        await _loaded(pilot)
        await pilot.press("w", "l", "e")
        await pilot.pause(0.1)

    assert snap_compare(finished_app, terminal_size=(80, 24), run_before=run_before)


@pytest.fixture
def picker_app(isolated, monkeypatch):
    empty = isolated / "no-shipped"
    empty.mkdir()
    monkeypatch.setattr(presets, "shipped_dir", lambda: empty)
    pdir = isolated / "presets"
    pdir.mkdir()
    for name, amp in (("tiny", 70), ("tiny-static", 1)):
        cfg = config.replace(tiny_config(f"schedule.amplitude={amp}", name=name),
                             description=f"{name}: a 16-unit MLP on a 30-point spiral")
        (pdir / f"{name}.toml").write_text(config.to_toml(cfg), encoding="utf-8")
    return DlfApp(runs_dir=isolated / "runs", presets_dir=pdir)


def test_picker_80x24(picker_app, snap_compare):
    assert snap_compare(picker_app, terminal_size=(80, 24))


def test_picker_bad_value_120x40(picker_app, snap_compare):
    async def run_before(pilot):
        pilot.app.screen.query_one("#f-period").focus()
        await pilot.press(*"0", "enter")
        await pilot.pause(0.1)

    assert snap_compare(picker_app, terminal_size=(120, 40), run_before=run_before)


def test_sweep_view_120x40(isolated, snap_compare):
    sw = fake_sweep(isolated / "runs")
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)

    async def run_before(pilot):
        await shown(pilot)
        await pilot.press("down", "right")
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
