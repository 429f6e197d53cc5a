"""The engine process end to end: real process, real socket, tiny CPU runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from dlf_tui.wire import protocol
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.cli.main import app
from dlf_tui.core.schedule import Schedule

from .conftest import tiny_config

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def events(run, kind=None):
    evs = runs.Run(run.path).events()
    return [e for e in evs if kind is None or e["kind"] == kind]


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_ctl_set_pause_resume_stop_and_export(start_run, tmp_path):
    live = start_run(tiny_config("data.val_seed=1", "data.eval_every=50"))
    live.wait_rows(300)
    r = cli("ctl", live.path, "set", "amplitude=3", "period=80", "lr=0.5")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ok: amplitude=3 period=80 lr=0.5")
    [ev] = events(live, "set")
    edit_step = ev["step"]
    assert ev["changes"] == {"amplitude": 3.0, "period": 80, "lr": 0.5}

    # pause: rows stop growing and the state says so
    assert cli("ctl", live.path, "pause").exit_code == 0
    n = live.run.rows()
    time.sleep(0.4)
    assert live.run.rows() == n
    assert live.run.state()["state"] == "paused"
    assert "paused" in cli("runs", "--runs-dir", live.path.parent).stdout
    assert cli("ctl", live.path, "resume").exit_code == 0
    live.wait_rows(n + 200)

    assert cli("ctl", live.path, "stop").exit_code == 0
    assert live.wait_exit() == 0
    st = live.run.state()
    assert st["state"] == "stopped"
    assert any(live.path.glob("checkpoints/step-*.pt"))
    kinds = [e["kind"] for e in events(live)]
    for k in ("start", "set", "pause", "resume", "checkpoint", "stop"):
        assert k in kinds

    out = tmp_path / "m.csv"
    r = cli("export", live.path, "--csv", out)
    assert r.exit_code == 0, r.output
    rows = read_csv(out)
    assert len(rows) == live.run.rows()
    header = list(rows[0].keys())
    assert header[:13] == ["step", "loss_dynamical", "loss_ce", "accuracy", "accuracy_class_0",
                           "accuracy_class_1", "accuracy_class_2", "gamma_0", "gamma_1", "gamma_2",
                           "amplitude", "period", "lr"]
    assert header[13:] == ["val_loss_ce", "val_accuracy", "val_accuracy_class_0",
                           "val_accuracy_class_1", "val_accuracy_class_2",
                           "hessian_lambda_max", "ntk_lambda_max", "grad_norm"]
    assert all(r["hessian_lambda_max"] == "" for r in rows)  # diagnostics were off
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(1, len(rows) + 1))
    amp = np.array([float(r["amplitude"]) for r in rows])
    per = np.array([int(r["period"]) for r in rows])
    lr = np.array([float(r["lr"]) for r in rows])
    before, after = slice(0, edit_step - 1), slice(edit_step - 1, None)
    assert (amp[before] == 10).all() and (amp[after] == 3).all()
    assert (per[before] == 50).all() and (per[after] == 80).all()
    assert (lr[before] == 1.0).all() and (lr[after] == 0.5).all()
    # Γ columns are exactly the phase-continuous schedule with the edit applied
    sch = Schedule.create("triangle", 10, 50, 3, 10**6, True)
    g1, _, _ = sch.table(edit_step - 1)
    sch.advance(edit_step - 1)
    sch.set_amplitude(3)
    sch.set_period(80)
    g2, _, _ = sch.table(len(rows) - edit_step + 1)
    gam = np.array([[float(r[f"gamma_{i}"]) for i in range(3)] for r in rows])
    np.testing.assert_allclose(gam, np.concatenate([g1, g2]), rtol=0, atol=1e-15)
    # validation cells only on evaluation rows (update 1 and every 50)
    evald = [int(r["step"]) for r in rows if r["val_accuracy"] != ""]
    assert evald[:3] == [1, 50, 100]
    assert all(r["val_accuracy"] == "" for r in rows if int(r["step"]) not in evald)


def _raw(path, line: bytes) -> protocol.Reply:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path / runs.SOCKET))
    f = s.makefile("rb")
    protocol.decode_any(f.readline())  # hello
    s.sendall(line)
    while True:
        msg = protocol.decode_any(f.readline())
        if isinstance(msg, protocol.Reply):
            s.close()
            return msg


def test_refused_commands_leave_the_run_untouched(start_run):
    live = start_run(tiny_config())
    live.wait_rows(100)
    # refused by the CLI before anything is sent
    r = cli("ctl", live.path, "set", "amplitude=0.5")
    assert r.exit_code == 2 and "amplitude" in r.stderr and ">= 1" in r.stderr
    r = cli("ctl", live.path, "jump")
    assert r.exit_code == 2 and "unknown command 'jump'" in r.stderr
    # refused by the engine itself (raw socket, bypassing client-side checks)
    for line, why in [(b'{"type":"set","id":7,"values":{"amplitude":0.5}}\n', "amplitude"),
                      (b'{"type":"set","id":8,"values":{"warp":1}}\n', "unknown parameter"),
                      (b'{"type":"fly","id":9}\n', "unknown message type"),
                      (b'not json\n', "invalid JSON")]:
        reply = _raw(live.path, line)
        assert not reply.ok and why in reply.error
    assert len(events(live, "refused")) == 4
    n = live.run.rows()
    live.wait_rows(n + 100)  # still training
    assert live.run.state()["state"] == "running"
    assert not events(live, "set")
    cfgrows = live.run.read()
    assert (cfgrows[:, live.run.columns().index("amplitude")] == 10).all()


def test_finished_run_and_runs_listing(tmp_path):
    cfg = tiny_config("run.steps=300", "data.val_seed=2", "data.eval_every=100")
    run = runs.create_run(cfg, tmp_path / "runs")
    proc = launch.spawn_run_engine(run)
    assert proc.wait(60) == 0
    st = run.state()
    assert st["state"] == "finished" and st["step"] == 300
    assert run.rows() == 300 and run.rows("eval") == 4  # updates 1, 100, 200, 300
    out = cli("runs", "--runs-dir", tmp_path / "runs").stdout
    assert run.id in out and "finished" in out and "300/300" in out
    last = run.last_row()
    assert 0.0 <= last["accuracy"] <= 1.0 and last["step"] == 300


def test_kill_9_is_reported_as_crashed(start_run):
    live = start_run(tiny_config())
    live.wait_rows(50)
    os.killpg(live.proc.pid, signal.SIGKILL)
    live.proc.wait(10)
    assert live.run.state()["state"] == "crashed"
    r = cli("ctl", live.path, "pause")
    assert r.exit_code == 1 and "crashed" in r.stderr


def test_sigterm_checkpoints_then_stops(start_run):
    live = start_run(tiny_config())
    live.wait_rows(50)
    os.killpg(live.proc.pid, signal.SIGTERM)
    assert live.wait_exit() == 0
    assert live.run.state()["state"] == "stopped"
    assert any(live.path.glob("checkpoints/step-*.pt"))


def test_missing_cuda_fails_at_start_with_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli("run", "spiral-fig4", "--runs-dir", tmp_path / "r",
            "--device", "cuda", "--steps", "10")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "error: run.device = cuda: CUDA is not available on this machine (use cpu or auto)"]
    [run] = runs.list_runs(tmp_path / "r")
    assert run.rows() == 0 and run.state()["state"] == "crashed"


def test_headless_run_prints_lines_and_summary(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "dlf_tui", "run", "spiral-fig4", "--runs-dir",
                        str(tmp_path / "r"), "--steps", "1200", "--set", "schedule.period=499"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    period_lines = [l for l in lines if l.startswith("update ")]
    assert [l.split()[1] for l in period_lines] == ["500/1200", "1000/1200", "1200/1200"]
    assert any(l.startswith("finished: ") for l in lines)
    assert "run directory:" in r.stdout


@pytest.mark.parametrize("opt", [["optim.name=adam", "optim.lr=0.05", "data.batch_size=32"],
                                 ["optim.name=sgd", "optim.momentum=0.9", "optim.lr=0.05",
                                  "data.batch_size=30"],
                                 ["model.init=torch", "run.fused=false", "model.hidden=[16,16]"]])
def test_other_optimisers_and_paths_train(tmp_path, opt):
    cfg = tiny_config("run.steps=600", "schedule.amplitude=1", "run.dtype=float32",
                      "data.turns=0.5", *opt)  # a short spiral: learnable in 600 updates
    run = runs.create_run(cfg, tmp_path / "runs")
    assert launch.spawn_run_engine(run).wait(60) == 0, launch.engine_failure(run)
    m = run.read()
    cols = run.columns()
    ce = m[:, cols.index("loss_ce")]
    assert np.isfinite(ce).all()
    assert ce[-50:].mean() < 0.93 * ce[:10].mean()  # it learns
    assert "AutogradStep" in (run.path / "engine.log").read_text()


def test_ctrl_c_stops_headless_cleanly(tmp_path):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "dlf_tui", "run", "spiral-fig4", "--runs-dir",
                          str(tmp_path / "r"), "--set", "schedule.period=99"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = runs.list_runs(tmp_path / "r")
        if found and found[0].rows() > 500:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    [run] = runs.list_runs(tmp_path / "r")
    assert run.state()["state"] == "stopped"
    assert "stopped: " in out and "Traceback" not in err
    assert 500 < run.rows() < 70000
    assert run.last_row()["step"] == run.rows()


def test_the_static_tail_event_is_dated_at_its_first_update(tmp_path):
    """Periods of T+1 = 501 updates end at 501, 1002, …, 2505; the first boundary after
    step > 3000 − 500 is 2505, so update 2506 is the first plain-CE one — however the
    updates fall into chunks."""
    from dlf_tui.engine.loops.single import SingleRun

    cfg = tiny_config("run.steps=3000", "schedule.period=500", "schedule.amplitude=30",
                      "schedule.last_period_static=true", "run.flush_every=700")
    run = runs.create_run(cfg, tmp_path / "runs")
    e = SingleRun(run.path, serve=False)
    try:
        assert e.run() == 0
    finally:
        e.close()
    [tail] = events(run, "static_tail")
    assert tail["step"] == 2506 and "from update 2506" in tail["message"]
    m = runs.Run(run.path).read("metrics")
    amp = m[:, runs.Run(run.path).columns().index("amplitude")]
    assert amp[2504] == 30 and (amp[2505:] == 1).all()  # rows of updates 2505 and 2506 on
