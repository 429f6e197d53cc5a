"""Dashboard pieces on a fixed fake run (no engine): help, command palette,
layouts, NO_COLOR / ASCII markers, view toggles."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from textual.command import CommandPalette

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import fake_run, isolated, sync  # noqa: E402,F401

from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.screens.dashboard import DashboardScreen, nudged  # noqa: E402
from dlf_tui.ui.screens.help import HelpScreen, key_table  # noqa: E402
from dlf_tui.ui.widgets.charts.base import Style  # noqa: E402
from dlf_tui.ui.widgets.status_bar import StatusBar  # noqa: E402


async def loaded(pilot):
    app = pilot.app
    for _ in range(500):
        d = app.dashboard
        if d is not None and d.history_loaded and d.redraws and all(
                c.has_data for c in d.charts if c.display and c.id != "sharpness"):
            return d
        await pilot.pause(0.02)
    raise AssertionError("the fake run did not load")


def chart_text(chart) -> str:
    return "\n".join(s.text for s in chart.rendered_strips())


@sync
async def test_help_and_palette_cover_every_key(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs", state="running"))
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await loaded(pilot)
        dash.live = True  # (a live run: every steering key is offered)
        dash.session.params["pace"] = 0.0  # (as a live engine's params have it)
        dash.refresh_bindings()
        # every key but extend, which only a finished or stopped run offers
        shown = [b for b in DashboardScreen.BINDINGS if b.show and b.action != "extend"]
        assert "x" not in dash.active_bindings
        assert all(b.id and b.tooltip for b in shown)  # every footer key has an id and a palette entry
        cmds = list(app.get_system_commands(dash))
        titles = [c.title for c in cmds]
        for b in shown:
            assert b.tooltip.split(": ")[0] in titles, b
        # ours once, Textual's "Keys" and its "as soon as possible" Quit not at all
        assert titles.count("Keys") == 1 and titles.count("Quit") == 1
        quit_cmd = next(c for c in cmds if c.title == "Quit")
        assert "soon as possible" not in quit_cmd.help and "leave it running" in quit_cmd.help
        assert len(titles) == len(set(titles))  # nothing twice
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=140, record=True, file=io.StringIO())
        console.print(key_table(dash))
        text = console.export_text()
        for b in shown:
            assert b.description in text and b.id in text and (b.key_display or b.key.split(",")[0]) in text
        assert "Quit" in text and "Keys" in text and "ctrl+p" in text
        await pilot.press("escape")
        assert app.screen is dash
        await pilot.press("ctrl+p")  # the real palette opens (it once crashed on our entries)
        for _ in range(250):
            if isinstance(app.screen, CommandPalette):
                break
            await pilot.pause(0.02)
        assert isinstance(app.screen, CommandPalette)
        await pilot.press("escape")
        # the palette entry runs the same action as the key
        before = dash.window
        cmd = next(c for c in app.get_system_commands(dash) if c.title == "Cycle chart window")
        assert cmd.help.startswith("w: ")
        await cmd.callback()
        await pilot.pause()
        assert dash.window != before


@sync
async def test_compact_layout_at_80x24_keeps_every_chart_and_status_field(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        dash = await loaded(pilot)
        assert dash.has_class("-compact")
        for cid in ("loss", "gamma", "accuracy", "drop"):
            chart = dash.query_one(f"#{cid}")
            assert chart.display and chart.size.width >= 30 and chart.size.height >= 6 and chart.has_data
        assert dash.query_one("#events").display and dash.query_one("#controls").display
        status = str(dash.query_one(StatusBar).render())
        for field in ("FINISHED", "6,000/6,000", "/s", "ETA", "period 12", "class", "A 10", "T 500",
                      "lr 1", "20250101-000000-fake", "fake", "cpu", "whole run", "EMA off", "log-y"):
            assert field in status, field
        assert dash.query_one(StatusBar).size.height <= 3
    big = DlfApp(runs_dir=isolated / "runs", attach=app.session.run)
    async with big.run_test(size=(240, 70)) as pilot:
        dash = await loaded(pilot)
        assert not dash.has_class("-compact")
        assert dash.query_one("#sharpness").display
        assert "diagnostics off" in chart_text(dash.query_one("#sharpness"))
        assert all(dash.query_one(f"#{c}").size.width > 100 for c in ("loss", "gamma"))


@sync
async def test_the_event_log_alone_fills_the_screen_in_both_layouts(isolated):
    run = fake_run(isolated / "runs")
    for size in ((80, 24), (120, 40)):
        app = DlfApp(runs_dir=isolated / "runs", attach=run)
        async with app.run_test(size=size) as pilot:
            dash = await loaded(pilot)
            events = dash.query_one("#events")
            events.add(1, "note", "a long event: " + "word " * 40)
            await pilot.pause()
            strip, narrow = events.size.height, events.scrollable_content_region.width
            await pilot.press("v")
            await pilot.pause()
            assert dash.maximized is events
            assert events.size.height > strip and events.size.height >= size[1] // 2, size
            if size == (120, 40):  # a side pane there: the lines wrap again at the full width
                assert max(len(line.text.rstrip()) for line in events.lines) > narrow + 40
            await pilot.press("v")
            await pilot.pause()
            assert dash.maximized is None and events.size.height == strip

@sync
async def test_view_toggles_change_what_is_drawn(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"))
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await loaded(pilot)
        assert dash.window_range() == (1.0, 6000.0)
        await pilot.press("w")  # this period: 5,511 .. 6,011 (T = 500, period 12 started at 5,512)
        x0, x1 = dash.window_range()
        assert x0 == 5512 and x1 == 6012 and "this period" in str(dash.query_one(StatusBar).render())
        await pilot.press("w")
        assert dash.window_range() == (5001.0, 6000.0)
        await pilot.press("w", "w")
        assert dash.window == "whole"
        loss = dash.query_one("#loss")
        log_text = chart_text(loss)
        await pilot.press("l")
        assert not dash.log_y and "linear" in str(loss.border_title)
        assert chart_text(loss) != log_text
        await pilot.press("e")
        assert dash.smoothing == 10 and "EMA 10" in str(dash.query_one(StatusBar).render())
        for _ in range(3):
            await pilot.press("e")
        assert dash.smoothing == 0 and "EMA off" in str(dash.query_one(StatusBar).render())
        # the parameter change of the fake run is a marker line on the charts
        assert "│" in chart_text(dash.query_one("#gamma"))
        await pilot.press("v")
        assert dash.maximized is dash.query_one("#events")
        await pilot.press("v")
        assert dash.maximized is None
        await pilot.press("z")
        assert dash.maximized is dash.query_one("#loss")
        for _ in range(250):
            if dash.query_one("#loss").size.width > 100:
                break
            await pilot.pause(0.02)
        assert dash.query_one("#loss").size.width > 100 and dash.query_one(StatusBar).display
        await pilot.press("z")
        assert dash.maximized is dash.query_one("#gamma")
        await pilot.press("escape")
        assert dash.maximized is None


@pytest.mark.parametrize("no_color,ascii_", [(True, False), (False, True)])
@sync
async def test_classes_differ_by_marker_without_colour_or_braille(isolated, monkeypatch, no_color, ascii_):
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"), ascii_markers=ascii_)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await loaded(pilot)
        gamma = chart_text(dash.query_one("#gamma"))
        for marker in ("x", "o", "+"):
            assert marker in gamma
            assert marker in str(dash.query_one("#gamma").border_title)
        if ascii_:
            everything = "".join(chart_text(c) for c in dash.charts)
            assert not any(0x2800 <= ord(ch) <= 0x28FF for ch in everything)  # no braille


def test_style_markers_and_nudges():
    plain, mono = Style(), Style(no_color=True)
    assert len({plain.cls(i)[1] for i in range(3)}) == 3
    assert len({mono.cls(i)[0] for i in range(10)}) == 10
    assert nudged("amplitude", 70, True) == 87.5 and nudged("amplitude", 1.1, False) == 1.0
    assert nudged("period", 200, True) == 250 and nudged("period", 1, False) == 1
    assert nudged("period", 2, True) == 3 and nudged("lr", 1.0, False) == 0.8


@sync
async def test_sharpness_panel_draws_lambda_max_once_the_run_has_it(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs", diag=True))
    async with app.run_test(size=(160, 48)) as pilot:
        dash = await loaded(pilot)
        sharp = dash.query_one("#sharpness")
        for _ in range(500):  # the diag series loads after the others; slow on a loaded CI machine
            if sharp.has_data and sharp.points > 10:
                break
            await pilot.pause(0.02)
        assert sharp.has_data and sharp.points > 10
        title = str(sharp.border_title)
        assert "Hessian" in title and "NTK" in title and "2/η" in title  # GD: the line is 2/η
        assert "diagnostics off" not in chart_text(sharp)
        assert "λmax 1.9 < 2/η 2" in str(dash.query_one(StatusBar).render())
    small = DlfApp(runs_dir=isolated / "runs", attach=app.session.run)
    async with small.run_test(size=(80, 24)) as pilot:
        dash = await loaded(pilot)
        sharp = dash.query_one("#sharpness")
        assert not sharp.display  # compact: four charts keep their room ...
        assert "λmax" in str(dash.query_one(StatusBar).render())  # ... the number stays in view
        for _ in range(5):  # ... and `z` reaches the chart
            await pilot.press("z")
        assert dash.maximized is sharp and sharp.display and small.focused is None
        for _ in range(250):  # the next timed redraw draws it (slow on a loaded machine)
            if sharp.has_data and sharp.size.height > 10:
                break
            await pilot.pause(0.02)
        assert sharp.has_data and sharp.size.height > 10
        await pilot.press("z")
        assert dash.maximized is None and not sharp.display
