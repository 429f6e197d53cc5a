"""The sweep command line: sweep, sweeps, attach/compare/ctl/export on sweeps.

Most tests use fake sweep directories: ``sweeps.plan``/``create`` make the real
layout, and the members' series are written here through ``runs.SeriesWriter``
with known final values, so every number the commands print or write can be
checked against values computed independently here.  One test runs a tiny real
sweep end to end through the CLI and its engine.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from dlf_tui.cli import main as cli
from dlf_tui.core import config
from dlf_tui.store import launch
from dlf_tui.store import run as runs, sweep as sweeps
from dlf_tui.cli.main import app

from .conftest import tiny_config

runner = CliRunner()
AXES = ("schedule.amplitude=1,10", "schedule.period=50,80")
THR = 0.9
STEPS = 100


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(r, code: int = 2, text: str = "") -> None:
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert text in lines[0], lines[0]


def write_member(run: runs.Run, acc: float, val: float | None, state: str = "finished",
                 steps: int = STEPS, sweep_id: str = "") -> tuple[float, float]:
    """Metrics (and eval) series ending at ``acc`` (and ``val``); returns the final (F, CE)."""
    classes = 3
    cols = (["step", "loss_dynamical", "loss_ce", "accuracy"]
            + [f"accuracy_class_{i}" for i in range(classes)]
            + [f"gamma_{i}" for i in range(classes)] + ["amplitude", "period", "lr", "grad_norm"])
    st = np.arange(1, steps + 1, dtype=np.float64)
    a = np.linspace(0.3, acc, steps)
    ce = 1.0 / st + acc / 10
    f = 1.5 * ce
    rows = np.column_stack([st, f, ce, a, a, a, a, np.ones((steps, classes)), np.full_like(st, 10),
                            np.full_like(st, 50), np.ones_like(st), 0.1 / st])
    w = runs.SeriesWriter(run.path, "metrics", cols)
    w.append(rows[: steps // 2])
    w.append(rows[steps // 2:])
    w.close()
    if val is not None:
        es = np.array([1.0, steps / 2, steps])
        ev = np.column_stack([es, [1.0, 0.5, 0.2], [0.3, 0.5, val]] + [[0.3, 0.5, val]] * classes)
        ew = runs.SeriesWriter(run.path, "eval", ["step", "val_loss_ce", "val_accuracy"]
                               + [f"val_accuracy_class_{i}" for i in range(classes)])
        ew.append(ev)
        ew.close()
    runs.write_json_atomic(run.file(runs.STATE), {
        "state": state, "pid": 0, "step": steps, "total": steps, "sweep": sweep_id})
    return float(f[-1]), float(ce[-1])


def fake_sweep(runs_dir: Path, axes=AXES, seeds: int = 3, state: str = "finished",
               seed: int = 0, evaluated=lambda cell: cell[:2] != (1.0, 50)) -> tuple[sweeps.Sweep, dict]:
    """A sweep whose members have known finals.  Cells not ``evaluated`` (by default
    amplitude 1, period 50) have no held-out evaluations; the last member never
    started (no files: pending)."""
    cfg = tiny_config(f"run.steps={STEPS}")
    sw = sweeps.create(sweeps.plan(cfg, list(axes), seeds, THR), runs_dir)
    rng = np.random.default_rng(seed)
    truth = {}
    for k, m in enumerate(sw.members):
        if k == len(sw.members) - 1:
            truth[m.id] = None
            continue
        acc = float(rng.choice([0.8, 0.9, 0.95, 1.0]) - rng.uniform(0, 0.05) * (k % 2))
        val = float(rng.uniform(0.7, 1.0)) if evaluated(m.cell) else None
        F, CE = write_member(m.run, acc, val, sweep_id=sw.id)
        truth[m.id] = {"acc": acc, "val": val, "F": F, "CE": CE}
    runs.write_json_atomic(sw.file(runs.STATE), {"state": state, "pid": 0, "mode": "threads",
                                                "started": 0.0, "ended": 1.0, "reason": ""})
    return sweeps.Sweep(sw.path), truth


@pytest.fixture
def rdir(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def ui_calls(monkeypatch):
    """Replace the TUI: record the keyword arguments ``_ui`` was called with."""
    calls = []

    def fake_ui(**kw):
        calls.append(kw)
        raise typer.Exit(0)

    monkeypatch.setattr(cli, "_ui", fake_ui)
    return calls


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------
# sweep: refusals create nothing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, text", [
    (["--set", "schedule.amplitude=abc,1"], "schedule.amplitude"),
    (["--set", "nosuch.key=1,2"], "expected section.key"),
    (["--set", "schedule.amplitude=1,1"], "listed twice"),
    (["--set", "run.seed=1,2"], "use --seeds"),
    (["--set", "schedule.amplitude"], "expected KEY=VALUE"),
    (["--set", "schedule.amplitude=1,,2"], "empty value"),
    (["--seeds", "0"], "--seeds 0"),
    (["--seeds", "5000"], "--seeds 5000"),
    (["--threshold", "0"], "--threshold 0"),
    (["--threshold", "1.5"], "--threshold 1.5"),
    (["--threshold", "nan"], "--threshold nan"),
    (["--set", "model.hidden=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", "--seeds", "300"], "at most 4096"),
    (["--steps", "0"], "run.steps"),
    (["--device", "tpu"], "run.device"),
])
def test_sweep_refuses_bad_input_and_creates_nothing(tmp_path, rdir, args, text):
    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config("run.steps=50")))
    r = invoke("sweep", preset, "--runs-dir", rdir, *args)
    one_line_error(r, 2, text)
    assert not rdir.exists()


def test_sweep_refuses_unknown_preset_and_unparsable_options(tmp_path, rdir):
    one_line_error(invoke("sweep", "no-such-preset", "--runs-dir", rdir), 2, "no-such-preset")
    assert not rdir.exists()
    # options click itself refuses: one line too, through the real entry point
    for args in (["--seeds", "abc"], ["--threshold", "x"]):
        p = subprocess.run([sys.executable, "-m", "dlf_tui", "sweep", "spiral-fig4", "--runs-dir",
                            str(rdir), *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: "), p.stderr
    assert not rdir.exists()


def test_sweep_ui_spawns_the_engine_and_opens_the_sweep_view(tmp_path, rdir, ui_calls, monkeypatch):
    spawned = []
    monkeypatch.setattr(launch, "spawn_sweep_engine", lambda sw, resume=False: spawned.append(sw.path))
    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config("run.steps=50")))
    r = invoke("sweep", preset, "--set", "schedule.amplitude=1,10", "--set", "schedule.period=50,80,90",
               "--seeds", "2", "--ui", "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    [sw] = sweeps.list_sweeps(rdir)
    assert spawned == [sw.path] and ui_calls[-1]["sweep"].path == sw.path
    assert r.stdout.splitlines()[:4] == [
        f"sweep {sw.id}: tiny, 6 cells × 2 seeds = 12 members (threshold 0.95) -> {sw.path}",
        "  schedule.amplitude: 1, 10", "  schedule.period: 50, 80, 90", "  seeds: 0, 1"]


def test_cli_side_imports_neither_torch_nor_matplotlib():
    code = ("import sys, dlf_tui.cli.main, dlf_tui.cli.follow_sweep, dlf_tui.export.csv, dlf_tui.export.png, dlf_tui.store.sweep\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'textual'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# sweeps / runs
# ---------------------------------------------------------------------------


def test_sweeps_lists_and_runs_mentions_them(rdir):
    r = invoke("sweeps", "--runs-dir", rdir)
    assert r.exit_code == 0 and r.stdout.strip() == f"no sweeps under {rdir}"
    sw, truth = fake_sweep(rdir)
    r = invoke("sweeps", "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    header, line = r.stdout.strip().splitlines()
    assert header.split() == ["id", "preset", "state", "cells", "finished", "progress"]
    # 12 members of 100 updates, 11 written: 1100/1200
    assert line.split() == [sw.id, "tiny", "finished", "4", "11/12", f"{100 * 1100 / 1200:.1f}%"]
    r = invoke("runs", "--runs-dir", rdir)
    assert r.exit_code == 0
    assert r.stdout.strip() == f"no runs under {rdir}; 1 sweep under {rdir}: dlf-tui sweeps"


# ---------------------------------------------------------------------------
# export SWEEP --csv / --png
# ---------------------------------------------------------------------------


def _num(text: str) -> float:
    return float("nan") if text == "" else float(text)


def test_export_sweep_csv_matches_the_members(rdir, tmp_path):
    sw, truth = fake_sweep(rdir)
    out = tmp_path / "summary.csv"
    r = invoke("export", sw.id, "--csv", out, "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    members_out = tmp_path / "summary-members.csv"
    assert r.stdout.strip() == f"wrote 4 cells to {out} and 12 members to {members_out}"

    rows = read_csv(out)
    assert list(rows[0]) == ["schedule.amplitude", "schedule.period", "seeds", "finished", "train_mean",
                             "train_std", "train_frac", "val_mean", "val_std", "val_frac", "threshold"]
    by_cell: dict[tuple, list[str]] = {}
    for m in sw.members:
        by_cell.setdefault(m.cell, []).append(m.id)
    assert [(float(r["schedule.amplitude"]), int(r["schedule.period"])) for r in rows] == list(by_cell)
    for row, (cell, ids) in zip(rows, by_cell.items()):
        done = [truth[i] for i in ids if truth[i] is not None]
        acc = np.array([d["acc"] for d in done])
        assert int(row["seeds"]) == 3 and int(row["finished"]) == len(done)
        assert _num(row["train_mean"]) == pytest.approx(acc.mean(), rel=1e-12)
        assert _num(row["train_std"]) == pytest.approx(acc.std(), rel=1e-9, abs=1e-15)
        assert _num(row["train_frac"]) == pytest.approx(np.mean(acc >= THR))
        assert float(row["threshold"]) == THR
        if cell == (1.0, 50):
            assert row["val_mean"] == row["val_std"] == row["val_frac"] == ""
        else:
            val = np.array([d["val"] for d in done])
            assert _num(row["val_mean"]) == pytest.approx(val.mean(), rel=1e-12)
            assert _num(row["val_std"]) == pytest.approx(val.std(), rel=1e-9, abs=1e-15)
            assert _num(row["val_frac"]) == pytest.approx(np.mean(val >= THR))
    # the fractions are not all 0 or 1: the test data straddles the threshold
    assert any(0 < _num(r["train_frac"]) < 1 for r in rows)

    mrows = read_csv(members_out)
    assert list(mrows[0]) == ["member", "schedule.amplitude", "schedule.period", "seed", "state", "step",
                              "loss_dynamical", "loss_ce", "train_accuracy", "val_accuracy",
                              "loss_mse"]
    assert [r["member"] for r in mrows] == [m.id for m in sw.members]
    for row, m in zip(mrows, sw.members):
        t = truth[m.id]
        assert (float(row["schedule.amplitude"]), int(row["schedule.period"]), int(row["seed"])) == \
            (m.cell[0], m.cell[1], m.seed)
        if t is None:
            assert row["state"] == "pending"
            assert row["step"] == row["loss_dynamical"] == row["train_accuracy"] == row["val_accuracy"] == ""
            continue
        assert row["state"] == "finished" and int(row["step"]) == STEPS
        assert float(row["train_accuracy"]) == t["acc"]  # repr round-trips exactly
        assert float(row["loss_dynamical"]) == t["F"] and float(row["loss_ce"]) == t["CE"]
        assert row["val_accuracy"] == ("" if t["val"] is None else repr(t["val"]))
    assert sorted(int(r["seed"]) for r in mrows[:3]) == list(sw.seeds)


def test_export_sweep_csv_list_valued_axis(rdir, tmp_path):
    sw, _ = fake_sweep(rdir, axes=("model.hidden=[4,4],8",), seeds=2)
    out = tmp_path / "s.csv"
    assert invoke("export", sw.path, "--csv", out).exit_code == 0
    assert [r["model.hidden"] for r in read_csv(out)] == ["[4, 4]", "[8]"]


def _png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


@pytest.mark.parametrize("axes, panels", [
    (AXES, 2),                                                   # 2 axes: train + validation
    (("schedule.amplitude=1,10,30",), 2),                         # 1 axis: one row each
    (AXES + ("optim.lr=0.5,1",), 4),                              # a third axis: a row per lr
    (AXES + ("run.steps=100",), 2),                               # a one-valued axis adds nothing
])
def test_export_sweep_png(rdir, tmp_path, axes, panels):
    sw, _ = fake_sweep(rdir, axes=axes, seeds=2)
    out = tmp_path / "heat.png"
    r = invoke("export", sw.path, "--png", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"wrote {panels} heatmaps to {out}"
    _png_ok(out)


def test_export_sweep_png_train_only_and_refusals(rdir, tmp_path, monkeypatch):
    sw, _ = fake_sweep(rdir, axes=("schedule.amplitude=1",), seeds=3, evaluated=lambda c: False)
    out = tmp_path / "one.png"
    r = invoke("export", sw.path, "--png", out)
    assert r.exit_code == 0 and r.stdout.strip() == f"wrote 1 heatmap to {out}"
    _png_ok(out)
    one_line_error(invoke("export", sw.path, "--png", out, "--window", "1:50"), 2, "is a sweep")
    one_line_error(invoke("export", sw.path, "--csv", tmp_path / "no" / "dir.csv"), 2, "cannot write")
    empty = sweeps.create(sweeps.plan(tiny_config(), ["schedule.amplitude=1,2"], 1, THR), rdir)
    one_line_error(invoke("export", empty.path, "--png", out), 2, "no member has metrics yet")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    one_line_error(invoke("export", sw.path, "--png", out), 2, "--png needs matplotlib")


# ---------------------------------------------------------------------------
# attach / compare
# ---------------------------------------------------------------------------


def test_attach_opens_the_sweep_view_or_a_member(rdir, ui_calls):
    sw, _ = fake_sweep(rdir)
    for spec in (sw.id, sw.id[:17], str(sw.path)):
        assert invoke("attach", spec, "--runs-dir", rdir).exit_code == 0
        kw = ui_calls.pop()
        assert isinstance(kw["sweep"], sweeps.Sweep) and kw["sweep"].path == sw.path
        assert "attach" not in kw
    m = sw.members[0]
    for spec in (str(m.run.path), f"{sw.id}/{m.id}"):
        assert invoke("attach", spec, "--runs-dir", rdir).exit_code == 0
        kw = ui_calls.pop()
        assert kw["attach"].path == m.run.path and "sweep" not in kw
    one_line_error(invoke("attach", "nope", "--runs-dir", rdir), 2, "no run 'nope'")


def test_attach_prefix_naming_a_run_and_a_sweep_is_ambiguous(rdir, ui_calls):
    sw, _ = fake_sweep(rdir)
    stamp = sw.id.split("-sweep-")[0]
    (rdir / f"{stamp}-x").mkdir()  # a run started in the same second as the sweep
    (rdir / f"{stamp}-x" / runs.CONFIG).write_text(config.to_toml(tiny_config(name="x")))
    one_line_error(invoke("attach", stamp, "--runs-dir", rdir), 2, "ambiguous")


def test_compare_runs_and_a_sweep_cell(rdir, ui_calls):
    sw, _ = fake_sweep(rdir)
    a, b = sw.members[0].run, sw.members[4].run
    assert invoke("compare", a.path, f"{sw.id}/{b.id}", "--runs-dir", rdir).exit_code == 0
    assert [r.path for r in ui_calls.pop()["compare"]] == [a.path, b.path]
    # a cell: by short or full key, value as written or as stored (10 == 10.0)
    want = [m.run.path for m in sw.members if m.cell == (10.0, 80)]
    for cell in ("amplitude=10 period=80", "schedule.period=80 schedule.amplitude=10.0"):
        r = invoke("compare", sw.id, "--cell", cell, "--runs-dir", rdir)
        assert r.exit_code == 0, r.output
        assert [x.path for x in ui_calls.pop()["compare"]] == want
    # a cell plus another run
    assert invoke("compare", sw.id, a.path, "--cell", "amplitude=10 period=80",
                  "--runs-dir", rdir).exit_code == 0
    assert len(ui_calls.pop()["compare"]) == 4


def test_compare_refusals(rdir, ui_calls):
    sw, _ = fake_sweep(rdir)
    a = sw.members[0].run
    cases = [
        (["nope", a.path], "no run 'nope'"),
        ([a.path], "at least 2 runs (got 1)"),
        ([a.path, a.path], "listed twice"),
        ([sw.id], "is a sweep: pick one cell with --cell"),
        ([sw.id, "--cell", "amplitude=10"], "give period too"),
        ([sw.id, "--cell", "amplitude=3 period=80"], "amplitude is one of 1, 10"),
        ([sw.id, "--cell", "lr=1 amplitude=10 period=80"], "not an axis"),
        ([sw.id, "--cell", "amplitude=1,10 period=80"], "one value"),
        ([sw.id, "--cell", "amplitude"], "expected KEY=VALUE"),
        ([a.path, sw.members[1].run.path, "--cell", "amplitude=1"], "--cell needs a sweep"),
    ]
    for args, text in cases:
        one_line_error(invoke("compare", *args, "--runs-dir", rdir), 2, text)
    one_seed, _ = fake_sweep(rdir / "b", axes=("schedule.amplitude=1,2",), seeds=1)
    one_line_error(invoke("compare", one_seed.path, "--cell", "amplitude=1"), 2, "got 1")
    many, _ = fake_sweep(rdir / "c", axes=("schedule.amplitude=1",), seeds=33)
    one_line_error(invoke("compare", many.path, "--cell", "amplitude=1"), 2, "at most 32 runs (got 33)")
    assert ui_calls == []


# ---------------------------------------------------------------------------
# ctl SWEEP stop
# ---------------------------------------------------------------------------


def test_ctl_on_a_sweep(rdir):
    sw, _ = fake_sweep(rdir)
    one_line_error(invoke("ctl", sw.id, "pause", "--runs-dir", rdir), 2, "sweeps accept only stop")
    one_line_error(invoke("ctl", sw.id, "set", "amplitude=3", "--runs-dir", rdir), 2, "only stop")
    one_line_error(invoke("ctl", sw.id, "stop", "--runs-dir", rdir), 1, "is not running (state finished)")
    # a live "engine": a process whose command line names dlf_tui.engine, as engine_alive checks
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dlf_tui.engine"])
    try:
        runs.write_json_atomic(sw.file(runs.STATE), {"state": "running", "pid": proc.pid})
        assert sw.state()["state"] == "running"
        r = invoke("ctl", sw.id, "stop", "--runs-dir", rdir, "--timeout", "10")
        assert r.exit_code == 0, r.output
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# the headless follower, on a fake engine
# ---------------------------------------------------------------------------


class FakeProc:
    """poll() is None for ``polls`` calls, then ``code``."""

    def __init__(self, polls: int, code: int):
        self.polls, self.code, self.pid = polls, code, 0

    def poll(self):
        self.polls -= 1
        return None if self.polls >= 0 else self.code

    def wait(self, timeout=None):
        return self.code


def test_follow_plain_lines_and_final_table(rdir, capsys):
    from dlf_tui.cli.follow_sweep import follow

    sw, truth = fake_sweep(rdir)
    code = follow(sw, FakeProc(3, 0), interval=0.01, plain_every=0.01)
    out = capsys.readouterr().out
    assert code == 0
    assert "91.7%  1,100/1,200 member-updates  11/12 members finished" in out
    assert f"finished: {sw.id}" in out
    acc = np.array([truth[m.id]["acc"] for m in sw.members_of((1.0, 50))])
    row = next(line for line in out.splitlines() if line.split()[:2] == ["1", "50"])
    assert f"{acc.mean():.3f} ± {acc.std():.3f}" in row
    assert row.split()[2] == "3/3"  # members finished
    assert row.split()[-1] == f"{np.sum(acc >= THR)}/3"  # no validation in this cell: ≥ is last


def test_follow_reports_a_crash(rdir, capsys):
    from dlf_tui.cli.follow_sweep import follow

    sw, _ = fake_sweep(rdir, state="crashed")
    runs.write_json_atomic(sw.file(runs.STATE), {"state": "crashed", "pid": 0,
                                                "reason": "CUDA out of memory"})
    assert follow(sw, FakeProc(0, 1), interval=0.01) == 1
    cap = capsys.readouterr()
    assert cap.err.strip() == "error: CUDA out of memory"
    assert f"crashed: {sw.id}" in cap.out


def test_live_table_fits_the_terminal(rdir):
    from rich.console import Console

    from dlf_tui.cli.follow_sweep import Snapshot, _Rate

    sw, _ = fake_sweep(rdir, axes=("schedule.amplitude=1,2,3,4,5,6,7,8,9,10",), seeds=1)
    console = Console(width=100, record=True, file=open(os.devnull, "w"))
    console.print(Snapshot(sw, _Rate()).renderable(height=8))
    text = console.export_text()
    assert "… 8 more cells" in text and "member-updates" in text
    assert len(text.splitlines()) <= 8


# ---------------------------------------------------------------------------
# end to end: a tiny real sweep through the CLI and the sweep engine
# ---------------------------------------------------------------------------


def test_tiny_real_sweep_end_to_end(tmp_path, rdir):
    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config(name="tiny")))
    r = invoke("sweep", preset, "--set", "schedule.amplitude=1,10", "--seeds", "2", "--steps", "200",
               "--threshold", "0.5", "--device", "cpu", "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    [sw] = sweeps.list_sweeps(rdir)
    assert r.stdout.startswith(f"sweep {sw.id}: tiny, 2 cells × 2 seeds = 4 members (threshold 0.5)")
    assert f"finished: {sw.id}" in r.stdout
    assert sw.state()["state"] == "finished"
    for m in sw.members:
        assert m.run.rows() == 200 and m.run.raw_state()["state"] == "finished"
    out = tmp_path / "s.csv"
    assert invoke("export", sw.id, "--csv", out, "--runs-dir", rdir).exit_code == 0
    rows = read_csv(out)
    assert [r["schedule.amplitude"] for r in rows] == ["1.0", "10.0"]
    for row, cell in zip(rows, sw.cells()):
        acc = [m.run.last_row()["accuracy"] for m in sw.members_of(cell)]
        assert float(row["train_mean"]) == pytest.approx(np.mean(acc), rel=1e-12)
        assert int(row["finished"]) == 2
    line = invoke("sweeps", "--runs-dir", rdir).stdout.splitlines()[1].split()
    assert line[2:] == ["finished", "2", "4/4", "100.0%"]


def test_ctrl_c_stops_a_real_sweep(tmp_path, rdir):
    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config(name="tiny")))
    env = dict(os.environ, DLF_TUI_RUNS_DIR=str(rdir))
    p = subprocess.Popen([sys.executable, "-m", "dlf_tui", "sweep", str(preset), "--set",
                          "schedule.amplitude=1,10", "--seeds", "1", "--device", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            found = sweeps.list_sweeps(rdir)
            if found and all(m.run.rows() > 50 for m in found[0].members):
                break
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the sweep did not start"
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, (out, err)
    [sw] = found
    assert sw.state()["state"] == "stopped"
    assert f"stopped: {sw.id}" in out
    assert all(m.run.raw_state()["state"] == "stopped" for m in sw.members)
