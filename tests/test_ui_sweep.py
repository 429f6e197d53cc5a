"""The sweep view on fake sweeps (no engine): heatmap values, cursor and table in
step, Enter opens the cell's members, train/val toggle, slices of a third axis,
live updates from growing member files, stopping the engine, a snapshot.

``fake_sweep`` builds a real sweep directory (``sweeps.plan`` + ``sweeps.create``)
whose members hold metrics/eval rows written with ``runs.SeriesWriter`` and
final accuracies chosen by ``final_acc``; the tests compare the screen with
means computed here, not with ``Sweep.summary()``."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from textual.command import CommandPalette

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import isolated, sync  # noqa: E402,F401

from dlf_tui.core import config
from dlf_tui.store import run as runs, sweep as sweeps  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.screens.compare import CompareScreen  # noqa: E402
from dlf_tui.ui.screens.help import HelpScreen, key_table  # noqa: E402
from dlf_tui.ui.screens.picker import PickerScreen  # noqa: E402
from dlf_tui.ui.screens.quit_confirm import ConfirmScreen  # noqa: E402
from dlf_tui.ui.screens.sweep import SweepScreen  # noqa: E402
from dlf_tui.ui.widgets.charts.heatmap import Heatmap  # noqa: E402

AMPS = (1.0, 10.0, 70.0)
PERIODS = (100, 500)
KINDS = ("triangle", "sine")
CLASSES = 3
SWEEP_ID = "20250101-000000-sweep-fake"


def final_acc(cell: tuple, seed: int) -> float:
    """The chosen final training accuracy of a member (distinct per cell and seed)."""
    a, p = AMPS.index(cell[0]), PERIODS.index(cell[1])
    k = KINDS.index(cell[2]) if len(cell) > 2 else 0
    return round(0.5 + 0.12 * a + 0.07 * p - 0.2 * k + 0.031 * (seed % 4), 6)


def final_val(cell: tuple, seed: int) -> float:
    return round(final_acc(cell, seed) - 0.04 - 0.01 * (seed % 2), 6)


METRIC_COLS = (["step", "loss_dynamical", "loss_ce", "accuracy"]
               + [f"accuracy_class_{i}" for i in range(CLASSES)]
               + [f"gamma_{i}" for i in range(CLASSES)] + ["amplitude", "period", "lr", "grad_norm"])
EVAL_COLS = ["step", "val_loss_ce", "val_accuracy"] + [f"val_accuracy_class_{i}" for i in range(CLASSES)]


def append_member_rows(run: runs.Run, start: int, stop: int, acc: float, val: float | None,
                       amplitude: float = 10.0) -> None:
    """Rows for updates start+1..stop whose accuracy ramps from 1/3 to ``acc`` at ``stop``
    (and a held-out row every 100 updates, the last one at ``stop`` reading ``val``)."""
    st = np.arange(start + 1, stop + 1, dtype=np.float64)
    frac = st / stop
    a = 1 / 3 + (acc - 1 / 3) * frac
    a[-1] = acc
    ce = 1.1 * np.exp(-st / 150.0) + 0.02 + 0.1 * (1 - acc)
    g = 1 + (amplitude - 1) * 0.5 * (1 + np.sin(2 * np.pi * st / 100.0))
    gam = np.column_stack([3 * g / (g + 2), 3 / (g + 2), 3 / (g + 2)])
    rows = np.column_stack([st, ce * gam[:, 0], ce, a, a, a, a, gam, np.full_like(st, amplitude),
                            np.full_like(st, 100.0), np.ones_like(st), 0.1 * np.exp(-st / 200.0)])
    w = runs.SeriesWriter(run.path, "metrics", METRIC_COLS)
    w.append(rows)
    w.close()
    if val is not None:
        es = np.array([s for s in range(start + 1, stop + 1) if s % 100 == 0 or s == stop], dtype=float)
        v = 1 / 3 + (val - 1 / 3) * es / stop
        v[-1] = val
        ew = runs.SeriesWriter(run.path, "eval", EVAL_COLS)
        ew.append(np.column_stack([es, 1.2 * np.exp(-es / 150.0), v, v, v, v]))
        ew.close()


def write_state(run: runs.Run, state: str, step: int, total: int, sweep_id: str, pid: int = 0) -> None:
    runs.write_json_atomic(run.file(runs.STATE), {
        "state": state, "pid": pid, "step": step, "total": total,
        "started": time.time() if pid else 0.0,  # a live stand-in started after it: not a reused pid
        "reason": "", "rate": 0.0, "device": "cpu", "sweep": sweep_id})


def fake_sweep(runs_dir: Path, seeds: int = 3, rows: int = 400, steps: int = 400,
               third: bool = False, val: bool = True, state: str = "finished",
               sweep_id: str = SWEEP_ID, pid: int = 0) -> sweeps.Sweep:
    """A sweep over amplitude × period (× kind) with ``seeds`` seeds per cell;
    every member holds ``rows`` updates ending at ``final_acc``."""
    base = config.apply_overrides(config.Config(name="fake"), [
        f"run.steps={steps}", f"data.classes={CLASSES}", "data.val_seed=1" if val else "data.val_seed=-1",
        "data.eval_every=100", "run.device=cpu", "model.hidden=[16]"])
    sets = ["schedule.amplitude=" + ",".join(map(str, AMPS)),
            "schedule.period=" + ",".join(map(str, PERIODS))]
    if third:
        sets.append("schedule.kind=" + ",".join(KINDS))
    p = sweeps.plan(base, sets, seeds=seeds, threshold=0.8)
    made = sweeps.create(p, Path(runs_dir))
    path = made.path.rename(Path(runs_dir) / sweep_id)
    sw = sweeps.Sweep(path)
    for m in sw.members:
        append_member_rows(m.run, 0, rows, final_acc(m.cell, m.seed),
                           final_val(m.cell, m.seed) if val else None, float(m.cell[0]))
        write_state(m.run, "finished" if rows >= steps else state, rows, steps, sw.id, pid)
    runs.write_json_atomic(sw.file(runs.STATE), {
        "state": state, "pid": pid, "mode": "threads", "members": len(sw.members),
        "done": rows * len(sw.members), "total": steps * len(sw.members)})
    return sw


def expected(sw: sweeps.Sweep, cell: tuple, metric: str = "train") -> tuple[float, float, int]:
    """mean, population std, seeds ≥ threshold of a cell, from the chosen finals."""
    f = final_acc if metric == "train" else final_val
    v = np.array([f(m.cell, m.seed) for m in sw.members_of(cell)])
    return float(v.mean()), float(v.std()), int((v >= sw.threshold).sum())


@pytest.fixture
def stand_in_engine():
    """A process whose command line names dlf_tui.engine (liveness.engine_alive: live)."""
    procs = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "dlf_tui.engine"])
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


async def shown(pilot, min_updates: int = 1) -> SweepScreen:
    for _ in range(500):
        scr = pilot.app.screen
        if isinstance(scr, SweepScreen) and scr.updates >= min_updates:
            await pilot.pause()
            return scr
        await pilot.pause(0.02)
    raise AssertionError("the sweep view never showed the sweep")


def heat_text(hm: Heatmap) -> str:
    console = Console(width=hm.size.width, record=True, file=io.StringIO())
    console.print(hm.render())
    return console.export_text()


# ---------------------------------------------------------------------------------------------
@sync
async def test_heatmap_shows_each_cells_mean_and_the_table_agrees(isolated):
    sw = fake_sweep(isolated / "runs")
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = await shown(pilot)
        hm = scr.query_one(Heatmap)
        assert len(hm.rows) == len(AMPS) and len(hm.cols) == len(PERIODS)
        for r, a in enumerate(AMPS):
            for c, p in enumerate(PERIODS):
                mean, std, k = expected(sw, (a, p))
                cell = hm.cell(r, c)
                assert cell.n == 3 and cell.hits == k
                assert math.isclose(cell.mean, mean, abs_tol=1e-9), (a, p)
                assert math.isclose(cell.std, std, abs_tol=1e-9)
        text = heat_text(hm)
        for a in AMPS:  # the cell text: mean, ± std and k/n, each at 3 decimals
            for p in PERIODS:
                mean, std, k = expected(sw, (a, p))
                assert f"{mean:.3f}" in text and f"±{std:.3f}" in text and f"{k}/3" in text
        table = scr.query_one("#sweep-table")
        assert table.row_count == len(AMPS) * len(PERIODS)
        mean, std, _ = expected(sw, (70.0, 500))
        row = table.get_row(sw.label((70.0, 500)))
        assert f"{mean:.3f}±{std:.3f}" in row and "3/3" in row
        status = str(scr.query_one("#sweep-status").render())
        total = f"{400 * len(sw.members):,}"
        for part in (SWEEP_ID, "fake", "FINISHED", "mode threads", f"{total}/{total} updates (100.0 %)",
                     "threshold 0.8", "18 members"):
            assert part in status, part


@sync
async def test_cursor_moves_in_step_with_the_table_and_enter_opens_the_cells_members(isolated):
    sw = fake_sweep(isolated / "runs")
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = await shown(pilot)
        hm, table = scr.query_one(Heatmap), scr.query_one("#sweep-table")
        assert hm.has_focus and hm.cursor == (0, 0)
        await pilot.press("down", "down", "right")
        assert hm.cursor == (2, 1) and scr.current_cell() == (70.0, 500)
        assert table.cursor_row == table.get_row_index(sw.label((70.0, 500)))
        await pilot.press("enter")
        for _ in range(200):
            if isinstance(app.screen, CompareScreen) and app.screen.loaded:
                break
            await pilot.pause(0.02)
        cmp = app.screen
        assert isinstance(cmp, CompareScreen)
        want = {m.run.path for m in sw.members_of((70.0, 500))}
        assert {r.path for r in cmp.runs} == want and len(cmp.runs) == 3
        assert cmp.labels == [f"seed {m.seed}" for m in sw.members_of((70.0, 500))]
        await pilot.press("escape")
        assert app.screen is scr
        # the table drives the heatmap too
        table.focus()
        await pilot.press("up")
        assert hm.cursor == (2, 0)
        await pilot.press("enter")
        for _ in range(200):
            if isinstance(app.screen, CompareScreen):
                break
            await pilot.pause(0.02)
        assert {r.path for r in app.screen.runs} == {m.run.path for m in sw.members_of((70.0, 100))}


@sync
async def test_train_val_toggle_changes_the_numbers(isolated):
    sw = fake_sweep(isolated / "runs")
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = await shown(pilot)
        hm = scr.query_one(Heatmap)
        train = expected(sw, (10.0, 100))[0]
        val = expected(sw, (10.0, 100), "val")[0]
        assert math.isclose(hm.cell(1, 0).mean, train, abs_tol=1e-9)
        await pilot.press("v")
        assert scr.metric == "val" and "held-out" in hm.border_title
        assert math.isclose(hm.cell(1, 0).mean, val, abs_tol=1e-9)
        assert f"{val:.3f}" in heat_text(hm) and f"{train:.3f}" not in heat_text(hm)
        await pilot.press("v")
        assert math.isclose(hm.cell(1, 0).mean, train, abs_tol=1e-9)


@sync
async def test_a_third_axis_is_sliced_and_the_table_follows(isolated):
    sw = fake_sweep(isolated / "runs", seeds=2, third=True)
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = await shown(pilot)
        hm = scr.query_one(Heatmap)
        assert "kind=triangle" in hm.border_title and "slice 1/2" in hm.border_title
        assert math.isclose(hm.cell(0, 0).mean, expected(sw, (1.0, 100, "triangle"))[0], abs_tol=1e-9)
        await pilot.press("n")
        assert "kind=sine" in hm.border_title
        assert math.isclose(hm.cell(0, 0).mean, expected(sw, (1.0, 100, "sine"))[0], abs_tol=1e-9)
        table = scr.query_one("#sweep-table")
        assert table.cursor_row == table.get_row_index(sw.label((1.0, 100, "sine")))
        assert table.row_count == len(AMPS) * len(PERIODS) * len(KINDS)


@sync
async def test_one_axis_is_one_row(isolated):
    base = config.apply_overrides(config.Config(name="one"), [
        "run.steps=100", "run.device=cpu", "data.val_seed=-1", "model.hidden=[16]"])
    sw = sweeps.create(sweeps.plan(base, ["schedule.amplitude=1,70"], seeds=2), isolated / "runs")
    for m in sw.members:
        append_member_rows(m.run, 0, 100, 0.6 if m.cell == (1.0,) else 0.9 + 0.02 * m.seed, None)
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)
    async with app.run_test(size=(80, 24)) as pilot:
        scr = await shown(pilot)
        hm = scr.query_one(Heatmap)
        assert hm.rows == [""] and hm.cols == ["1", "70"] and hm.corner == "amplitude"
        assert math.isclose(hm.cell(0, 0).mean, 0.6) and math.isclose(hm.cell(0, 1).mean, 0.91)
        await pilot.press("down", "right")
        assert hm.cursor == (0, 1)
        await pilot.press("enter")
        for _ in range(200):
            if isinstance(app.screen, CompareScreen):
                break
            await pilot.pause(0.02)
        assert {r.path for r in app.screen.runs} == {m.run.path for m in sw.members_of((70.0,))}


@sync
async def test_growing_member_files_update_the_heatmap(isolated):
    sw = fake_sweep(isolated / "runs", rows=200, steps=400, state="running")
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = await shown(pilot)
        hm = scr.query_one(Heatmap)
        cell = (1.0, 100)
        assert math.isclose(hm.cell(0, 0).mean, expected(sw, cell)[0], abs_tol=1e-9)
        before = scr.updates
        # the engine trains on: each member of the cell reaches 0.99 at update 400
        for m in sw.members_of(cell):
            append_member_rows(m.run, 200, 400, 0.99, 0.97)
            write_state(m.run, "finished", 400, 400, sw.id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not math.isclose(hm.cell(0, 0).mean, 0.99, abs_tol=1e-9):
            await pilot.pause(0.05)
        assert math.isclose(hm.cell(0, 0).mean, 0.99, abs_tol=1e-9) and scr.updates > before
        row = scr.query_one("#sweep-table").get_row(sw.label(cell))
        assert "0.990±0.000" in row and "3/3" in row and "400" in row
        # the untouched cells are unchanged
        assert math.isclose(hm.cell(2, 1).mean, expected(sw, (70.0, 500))[0], abs_tol=1e-9)


@sync
async def test_stop_asks_then_sends_sigterm_to_the_sweep_engine(isolated, stand_in_engine):
    proc = stand_in_engine()
    sw = fake_sweep(isolated / "runs", state="running", pid=proc.pid)
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = await shown(pilot)
        assert "RUNNING" in str(scr.query_one("#sweep-status").render())
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause(0.2)
        assert proc.poll() is None
        await pilot.press("s")
        await pilot.press("y")
        proc.wait(timeout=10)
        assert proc.returncode == -15


@sync
async def test_the_picker_lists_a_live_sweep_and_opens_it(isolated, stand_in_engine):
    proc = stand_in_engine()
    sw = fake_sweep(isolated / "runs", state="running", pid=proc.pid)
    app = DlfApp(runs_dir=isolated / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(200):
            picker = app.screen
            if isinstance(picker, PickerScreen) and picker.live_runs:
                break
            await pilot.pause(0.02)
        assert [r.id for r in picker.live_runs] == [sw.id]
        picker.query_one("#run-list").focus()
        await pilot.press("enter")
        scr = await shown(pilot)
        assert scr.sweep.path == sw.path


@sync
async def test_help_palette_and_small_no_color_terminal(isolated, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    sw = fake_sweep(isolated / "runs")
    app = DlfApp(runs_dir=isolated / "runs", sweep=sw)
    async with app.run_test(size=(80, 24)) as pilot:
        scr = await shown(pilot)
        assert app.monochrome and scr.has_class("-compact")
        hm, table = scr.query_one(Heatmap), scr.query_one("#sweep-table")
        assert hm.region.height >= 2 + len(AMPS) and table.region.height >= 5
        text = heat_text(hm)
        for a in AMPS:
            for p in PERIODS:
                assert f"{expected(sw, (a, p))[0]:.3f}" in text
        assert any(ch in text for ch in "░▒▓█")  # the shading glyphs carry the scale
        shown_keys = [b for b in SweepScreen.BINDINGS if b.show]
        titles = [c.title for c in app.get_system_commands(scr)]
        assert all(b.tooltip.split(": ")[0] in titles for b in shown_keys)  # each key, from its binding
        assert len(titles) == len(set(titles))
        before = scr.metric
        cmd = next(c for c in app.get_system_commands(scr) if c.title.startswith("Toggle train"))
        await cmd.callback()
        await pilot.pause()
        assert scr.metric != before
        await pilot.press("ctrl+p")  # Textual's palette opens on this screen (and lists ours)
        assert isinstance(app.screen, CommandPalette)
        await pilot.press("escape")
        assert app.screen is scr
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=100, record=True, file=io.StringIO())
        console.print(key_table(scr))
        help_text = console.export_text()
        assert all(b.description in help_text for b in shown_keys)
        await pilot.press("escape")
        await pilot.press("q")  # leaves; the sweep keeps running (nothing is sent)
        await pilot.pause()
    assert app.return_code == 0
