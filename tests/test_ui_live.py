"""Pilot tests of the TUI on tiny REAL runs (engine process + socket).

Each test starts its own engine (``live_run``) and always stops it."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")  # a real engine trains here (the floor check of .ci/run has no torch)

import sys
import threading
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import isolated, live_run, stop_engine, sync, tiny_config, wait_for  # noqa: E402,F401

from dlf_tui.core import config
from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.ui import messages as M  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.screens.dashboard import DashboardScreen  # noqa: E402
from dlf_tui.ui.screens.picker import PickerScreen  # noqa: E402
from dlf_tui.ui.screens.quit_confirm import QuitScreen  # noqa: E402
from dlf_tui.ui.session.base import RunSession  # noqa: E402
from dlf_tui.ui.session.pump import pump  # noqa: E402
from dlf_tui.ui.widgets.controls import Controls  # noqa: E402
from dlf_tui.ui.widgets.event_log import EventLog  # noqa: E402
from dlf_tui.ui.widgets.status_bar import StatusBar  # noqa: E402


async def until(pilot, pred, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what or pred}")


def kinds(run: runs.Run, kind: str) -> list[dict]:
    return [e for e in run.events() if e.get("kind") == kind]


def status_text(app: DlfApp) -> str:
    return str(app.screen.query_one(StatusBar).render())


async def open_live(pilot, app: DlfApp, rows: int = 2000) -> DashboardScreen:
    await until(pilot, lambda: app.session is not None and app.session.live
                and app.dashboard.history_loaded and app.session.history.rows > rows,
                what="live history")
    dash = app.dashboard
    assert isinstance(app.screen, DashboardScreen)
    await until(pilot, lambda: all(c.has_data for c in dash.charts if c.id != "sharpness"),
                what="charts to fill")
    return dash


@sync
async def test_keys_and_inputs_steer_the_run(live_run):
    # at a pace: a TUI busy with 20k+ rows/s makes Pilot wait 2 s per key for idleness
    run, proc = live_run("run.pace=3000")
    app = DlfApp(runs_dir=run.path.parent, attach=run)
    async with app.run_test(size=(100, 30)) as pilot:
        dash = await open_live(pilot, app)
        s = app.session
        for chart in ("loss", "gamma", "accuracy", "drop"):
            assert dash.query_one(f"#{chart}").points > 10
        await until(pilot, lambda: "RUNNING" in status_text(app) and run.id in status_text(app))

        # A bad value shows its reason and sends nothing.
        await pilot.press("a", *"0.5")
        controls = dash.query_one(Controls)
        msg = str(controls.query_one("#control-msg").render())
        assert "amplitude" in msg and ">= 1" in msg
        assert controls.input("amplitude").has_class("-invalid")
        await pilot.press("enter", "escape")
        assert app.focused is None and controls.input("amplitude").value == "70"
        await pilot.press("t", *"abc", "enter")
        await pilot.pause(0.5)
        assert "must be an integer" in str(controls.query_one("#control-msg").render())
        assert s.sent == [] and kinds(run, "set") == []
        await pilot.press("escape")

        # Keys nudge A and T; the lr field sets lr; each edit lands in events.jsonl.
        await pilot.press("plus")
        await until(pilot, lambda: s.params.get("amplitude") == 87.5, what="A up")
        await pilot.press("greater_than_sign")
        await until(pilot, lambda: s.params.get("period") == 250, what="T up")
        await pilot.press("less_than_sign")
        await until(pilot, lambda: s.params.get("period") == 200, what="T down")
        await pilot.press("minus")
        await until(pilot, lambda: s.params.get("amplitude") == 70.0, what="A down")
        await pilot.press("r", *"0.5", "enter")
        await until(pilot, lambda: s.params.get("lr") == 0.5, what="lr set")
        await until(pilot, lambda: "lr 0.5" in status_text(app), what="status shows lr")

        # Pause stops the updates, resume restarts them.
        await pilot.press("space")
        await until(pilot, lambda: s.state == "paused", what="paused")
        paused_at = s.step
        await pilot.pause(0.5)
        assert s.step == paused_at
        await until(pilot, lambda: "PAUSED" in status_text(app), what="status shows PAUSED")
        await pilot.press("space")
        await until(pilot, lambda: s.state == "running" and s.step > paused_at, what="resumed")
        await pilot.press("c")
        await until(pilot, lambda: kinds(run, "checkpoint"), what="checkpoint")

        markers = [m.step for m in s.timeline.markers]
        logged = [e[1] for e in dash.query_one(EventLog).entries]

    sets = kinds(run, "set")
    assert [e["changes"] for e in sets] == [{"amplitude": 87.5}, {"period": 250}, {"period": 200},
                                            {"amplitude": 70.0}, {"lr": 0.5}]
    steps = [e["step"] for e in sets]
    assert all(isinstance(x, int) and x > 0 for x in steps) and steps == sorted(steps)
    assert markers == steps  # every edit is a marker on the charts at its step
    pause, resume = kinds(run, "pause"), kinds(run, "resume")
    assert len(pause) == 1 and len(resume) == 1 and resume[0]["step"] == pause[0]["step"] + 1
    assert {"set", "pause", "resume", "checkpoint"} <= set(logged)
    assert proc.poll() is None  # leaving the pilot leaves the engine running


@sync
async def test_quit_dialog_two_tuis_and_attach_from_the_picker(live_run, isolated):
    run, proc = live_run("run.pace=3000")  # Pilot waits for idleness after each key

    # Two followers of one run both receive the live stream.
    posted: list[list] = [[], []]
    stop = threading.Event()
    sessions = [RunSession(run), RunSession(run)]
    threads = [threading.Thread(target=pump, args=(ses, posted[i].append, stop.is_set), daemon=True)
               for i, ses in enumerate(sessions)]
    for t in threads:
        t.start()
    assert wait_for(lambda: all(ses.live and ses.history.rows > 1000 for ses in sessions))
    sessions[0].send("set", {"amplitude": 50}, wait=10)
    assert wait_for(lambda: all(any(isinstance(m, M.EditApplied) for m in p) for p in posted))
    assert all(ses.params["amplitude"] == 50 for ses in sessions)
    stop.set()
    for t in threads:
        t.join(5)

    # Quit → cancel keeps the TUI; quit → leave exits and the engine keeps training.
    app = DlfApp(runs_dir=run.path.parent, attach=run)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_live(pilot, app)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="quit dialog")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="cancel")
        await pilot.pause(0.2)
        assert app.return_code is None
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="quit dialog")
        await pilot.press("l")
        await until(pilot, lambda: app.return_code is not None, what="exit")
    assert app.return_code == 0
    seen = app.session.history.rows
    time.sleep(0.3)
    assert proc.poll() is None and run.is_live() and run.rows() > seen

    # The picker lists the live run; Enter attaches (history from disk, then live);
    # quit → stop checkpoints and stops the engine.
    app = DlfApp(runs_dir=run.path.parent)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.live_runs,
                    what="live run listed")
        assert [r.id for r in app.screen.live_runs] == [run.id]
        await pilot.press("tab")
        assert app.focused is app.screen.query_one("#run-list")
        await pilot.press("enter")
        await open_live(pilot, app, rows=seen)
        assert app.session.run.id == run.id and app.session.params["amplitude"] == 50
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="quit dialog")
        await pilot.press("s")
        await until(pilot, lambda: app.return_code is not None, timeout=30, what="stop and exit")
    assert app.return_code == 0
    assert proc.wait(timeout=30) == 0
    assert run.state()["state"] == "stopped" and kinds(run, "stop")


@sync
async def test_finished_run_opens_read_only_with_its_whole_history(live_run):
    run, proc = live_run("run.steps=3000", "data.val_seed=1", "data.eval_every=250")
    assert proc.wait(timeout=60) == 0 and run.state()["state"] == "finished"
    app = DlfApp(runs_dir=run.path.parent, attach=run)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.dashboard is not None and app.dashboard.history_loaded
                    and app.dashboard.redraws > 0, what="history")
        s, dash = app.session, app.dashboard
        assert not s.live
        assert s.history.rows == run.rows() == 3000 and s.history.last_step() == 3000
        assert s.history.eval_rows == run.rows("eval") > 0
        await until(pilot, lambda: all(c.has_data for c in dash.charts if c.id != "sharpness"))
        await until(pilot, lambda: "3,000/3,000" in status_text(app), what="final status")
        assert "FINISHED" in status_text(app) and "read-only" in status_text(app)
        assert dash.query_one(Controls).input("amplitude").disabled
        assert "finish" in [e[1] for e in dash.query_one(EventLog).entries]
        await pilot.press("plus", "space", "c")
        await pilot.pause(0.3)
        assert s.sent == []  # nothing to steer
        await pilot.press("q")  # no dialog: the run is not live
        await until(pilot, lambda: app.return_code is not None)
    assert app.return_code == 0


@sync
async def test_picker_edits_then_starts_a_run(isolated):
    pdir = isolated / "presets"
    pdir.mkdir()
    (pdir / "tiny.toml").write_text(config.to_toml(config.replace(
        tiny_config(name="tiny"), description="tiny test preset")), encoding="utf-8")
    app = DlfApp(runs_dir=isolated / "runs", presets_dir=pdir)
    proc = None
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            picker = app.screen
            assert isinstance(picker, PickerScreen)
            names = [p.name for p in picker.presets]
            assert "tiny" in names and "spiral-fig4" in names  # custom and shipped
            assert picker.selected.name == "spiral-fig4"  # the picker starts on the paper's run
            start, goal = names.index("spiral-fig4"), names.index("tiny")
            for _ in range(abs(goal - start)):
                await pilot.press("down" if goal > start else "up")
            assert picker.selected is not None and picker.selected.name == "tiny"
            assert "tiny test preset" in str(picker.query_one("#preset-info").render())
            amp = picker.query_one("#f-amplitude")
            assert amp.value == "70"
            amp.focus()
            await pilot.press(*"0.5")  # select-on-focus: typing replaces
            assert "must be >= 1" in str(picker.query_one("#picker-msg").render())
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert isinstance(app.screen, PickerScreen) and runs.list_runs(isolated / "runs") == []
            amp.value = "30"
            picker.query_one("#f-steps").value = "50000000"  # long enough to outlive the test
            picker.query_one("#f-seed").value = "3"
            picker.query_one("#f-period").focus()
            await pilot.press("enter")
            await until(pilot, lambda: app.session is not None and app.session.live, timeout=60,
                        what="engine start")
            proc = app.session.proc
            assert isinstance(app.screen, DashboardScreen)
            cfg = app.session.run.config()
            assert (cfg.name, cfg.schedule.amplitude, cfg.run.steps, cfg.run.seed) == ("tiny", 30.0, 50000000, 3)
            await open_live(pilot, app, rows=100)
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, QuitScreen))
            await pilot.press("l")
            await until(pilot, lambda: app.return_code is not None)
        assert proc.poll() is None  # left running, in its own session
    finally:
        if proc is not None:
            stop_engine(proc)


@sync
async def test_a_run_that_cannot_start_shows_why(isolated):
    from dlf_tui.ui.screens.error import ErrorScreen

    app = DlfApp(runs_dir=isolated / "runs", config=tiny_config("run.device=cuda:99"))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen) and app.screen.query("#error-reason"),
                    timeout=90, what="error screen")
        reason = str(app.screen.query_one("#error-reason").render())
        assert "cuda:99" in reason
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None)
    assert app.return_code == 1


@sync
async def test_a_stopped_engine_shows_as_not_responding_then_recovers(live_run):
    """SIGSTOP the engine under a watching dashboard: within seconds the status bar
    says NOT RESPONDING and a notification names the pid and `kill -CONT`; SIGCONT
    and it is RUNNING again, still following."""
    import os
    import signal

    run, proc = live_run("run.pace=2000")
    app = DlfApp(runs_dir=run.path.parent, attach=run)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await open_live(pilot, app, rows=200)
            assert "RUNNING" in status_text(app)
            os.killpg(proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            await until(pilot, lambda: "NOT RESPONDING" in status_text(app), timeout=20,
                        what="not responding in the status bar")
            assert time.monotonic() - stopped < 12
            [note] = [n for n in app._notifications if n.title == "engine not responding"]
            assert f"engine pid {proc.pid} is not responding" in note.message
            assert f"kill -CONT {proc.pid}" in note.message and "stopped" in note.message
            rows = app.session.history.rows
            os.killpg(proc.pid, signal.SIGCONT)
            await until(pilot, lambda: "RUNNING" in status_text(app)
                        and "NOT RESPONDING" not in status_text(app), timeout=20, what="running again")
            await until(pilot, lambda: app.session.history.rows > rows + 200, what="rows again")
            assert app.dashboard.silent == ""
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
