"""dlf_tui.live.Run: a user's own training loop, recorded and steered through the
real socket.  The loop is examples/live_loop.py in a subprocess; ``dlf-tui ctl``
steers it; the exported CSV shows each change at the update it took effect."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlf_tui.cli.main import app
from dlf_tui.core import states
from dlf_tui.store import run as runs

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "live_loop.py"


def ctl(rdir: Path, run: runs.Run, *args: str) -> str:
    r = CliRunner().invoke(app, ["ctl", str(run.path), *args, "--runs-dir", str(rdir)])
    assert r.exit_code == 0, r.output
    return r.output


def start_loop(rdir: Path, *extra: str, steps: int = 10_000_000) -> tuple[subprocess.Popen, runs.Run]:
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--steps", str(steps), "--runs-dir",
                             str(rdir), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line.startswith("run "), line + proc.stderr.read()
    run = runs.Run(Path(line.split(" ", 1)[1].strip()))
    deadline = time.monotonic() + 60
    while not (run.is_live() and run.file(runs.SOCKET).exists() and run.rows() > 200):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    return proc, run


def wait_until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def set_events(run: runs.Run) -> list[dict]:
    return [e for e in run.events() if e["kind"] == "set"]


def test_a_live_loop_is_steered_by_ctl_and_every_change_lands_at_its_update(tmp_path):
    rdir = tmp_path / "runs"
    proc, run = start_loop(rdir)
    try:
        assert run.state()["state"] == states.RUNNING
        cfg = run.config()
        assert cfg.data.name == "external" and cfg.schedule.amplitude == 10
        ctl(rdir, run, "pause")
        wait_until(lambda: run.state()["state"] == states.PAUSED)
        paused_at = run.state()["step"]
        time.sleep(0.5)
        assert run.state()["step"] == paused_at  # the loop waits in run.step()
        ctl(rdir, run, "set", "amplitude=30", "lr=0.25")
        ctl(rdir, run, "set", "period=400")
        ctl(rdir, run, "resume")
        wait_until(lambda: run.rows() > paused_at + 2000)
        out = ctl(rdir, run, "checkpoint")
        assert "step-" in out
        ctl(rdir, run, "stop")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "done after" in out
    finally:
        if proc.poll() is None:
            proc.kill()
    st = run.state()
    assert st["state"] == states.STOPPED and not run.file(runs.SOCKET).exists()
    kinds = [e["kind"] for e in run.events()]
    for kind in ("start", "pause", "set", "resume", "checkpoint", "stop"):
        assert kind in kinds, kinds
    # every change is in the exported CSV at the update it took effect
    out_csv = tmp_path / "run.csv"
    r = CliRunner().invoke(app, ["export", str(run.path), "--csv", str(out_csv)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out_csv.open()))
    by_step = {int(float(r["step"])): r for r in rows}
    assert sorted(by_step) == list(range(1, len(rows) + 1))  # every update once, in order
    first, second = set_events(run)
    k = first["step"]
    assert k == paused_at + 1
    assert float(by_step[k - 1]["amplitude"]) == 10 and float(by_step[k]["amplitude"]) == 30
    assert float(by_step[k - 1]["lr"]) == 0.5 and float(by_step[k]["lr"]) == 0.25
    assert second["step"] == k and float(by_step[k]["period"]) == 400
    assert float(by_step[k - 1]["period"]) == 1000
    # the recorded loss is the one the loop trained on: F = mean Γ[y]·CE
    assert all(float(r["loss_dynamical"]) > 0 for r in rows[:50])
    assert 0 <= float(rows[-1]["accuracy"]) <= 1
    assert run.rows("eval") > 0


def test_a_checkpointed_live_run_resumes_in_the_same_directory(tmp_path):
    rdir = tmp_path / "runs"
    proc, run = start_loop(rdir, steps=3000)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert run.state()["state"] == states.FINISHED and run.rows() == 3000
    r = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "4000", "--runs-dir", str(rdir),
                        "--resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"run {run.path}")  # the same run directory
    assert run.rows() == 4000 and run.state()["state"] == states.FINISHED
    steps = run.read("metrics")[:, 0]
    assert (steps == range(1, 4001)).all()
    assert "resume" in [e["kind"] for e in run.events()]


def test_ctrl_c_and_a_crash_leave_a_readable_run_with_the_reason(tmp_path):
    rdir = tmp_path / "runs"
    proc, run = start_loop(rdir)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    st = run.state()
    assert st["state"] == states.STOPPED and "Ctrl-C" in st["reason"]
    assert not run.file(runs.SOCKET).exists() and run.rows() > 200

    script = tmp_path / "crash.py"
    script.write_text(
        "import torch, dlf_tui\n"
        "from dlf_tui import DynamicalLoss\n"
        "m = torch.nn.Linear(2, 3)\n"
        "opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        f"with dlf_tui.live.Run(DynamicalLoss(classes=3, amplitude=5, period=50), optimizer=opt,"
        f" name='crash', runs_dir={str(rdir)!r}) as run:\n"
        "    print('run', run.dir, flush=True)\n"
        "    for i in range(100):\n"
        "        loss = run.loss(m(torch.randn(8, 2)), torch.randint(0, 3, (8,)))\n"
        "        opt.zero_grad(); loss.backward(); opt.step(); run.step()\n"
        "    raise ValueError('bad batch\\nsecond line')\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "ValueError" in r.stderr
    crashed = runs.Run(Path(r.stdout.split(" ", 1)[1].strip()))
    st = crashed.state()
    assert st["state"] == states.CRASHED and st["reason"] == "ValueError: bad batch"
    assert crashed.rows() == 100 and not crashed.file(runs.SOCKET).exists()


def test_a_dead_loop_is_never_shown_as_running(tmp_path):
    rdir = tmp_path / "runs"
    proc, run = start_loop(rdir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    st = run.state()
    assert st["state"] == states.CRASHED and "gone" in st["reason"]
    assert json.loads(run.file(runs.STATE).read_text())["state"] == states.RUNNING  # as left


def test_engine_refuses_to_resume_a_live_run(tmp_path):
    rdir = tmp_path / "runs"
    proc, run = start_loop(rdir)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert run.state()["state"] == states.STOPPED
    r = CliRunner().invoke(app, ["resume", str(run.path), "--runs-dir", str(rdir)])
    assert r.exit_code != 0
    assert "your own training loop" in r.output and "resume='latest'" in r.output
    assert run.state()["state"] == states.STOPPED  # untouched
    engine = subprocess.run([sys.executable, "-m", "dlf_tui.engine", str(run.path), "--resume"],
                            capture_output=True, text=True, timeout=60)
    assert engine.returncode == 2 and "your own training loop" in engine.stderr
    assert run.state()["state"] == states.STOPPED


@pytest.mark.parametrize("bad", ["state={'model': 3}"])
def test_bad_state_is_one_line(tmp_path, bad):
    code = ("import torch, dlf_tui\nfrom dlf_tui import DynamicalLoss\n"
            f"dlf_tui.live.Run(DynamicalLoss(classes=3), {bad}, runs_dir={str(tmp_path)!r})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "state['model']: needs state_dict() and load_state_dict()" in r.stderr


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_every_recorded_row_is_what_the_loop_trained_on(tmp_path, loss):
    """Row u of metrics: F = the loss the loop backpropagated at update u, the plain
    loss and the accuracy of that update's outputs (ties and all), Γ, A, lr in force;
    over many flushes, with an lr edit between updates."""
    import numpy as np
    import torch

    import dlf_tui
    from dlf_tui import DynamicalLoss
    from dlf_tui.core import series as S

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = DynamicalLoss(classes=4, amplitude=7, period=9, loss=loss)
    seen = []
    with dlf_tui.live.Run(loss_fn, optimizer=opt, runs_dir=tmp_path, flush_every=37,
                          state={"model": model}) as run:
        for u in range(1, 301):
            x, y = torch.randn(16, 5), torch.randint(0, 4, (16,))
            out = model(x)
            if u % 50 == 0:
                out = out.detach().round().requires_grad_()  # ties in the argmax
            f = run.loss(out, y)
            opt.zero_grad()
            f.backward()
            opt.step()
            with torch.no_grad():
                plain = (torch.nn.functional.cross_entropy(out, y) if loss == "ce" else
                         ((out - torch.nn.functional.one_hot(y, 4)) ** 2).sum(1).mean())
            seen.append((f.item(), float(plain), float((out.argmax(1) == y).float().mean()),
                         loss_fn.gamma_host.copy(), opt.param_groups[0]["lr"]))
            assert run.step()
            if u == 120:  # as a ctl edit would, between updates: from update 121
                run.edit("lr", 0.05)
    r = runs.Run(run.dir)
    cols, rows = r.columns(), r.read()
    assert rows.shape[0] == 300 and list(rows[:, 0]) == list(range(1, 301))
    plain_col = S.LOSS_CE if loss == "ce" else S.LOSS_MSE
    f, plain, acc, gam, lr = (np.array(v) for v in zip(*seen))
    np.testing.assert_allclose(rows[:, cols.index(S.LOSS_DYNAMICAL)], f, rtol=1e-5)
    np.testing.assert_allclose(rows[:, cols.index(plain_col)], plain, rtol=1e-5)
    np.testing.assert_array_equal(rows[:, cols.index(S.ACCURACY)], acc)
    np.testing.assert_allclose(rows[:, [cols.index(S.gamma(i)) for i in range(4)]], gam, rtol=1e-12)
    np.testing.assert_array_equal(rows[:, cols.index(S.LR)], lr)
