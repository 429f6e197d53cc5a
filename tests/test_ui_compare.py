"""The compare view (runs overlaid) and the dashboard's compare picker, on fake
runs and fake sweeps (no engine); following runs whose files grow; attaching
to a socket-less sweep member."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from rich.text import Text
from textual.command import CommandPalette

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import fake_run, isolated, sync  # noqa: E402,F401
from test_ui_sweep import (append_member_rows, fake_sweep, final_acc,  # noqa: E402,F401
                           stand_in_engine, write_state)

from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.screens.compare import ComparePicker, CompareScreen, run_labels  # noqa: E402
from dlf_tui.ui.widgets.charts.compare import MAX_RUNS, CompareChart, run_style  # noqa: E402
from dlf_tui.ui.widgets.charts.base import Style  # noqa: E402


async def compare_loaded(pilot, n_drawn: int | None = None) -> CompareScreen:
    for _ in range(500):
        scr = pilot.app.screen
        if isinstance(scr, CompareScreen) and scr.loaded and scr.redraws:
            charts = scr.charts
            if n_drawn is None or all(c.border_title.startswith(f"{c.TITLE}  {n_drawn} runs")
                                      for c in charts):
                return scr
        await pilot.pause(0.02)
    raise AssertionError("the compare view did not load")


def legend_text(scr: CompareScreen) -> str:
    return Text.from_markup(str(scr.query_one("#compare-legend").render())).plain


@sync
async def test_run_app_compare_overlays_every_run_with_its_legend(isolated):
    rs = [fake_run(isolated / "runs", run_id=f"20250101-00000{i}-fake", steps=3000 + 500 * i)
          for i in range(3)]
    app = DlfApp(runs_dir=isolated / "runs", compare=rs)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = await compare_loaded(pilot, 3)
        assert [s.run.path for s in scr.sessions] == [r.path for r in rs]
        # fake runs evaluate on a held-out set: CE, train acc, held-out acc, Γ₀
        titles = [c.TITLE for c in scr.charts]
        assert titles == ["CE loss", "train accuracy", "held-out accuracy", "Γ₀(t)"]
        for c in scr.charts:
            assert c.has_data and c.points > 0
        legend = legend_text(scr)
        assert [r.id for r in rs] == scr.labels
        for r in rs:
            assert r.id in legend
        assert legend.count("━") == 3  # colour: one braille line per run
        # the x axis reaches the longest run; each history holds its run's rows
        assert [s.history.rows for s in scr.sessions] == [3000, 3500, 4000]
        assert scr.context().x1 == 4000
        await pilot.press("l")
        assert not scr.log_y and "log-y" not in scr.query_one("#cmp-loss").border_title
        await pilot.press("ctrl+p")  # Textual's palette opens on this screen
        assert isinstance(app.screen, CommandPalette)
        await pilot.press("escape")
        assert app.screen is scr
        await pilot.press("escape")  # nothing underneath: leaves
        await pilot.pause()
    assert app.return_code == 0


@sync
async def test_no_color_runs_differ_by_marker(isolated, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    sw = fake_sweep(isolated / "runs", seeds=4, val=False)
    members = sw.members_of((70.0, 500)) + sw.members_of((1.0, 100))
    app = DlfApp(runs_dir=isolated / "runs", compare=[m.run for m in members])
    async with app.run_test(size=(80, 24)) as pilot:
        scr = await compare_loaded(pilot, 8)
        assert scr.has_class("-compact")
        marks = [run_style(scr.style, i)[0] for i in range(8)]
        assert len(set(marks)) == 8 and "braille" not in marks
        legend = legend_text(scr)
        # labels: the axes that differ, and the seed
        assert scr.labels[0] == "amplitude=70 period=500 s0" and scr.labels[4] == "amplitude=1 period=100 s0"
        for mark, label in zip(marks, scr.labels):
            assert f"{mark} {label}" in legend
        # no held-out set in this sweep: the third panel shows the dynamical loss
        assert scr.query_one("#cmp-val", CompareChart).column == "loss_dynamical"
        acc = scr.query_one("#cmp-acc", CompareChart)
        text = "\n".join(s.text for s in acc.rendered_strips())
        # the markers are drawn, not just listed (curves that overlap hide a few at 80×24)
        assert sum(m in text for m in marks) >= 5


def test_run_styles_are_distinct_for_the_most_runs():
    for style in (Style(), Style(no_color=True), Style(ascii=True)):
        pairs = {run_style(style, i) for i in range(MAX_RUNS)}
        assert len(pairs) == MAX_RUNS == 32


def test_labels_of_members_of_one_sweep_and_of_plain_runs(isolated):
    sw = fake_sweep(isolated / "runs", seeds=2)
    cell = sw.members_of((10.0, 100))
    assert run_labels([m.run for m in cell]) == ["s0", "s1"]
    other = fake_run(isolated / "runs", run_id="20250102-000000-plain")
    mixed = run_labels([cell[0].run, sw.members_of((70.0, 100))[1].run, other])
    assert mixed[0].endswith("/amplitude=10 s0") and mixed[1].endswith("/amplitude=70 s1")
    assert mixed[2] == other.id


@sync
async def test_live_runs_are_followed_as_their_files_grow(isolated, stand_in_engine):
    proc = stand_in_engine()
    sw = fake_sweep(isolated / "runs", seeds=2, rows=200, steps=400, state="running", pid=proc.pid)
    cell = sw.members_of((10.0, 500))
    for m in cell:
        write_state(m.run, "running", 200, 400, sw.id, pid=proc.pid)
    app = DlfApp(runs_dir=isolated / "runs", compare=[m.run for m in cell])
    async with app.run_test(size=(120, 40)) as pilot:
        scr = await compare_loaded(pilot, 2)
        assert [s.history.rows for s in scr.sessions] == [200, 200]
        assert "2 live" in str(scr.query_one("#compare-status").render())
        drawn = scr.redraws
        append_member_rows(cell[0].run, 200, 400, 0.97, 0.95, 10.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and scr.sessions[0].history.rows < 400:
            await pilot.pause(0.05)
        assert [s.history.rows for s in scr.sessions] == [400, 200]
        assert scr.sessions[0].history.last()["accuracy"] == pytest.approx(0.97)
        while time.monotonic() < deadline and scr.redraws == drawn:
            await pilot.pause(0.05)
        assert scr.redraws > drawn and scr.context().x1 == 400


@sync
async def test_dashboard_compare_picker_adds_runs(isolated):
    current = fake_run(isolated / "runs", run_id="20250101-000000-a")
    fake_run(isolated / "runs", run_id="20250101-000001-b", steps=4000)
    other = fake_run(isolated / "runs", run_id="20250101-000002-c", steps=5000)
    app = DlfApp(runs_dir=isolated / "runs", attach=current)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(300):
            if app.dashboard is not None and app.dashboard.history_loaded:
                break
            await pilot.pause(0.02)
        await pilot.press("o")
        picker = app.screen
        assert isinstance(picker, ComparePicker)
        assert [r.id for r in picker.options] == ["20250101-000002-c", "20250101-000001-b"]
        await pilot.press("enter")  # nothing chosen yet: stays
        assert app.screen is picker
        await pilot.press("space")  # newest first: c
        await pilot.press("enter")
        scr = await compare_loaded(pilot, 2)
        assert [s.run.path for s in scr.sessions] == [current.path, other.path]
        assert scr.labels == [current.id, other.id]
        await pilot.press("escape")
        assert app.screen is app.dashboard
        # the palette entry opens the picker too; escape cancels it
        cmd = next(c for c in app.get_system_commands(app.dashboard)
                   if c.title.startswith("Compare with"))
        await cmd.callback()
        await pilot.pause()
        assert isinstance(app.screen, ComparePicker)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.dashboard


@sync
async def test_a_live_sweep_member_opens_read_only_and_is_followed_from_disk(isolated, stand_in_engine):
    proc = stand_in_engine()
    sw = fake_sweep(isolated / "runs", seeds=2, rows=200, steps=400, state="running", pid=proc.pid)
    member = sw.members_of((70.0, 100))[0]
    write_state(member.run, "running", 200, 400, sw.id, pid=proc.pid)
    assert member.run.is_live() and not member.run.file(runs.SOCKET).exists()
    app = DlfApp(runs_dir=isolated / "runs", attach=member.run)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(300):
            d = app.dashboard
            if d is not None and d.history_loaded and d.session.history.rows == 200:
                break
            await pilot.pause(0.02)
        dash = app.dashboard
        s = dash.session
        assert s.history.rows == 200 and not s.live and s.state == "running"
        assert not dash.live  # read-only: nothing to steer
        await pilot.press("o")  # the picker offers the other members of its sweep first
        picker = app.screen
        assert isinstance(picker, ComparePicker)
        assert [r.id for r in picker.options[:len(sw.members) - 1]] == [
            m.id for m in sw.members if m.id != member.id]
        await pilot.press("escape")
        append_member_rows(member.run, 200, 400, 0.93, 0.9, 70.0)
        write_state(member.run, "finished", 400, 400, sw.id, pid=proc.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and s.state != "finished":
            await pilot.pause(0.05)
        assert s.history.rows == 400 and s.state == "finished"
        assert s.history.last()["accuracy"] == pytest.approx(0.93)
        await pilot.press("q")  # not live: leaves at once
        await pilot.pause()
    assert app.return_code == 0
    assert final_acc(member.cell, member.seed) != 0.93


def test_compare_sessions_read_only_the_charted_columns(isolated):
    import numpy as np

    from dlf_tui.ui.screens.compare import KEEP
    from dlf_tui.ui.session.base import RunSession
    from dlf_tui.ui.session.disk import DiskSource

    run = fake_run(isolated / "runs", steps=3000)
    full, slim = RunSession(run), RunSession(run, keep=KEEP)
    for s in (full, slim):
        disk = DiskSource(s)
        disk.load()
        assert disk.poll() and not disk.poll()  # rows the first time, none the second
    assert slim.history.metric_columns == ["step", "loss_dynamical", "loss_ce", "accuracy", "gamma_0",
                                           "loss_drop"]
    assert slim.history.eval_columns == ["step", "val_accuracy"] and slim.history.rows == 3000
    for series, col in (("metrics", "accuracy"), ("metrics", "gamma_0"), ("metrics", "loss_drop"),
                        ("eval", "val_accuracy")):
        a = slim.history.query(series, 2001, 3000, 1000, ["step", col])
        b = full.history.query(series, 2001, 3000, 1000, ["step", col])
        np.testing.assert_array_equal(a.mean, b.mean)
    assert slim.history.nbytes() < full.history.nbytes() / 2
