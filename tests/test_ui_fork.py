"""The dashboard's fork (`f`), pace (`p`) and extend (`x`) keys, and lineage in the
compare view.  Pilot tests: real tiny engines where a run trains (skipped without
torch), fake run directories where nothing needs to."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.text import Text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import fake_run, isolated, live_run, stop_engine, sync  # noqa: E402,F401

from dlf_tui.core import config  # noqa: E402
from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.screens.compare import CompareScreen  # noqa: E402
from dlf_tui.ui.screens.dashboard import DashboardScreen  # noqa: E402
from dlf_tui.ui.screens.fork import ExtendScreen, ForkScreen, next_pace  # noqa: E402
from dlf_tui.ui.widgets.controls import Controls  # noqa: E402
from dlf_tui.ui.widgets.event_log import EventLog  # noqa: E402
from dlf_tui.ui.widgets.status_bar import StatusBar, StatusInfo  # noqa: E402

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="a real engine trains here")


async def until(pilot, pred, what: str, tries: int = 1200) -> None:
    """Wait (up to a minute) until ``pred()``; the tests assert what they waited for."""
    for _ in range(tries):
        if pred():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_text(screen) -> str:
    return str(screen.query_one(StatusBar).render())


def control_msg(screen) -> str:
    return str(screen.query_one(Controls).query_one("#control-msg").render())


def text_of(screen, selector: str) -> str:
    return Text.from_markup(str(screen.query_one(selector).render())).plain


def dialog_text(screen) -> str:
    from textual.widgets import Static

    return "\n".join(str(w.render()) for w in screen.query(Static))


def kinds(run: runs.Run, kind: str) -> list[dict]:
    return [e for e in run.events() if e.get("kind") == kind]


def with_checkpoint(run: runs.Run, step: int) -> None:
    (run.path / runs.CHECKPOINTS).mkdir(exist_ok=True)
    (run.path / runs.CHECKPOINTS / f"step-{step:09d}.pt").write_bytes(b"not read by the UI")


async def dashboard_of(pilot, live: bool | None = None, rows: int = 0) -> DashboardScreen:
    app = pilot.app

    def ready() -> bool:
        d = app.dashboard
        if d is None or app.screen is not d or not d.history_loaded or not d.redraws:
            return False
        state_ok = d.live if live else d.read_only if live is False else True
        return state_ok and d.session.history.rows >= rows

    await until(pilot, ready, "the dashboard")
    return app.dashboard


def shown(dash: DashboardScreen, key: str) -> bool:
    b = dash.active_bindings.get(key)
    return b is not None and b.enabled


# -- without an engine ------------------------------------------------------------------------
def test_the_pace_key_cycles_full_10k_1k_100():
    assert [next_pace(p) for p in (0, 10_000, 1_000, 100)] == [10_000, 1_000, 100, 0]
    # a pace set elsewhere (--set run.pace, ctl) goes to the next slower one of the cycle
    assert [next_pace(p) for p in (5_000, 20_000, 50, None)] == [1_000, 10_000, 0, 10_000]
    bar = StatusBar()
    bar.info = StatusInfo(rate=990.0, pace=1000.0, live=True)
    assert "pace 1k/s" in Text.assemble(*bar.segments()).plain
    bar.info = StatusInfo(rate=990.0, pace=0.0, live=True)
    assert "pace" not in Text.assemble(*bar.segments()).plain


@sync
async def test_fork_and_extend_keys_show_only_where_they_apply(isolated):
    rdir = isolated / "runs"
    plain = fake_run(rdir, run_id="20250101-000000-plain")  # finished, no checkpoint file
    app = DlfApp(runs_dir=rdir, attach=plain)
    async with app.run_test(size=(160, 48)) as pilot:
        dash = await dashboard_of(pilot, live=False)
        assert not shown(dash, "f") and shown(dash, "x") and "p" not in dash.active_bindings
        await pilot.press("f")
        await pilot.pause()
        assert app.screen is dash  # a hidden key does nothing

        # x: N more updates, its default the run's length; a bad count sends nothing
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ExtendScreen), "the extend dialog")
        ext = app.screen
        assert ext.query_one("#in-more").value == "6000"
        assert "update 12,000 in all" in text_of(ext, "#more-msg")
        await pilot.press(*"12x")  # typing replaces the default
        assert "whole number" in text_of(ext, "#more-msg")
        await pilot.press("enter")
        assert app.screen is ext
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is dash, "the dashboard again")
        assert plain.config().run.steps == 6000 and plain.state()["state"] == "finished"

    # a checkpoint on disk: f opens the dialog, prefilled with the run's values
    with_checkpoint(plain, 6000)
    app = DlfApp(runs_dir=rdir, attach=plain)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await dashboard_of(pilot, live=False)
        assert shown(dash, "f")
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, ForkScreen), "the fork dialog")
        dlg = app.screen
        c = dlg.query_one(Controls)
        # the run's last values (A was edited 20 → 10 at update 3000), the same fields as the dashboard's
        assert [c.input(n).value for n in ("amplitude", "period", "lr")] == ["10", "500", "1"]
        assert app.focused is c.input("amplitude")
        await pilot.press(*"0.5")
        assert ">= 1" in str(c.query_one("#control-msg").render())
        await pilot.press("enter")
        assert app.screen is dlg  # refused in the dialog
        for _ in range(3):
            await pilot.press("backspace")
        await pilot.press("2", "tab", "tab", "tab")  # A = 2; to the child's length
        steps = dlg.query_one("#in-steps")
        assert app.focused is steps and steps.value == "12000"  # its last update + its length
        await pilot.press(*"6000", "enter")  # not after the fork update
        assert "at least 6,001" in text_of(dlg, "#steps-msg") and app.screen is dlg
        req = dlg.request()
        assert req is None
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is dash, "the dashboard again")
    assert [r.id for r in runs.list_runs(rdir)] == [plain.id]  # nothing forked


@sync
async def test_a_run_whose_saved_code_needs_trust_is_neither_forked_nor_extended(isolated):
    rdir = isolated / "runs"
    run = fake_run(rdir)
    with_checkpoint(run, 6000)
    (run.path / "code").mkdir()
    (run.path / "code" / "model.py").write_text("def build(): ...\n", encoding="utf-8")
    (run.path / "code" / "manifest.json").write_text(json.dumps({"entries": [{
        "role": "model", "spec": "./model.py:build", "kind": "file", "module": "",
        "origin": str(isolated / "gone" / "model.py"), "copy": "code/model.py", "sha256": "0" * 64}]}))
    app = DlfApp(runs_dir=rdir, attach=run)
    async with app.run_test(size=(160, 48)) as pilot:
        dash = await dashboard_of(pilot, live=False)
        assert shown(dash, "f") and shown(dash, "x")
        for key, what in (("f", "fork"), ("x", "extend")):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert app.screen is dash  # no dialog: refused at once, in one line
            msg = control_msg(dash)
            assert msg.startswith(f"{what} refused: {run.id}:") and "\n" not in msg
            last = dash.query_one(EventLog).entries[-1]
            assert last[1] == "refused" and "--trust-code" in last[2] and "is not on this machine" in last[2]
    assert [r.id for r in runs.list_runs(rdir)] == [run.id]
    assert run.config().run.steps == 6000


@sync
async def test_compare_shows_lineage_and_starts_at_the_fork(isolated):
    rdir = isolated / "runs"
    parent = fake_run(rdir, run_id="20250101-000000-parent")
    child = fake_run(rdir, run_id="20250101-000001-child", steps=8000)
    orphan = fake_run(rdir, run_id="20250101-000002-orphan", steps=7000)
    for r, (p, at) in ((child, (parent.path, 3000)), (orphan, (isolated / "elsewhere" / "gone-run", 2500))):
        cfg = replace(r.config(), fork=config.ForkConfig(parent=str(p), at=at))
        (r.path / runs.CONFIG).write_text(config.to_toml(cfg), encoding="utf-8")

    app = DlfApp(runs_dir=rdir, compare=[parent, child, orphan])  # as `dlf-tui compare` opens it
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded
                    and app.screen.redraws, "the compare view")
        scr = app.screen
        lines = text_of(scr, "#compare-lineage").splitlines()
        assert lines == [f"{child.id} ← {parent.id} @ update 3,000",
                         f"{orphan.id} ← gone-run @ update 2,500"]
        assert scr.context().x0 == 1 and [m.step for m in scr.context().markers] == [3000, 2500]
        assert scr.active_bindings["w"].enabled
        await pilot.press("w")  # from the first fork update on
        assert scr.context().x0 == 2500 and scr.context().x1 == 8000
        assert "updates 2,500…8,000" in text_of(scr, "#compare-status")
        await pilot.press("w")
        assert scr.context().x0 == 1

    app = DlfApp(runs_dir=rdir, compare=[parent, fake_run(rdir, run_id="20250101-000003-other")])
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded,
                    "the compare view")
        scr = app.screen
        assert not scr.query_one("#compare-lineage").display and scr.lineage == []
        assert "w" not in scr.active_bindings  # no fork: nothing to start at


# -- real engines -------------------------------------------------------------------------------
@needs_torch
@sync
async def test_the_pace_key_sets_the_live_pace_and_the_status_bar_shows_it(live_run):
    run, _ = live_run()
    app = DlfApp(runs_dir=run.path.parent, attach=run)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await dashboard_of(pilot, live=True, rows=100)
        s = dash.session
        assert shown(dash, "p") and s.params["pace"] == 0 and "pace" not in status_text(dash)
        for pace, label in ((10_000, "pace 10k/s"), (1_000, "pace 1k/s"), (100, "pace 100/s")):
            await pilot.press("p")
            await until(pilot, lambda: s.params.get("pace") == pace, f"pace {pace}")
            await until(pilot, lambda: label in status_text(dash), label)
            # the engine's rate counts training time only: at a pace the bar says the pace's
            assert 0 < dash.query_one(StatusBar).info.rate <= pace
        await pilot.press("p")  # full speed again: nothing shown
        await until(pilot, lambda: s.params.get("pace") == 0, "full speed")
        await until(pilot, lambda: "pace" not in status_text(dash), "no pace shown")
    assert [e["changes"] for e in kinds(run, "set")] == [{"pace": 10_000.0}, {"pace": 1_000.0},
                                                         {"pace": 100.0}, {"pace": 0.0}]


@needs_torch
@sync
async def test_fork_a_live_run_opens_the_overlay_of_parent_and_child_both_live(live_run):
    run, _ = live_run("run.pace=3000", "run.flush_seconds=0.05")
    app = DlfApp(runs_dir=run.path.parent, attach=run)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            dash = await dashboard_of(pilot, live=True, rows=300)
            assert shown(dash, "f") and not shown(dash, "x")
            pressed_at = dash.session.step
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, ForkScreen), "the fork dialog")
            dlg = app.screen
            assert "pace: the parent's, 3k/s" in dialog_text(dlg)
            await pilot.press("1", "enter")  # A = 1 from the fork update on
            await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded,
                        "the overlay")
            scr = app.screen
            [child] = [r for r in runs.list_runs(run.path.parent) if r.id != run.id]
            cfg = child.config()
            at = cfg.fork.at
            assert cfg.fork.parent == str(run.path.resolve()) and at >= pressed_at
            assert cfg.schedule.amplitude == 1.0 and cfg.run.pace == 3000
            assert [s.run.path for s in scr.sessions] == [run.path, child.path]
            assert scr.start == at and scr.context().x0 == at
            assert text_of(scr, "#compare-lineage") == f"{child.id} ← {run.id} @ update {at:,}"
            # both live, both followed: each one's rows grow past the fork update
            await until(pilot, lambda: "2 live" in text_of(scr, "#compare-status"), "2 live")
            await until(pilot, lambda: all(s.history.last_step() > at + 500 for s in scr.sessions),
                        "both runs to train on")
            drawn = scr.redraws
            await until(pilot, lambda: scr.redraws > drawn, "a redraw")
            await until(pilot, lambda: all(c.has_data for c in scr.charts), "the charts")
            amp = child.read()[:, child.columns().index("amplitude")]
            assert (amp[at:at + 500] == 1.0).all() and (amp[:at] == 70.0).all()
            assert np.array_equal(child.read()[:at], run.read()[:at])
            await pilot.press("w")
            assert scr.context().x0 == 1
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is dash, "back to the parent")
            assert any(k == "fork" and child.id in m for _, k, m, _ in dash.query_one(EventLog).entries)
            assert dash.session.run.path == run.path and dash.live
    finally:
        for _, proc in app.forks:
            stop_engine(proc)


@needs_torch
@sync
async def test_fork_and_extend_a_finished_run(live_run):
    run, proc = live_run("run.steps=3000", "run.checkpoint_every=1000", "run.pace=2000")
    assert proc.wait(timeout=60) == 0 and run.state()["state"] == "finished"
    app = DlfApp(runs_dir=run.path.parent, attach=run)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            dash = await dashboard_of(pilot, live=False, rows=3000)
            assert shown(dash, "f") and shown(dash, "x") and "p" not in dash.active_bindings

            # fork at its last update: the child needs more updates, asked in the dialog
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, ForkScreen), "the fork dialog")
            await pilot.press("tab", "tab", "tab", *"3500", "enter")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded,
                        "the overlay")
            scr = app.screen
            child = scr.sessions[1].run
            assert child.config().fork.at == 3000 and scr.context().x0 == 3000
            await until(pilot, lambda: scr.sessions[1].history.rows == 3500
                        and scr.sessions[1].state == "finished", "the child to finish")
            assert np.array_equal(child.read()[:3000], run.read())
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is dash, "back to the parent")

            # extend: 3000 more updates, followed live on the dashboard, the same as resume --steps
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ExtendScreen), "the extend dialog")
            assert app.screen.query_one("#in-more").value == "3000"
            await pilot.press("enter")
            await until(pilot, lambda: app.dashboard is not dash and app.session.live
                        and app.dashboard.live, "the extended run, live")
            live_dash = app.dashboard
            assert isinstance(app.screen, DashboardScreen) and app.screen is live_dash
            assert shown(live_dash, "p") and shown(live_dash, "f") and not shown(live_dash, "x")
            assert run.config().run.steps == 6000
            await until(pilot, lambda: live_dash.session.state == "finished"
                        and live_dash.read_only, "the extension to finish")
            assert live_dash.session.history.rows == run.rows() == 6000
            assert shown(live_dash, "x")  # finished again: x extends it further
            await until(pilot, lambda: "6,000/6,000" in status_text(live_dash), "final status")
    finally:
        for _, p in app.forks:
            stop_engine(p)
    assert [e["kind"] for e in run.events()].count("resume") == 1
