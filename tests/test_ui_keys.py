"""Keys, palette, help and settings: the palette is built from the bindings
(nothing twice, our Quit and Keys only), a read-only run offers no steering
keys (footer, ?, palette, the key itself), keys.toml remaps a key, and the theme
chosen in one run of the app is the theme of the next."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import fake_run, isolated, sync  # noqa: E402,F401

from dlf_tui.ui import keys, settings  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.screens.dashboard import DashboardScreen  # noqa: E402
from dlf_tui.ui.screens.help import HelpScreen, key_table  # noqa: E402
from dlf_tui.ui.widgets.controls import Controls  # noqa: E402

STEERING_KEYS = ("space", "plus", "minus", "greater_than_sign", "less_than_sign", "a", "t", "r", "c", "s")


async def loaded(pilot):
    app = pilot.app
    for _ in range(500):
        d = app.dashboard
        if d is not None and d.history_loaded and d.redraws and d.read_only:
            return d
        await pilot.pause(0.02)
    raise AssertionError("the fake run did not load")


def table_text(screen) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(key_table(screen))
    return console.export_text()


def footer_labels(screen) -> list[str]:
    from textual.widgets._footer import FooterKey

    return [str(k.description) for k in screen.query(FooterKey)]


@sync
async def test_a_read_only_run_offers_no_steering_keys(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"))
    async with app.run_test(size=(160, 48)) as pilot:
        dash = await loaded(pilot)
        await pilot.pause(0.1)
        active = dash.active_bindings
        for key in STEERING_KEYS:
            assert key not in active, key  # check_action: False (hidden, and the key does nothing)
        assert "w" in active and active["w"].enabled  # the view keys stay
        labels = footer_labels(dash)
        assert "Window" in labels and "Zoom chart" in labels
        for gone in ("Pause/resume", "Checkpoint", "Stop run", "Edit A", "A+"):
            assert gone not in labels, gone
        text = table_text(dash)
        assert "Window" in text and "Pause/resume" not in text and "Checkpoint" not in text
        titles = [c.title for c in app.get_system_commands(dash)]
        assert "Cycle chart window" in titles and "Pause / resume the run" not in titles
        msg = dash.query_one(Controls).query_one("#control-msg")
        for key in ("space", "c", "s", "plus"):
            await pilot.press(key)
        await pilot.pause()
        assert "not live" not in str(msg.render())  # the keys are not steering keys here
        assert app.screen is dash and dash.session.sent == []


@sync
async def test_a_dashboard_without_a_live_engine_yet_dims_its_steering_keys(isolated):
    pdir = isolated / "presets"
    pdir.mkdir()
    app = DlfApp(runs_dir=isolated / "runs", presets_dir=pdir)
    async with app.run_test(size=(160, 48)) as pilot:
        dash = DashboardScreen(None, app.chart_style())  # what start_run shows while the engine starts
        await app.push_screen(dash)
        await pilot.pause()
        active = dash.active_bindings
        assert not active["space"].enabled and not active["c"].enabled  # shown, dimmed
        assert active["w"].enabled
        dash.live = True
        dash.refresh_bindings()
        assert dash.active_bindings["space"].enabled
        text = table_text(dash)
        assert "Pause/resume" in text and "dashboard.pause" in text


@sync
async def test_a_key_remapped_in_keys_toml_works_and_shows_everywhere(isolated):
    cfg = settings.config_dir()
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / settings.KEYS_FILE).write_text('[dashboard]\nwindow = "g"\n"zoom" = "ctrl+z,Z"\n'
                                          '"app.nope" = "x"\n', encoding="utf-8")
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"))
    assert any("app.nope" in p for p in app.setting_problems)  # an unknown id: one line, no crash
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await loaded(pilot)
        assert dash.window == "whole"
        await pilot.press("w")  # no longer the window key
        assert dash.window == "whole"
        await pilot.press("g")
        assert dash.window == "period"
        cmd = next(c for c in app.get_system_commands(dash) if c.title == "Cycle chart window")
        assert cmd.help.startswith("g: ")
        zoom = next(c for c in app.get_system_commands(dash) if c.title == "Zoom a chart")
        assert zoom.help.startswith("^z / Z: ")
        text = table_text(dash)
        window_row = next(line for line in text.splitlines() if "dashboard.window" in line)
        assert window_row.split()[0] == "g"
        footer = {str(k.description): str(k.key_display) for k in dash.query("FooterKey")}
        assert footer.get("Window") == "g"
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)


def test_keys_toml_problems_are_one_line_each(tmp_path):
    bad = tmp_path / "keys.toml"
    bad.write_text("[dashboard\n", encoding="utf-8")
    keymap, problems = settings.load_keymap(set(keys.IDS), bad)
    assert keymap == {} and len(problems) == 1 and str(bad) in problems[0]
    bad.write_text('dashboard.pause = 3\n"dashboard.stop" = "x, y"\n', encoding="utf-8")
    keymap, problems = settings.load_keymap(set(keys.IDS), bad)
    assert keymap == {"dashboard.stop": "x,y"} and len(problems) == 1 and "dashboard.pause" in problems[0]
    assert settings.load_keymap(set(keys.IDS), tmp_path / "absent.toml") == ({}, [])
    # every remappable binding has a distinct id and a palette title
    ids = [b.id for b in keys.ALL if b.id]
    assert len(ids) == len(set(ids)) and all(b.tooltip for b in keys.ALL if b.id)


@sync
async def test_the_theme_chosen_is_the_theme_of_the_next_start(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        default = app.theme
        new = "nord" if default != "nord" else "gruvbox"
        app.theme = new  # what the palette's theme picker does
        await pilot.pause()
    saved = json.loads((settings.config_dir() / settings.STATE_FILE).read_text(encoding="utf-8"))
    assert saved["theme"] == new
    again = DlfApp(runs_dir=isolated / "runs", attach=app.session.run)
    async with again.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert again.theme == new
    # an unknown saved theme is ignored, not an error
    settings.save_state({"theme": "no-such-theme"})
    third = DlfApp(runs_dir=isolated / "runs", attach=app.session.run)
    async with third.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert third.theme == default


@sync
async def test_palette_lists_quit_and_keys_once_with_our_meaning(isolated):
    pdir = isolated / "presets"
    pdir.mkdir()
    app = DlfApp(runs_dir=isolated / "runs", presets_dir=pdir)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        cmds = list(app.get_system_commands(app.screen))
        titles = [c.title for c in cmds]
        assert titles.count("Keys") == 1 and titles.count("Quit") == 1 and len(titles) == len(set(titles))
        assert not any("as soon as possible" in c.help for c in cmds)
        keys_cmd = next(c for c in cmds if c.title == "Keys")
        assert keys_cmd.help.startswith("?: ")
        await keys_cmd.callback()
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert any(t.startswith("Theme") or "theme" in t.lower() for t in titles)  # Textual's own stay
