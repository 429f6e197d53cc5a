"""Runs that never lose work: checkpoints, resume, kill -9, divergence, rollback."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.cli.main import app

from .conftest import tiny_config

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def finish(run: runs.Run, resume: bool = False) -> None:
    proc = launch.spawn_run_engine(run, resume=resume)
    assert proc.wait(120) == 0, launch.engine_failure(run)


def assert_clean_steps(run: runs.Run) -> None:
    steps = run.read()[:, 0]
    assert np.array_equal(steps, np.arange(1, len(steps) + 1))  # no duplicate or torn rows


@pytest.mark.parametrize("dtype,steps,extra", [
    ("float64", 20000, []),
    ("float32", 20000, []),
    # the autograd path with mini-batches, momentum and its batch RNG (slower: fewer updates)
    ("float64", 3000, ["optim.name=sgd", "optim.momentum=0.9", "optim.lr=0.1", "data.batch_size=16"]),
])
def test_stop_and_resume_gives_the_same_metrics(start_run, tmp_path, dtype, steps, extra):
    cfg = tiny_config(f"run.steps={steps}", f"run.dtype={dtype}", "data.val_seed=3",
                      "data.eval_every=37", *extra)
    ref = runs.create_run(cfg, tmp_path / "ref")
    finish(ref)
    live = start_run(cfg)
    live.wait_rows(400)
    assert cli("ctl", live.path, "stop").exit_code == 0
    assert live.wait_exit() == 0
    stopped_at = live.run.rows()
    assert 400 <= stopped_at < steps
    finish(live.run, resume=True)
    assert live.run.state()["state"] == "finished"
    assert_clean_steps(live.run)
    assert np.array_equal(live.run.read(), ref.read(), equal_nan=True)
    assert np.array_equal(live.run.read("eval"), ref.read("eval"), equal_nan=True)
    kinds = [e["kind"] for e in live.run.events()]
    assert kinds.count("start") == 2 and "resume" in kinds


def test_kill_9_then_resume_from_the_last_checkpoint(start_run, tmp_path):
    cfg = tiny_config("run.steps=30000", "run.checkpoint_every=500", "data.val_seed=3")
    ref = runs.create_run(cfg, tmp_path / "ref")
    finish(ref)
    live = start_run(cfg)
    live.wait_rows(1700)
    os.killpg(live.proc.pid, signal.SIGKILL)
    live.proc.wait(10)
    assert live.run.state()["state"] == "crashed"
    flushed = live.run.rows()
    assert flushed >= 1700  # every flushed row is readable after the kill
    ckpts = sorted(p.name for p in live.path.glob("checkpoints/*.pt"))
    assert ckpts[0] == "step-000000500.pt"
    out = cli("runs", "--runs-dir", live.path.parent).stdout
    assert "crashed" in out and f"{flushed}/30000" in out
    # simulate a torn last record as a kill mid-write would leave it
    with open(live.path / "metrics.bin", "ab") as fh:
        fh.write(b"\x00" * 13)
    finish(live.run, resume=True)
    assert_clean_steps(live.run)
    assert np.array_equal(live.run.read(), ref.read(), equal_nan=True)
    assert np.array_equal(live.run.read("eval"), ref.read("eval"), equal_nan=True)


def _wait_diverged(live, timeout=60.0):
    deadline = time.monotonic() + timeout
    while "diverged" not in live.run.state().get("reason", ""):
        assert time.monotonic() < deadline, live.run.state()
        time.sleep(0.05)


def test_divergence_pauses_before_the_bad_update(start_run):
    live = start_run(tiny_config("optim.lr=0.1", "run.dtype=float32"))
    live.wait_rows(200)
    assert cli("ctl", live.path, "checkpoint").exit_code == 0
    good = live.run.rows()
    assert cli("ctl", live.path, "set", "lr=1e38").exit_code == 0  # logits overflow float32
    _wait_diverged(live)
    st = live.run.state()
    assert st["state"] == "paused"
    m = live.run.read()
    assert np.isfinite(m).all()  # nothing non-finite was kept
    [ev] = [e for e in live.run.events() if e["kind"] == "diverged"]
    assert ev["step"] == live.run.rows() + 1
    assert "Lower lr" in ev["message"] and "paused" in ev["message"]
    n = live.run.rows()
    time.sleep(0.3)
    assert live.run.rows() == n  # it stays paused
    # roll back to the checkpoint, lower lr, resume: training goes on, finite
    assert cli("ctl", live.path, "rollback").exit_code == 0
    assert live.run.rows() == good
    assert cli("ctl", live.path, "set", "lr=0.1").exit_code == 0
    assert cli("ctl", live.path, "resume").exit_code == 0
    live.wait_rows(good + 500)
    assert np.isfinite(live.run.read()).all()
    assert_clean_steps(live.run)


def test_rollback_to_the_last_checkpoint(start_run):
    live = start_run(tiny_config("run.checkpoint_every=0"))
    live.wait_rows(300)
    r = cli("ctl", live.path, "rollback")
    assert r.exit_code == 1 and "no checkpoint yet" in r.stderr
    assert cli("ctl", live.path, "pause").exit_code == 0
    r = cli("ctl", live.path, "checkpoint")
    assert r.exit_code == 0 and "step-" in r.stdout
    at = live.run.rows()
    assert cli("ctl", live.path, "resume").exit_code == 0
    live.wait_rows(at + 500)
    assert cli("ctl", live.path, "pause").exit_code == 0
    assert live.run.rows() > at + 400
    r = cli("ctl", live.path, "rollback")
    assert r.exit_code == 0, r.output
    assert live.run.rows() == at
    assert cli("ctl", live.path, "resume").exit_code == 0
    live.wait_rows(at + 200)
    assert_clean_steps(live.run)
    assert "rollback" in [e["kind"] for e in live.run.events()]


def test_resume_refuses_live_and_finished_runs(start_run, tmp_path):
    live = start_run(tiny_config())
    r = cli("resume", live.path)
    assert r.exit_code == 2 and "still live" in r.stderr
    done = runs.create_run(tiny_config("run.steps=50"), tmp_path / "d")
    finish(done)
    r = cli("resume", done.path)
    assert r.exit_code == 2 and "already finished" in r.stderr


def test_an_exception_in_the_engine_is_reported_everywhere(tmp_path, monkeypatch):
    from dlf_tui.wire.client import Client

    # late enough that the client below is connected before it happens (tiny runs are fast)
    monkeypatch.setenv("DLF_TUI_FAULT_AT_STEP", "150000")
    run = runs.create_run(tiny_config("run.checkpoint_every=20000", "run.steps=200000"),
                          tmp_path / "r")
    proc = launch.spawn_run_engine(run)
    launch.wait_until_listening(run, proc)
    with Client.connect(run.path) as c:
        msgs = list(c.messages(timeout=30))
    assert proc.wait(30) == 1
    errors = [m for m in msgs if m.type == "log" and m.level == "error"]
    assert errors and "RuntimeError: injected fault" in errors[-1].message
    assert "\n" not in errors[-1].message
    st = run.state()
    assert st["state"] == "crashed" and st["reason"].startswith("RuntimeError: injected fault")
    assert "Traceback" in (run.path / "engine.log").read_text()
    assert [e for e in run.events() if e["kind"] == "error"]
    out = cli("runs", "--runs-dir", tmp_path / "r").stdout
    assert "crashed" in out
    monkeypatch.delenv("DLF_TUI_FAULT_AT_STEP")
    finish(run, resume=True)  # resume from the last periodic checkpoint
    assert run.state()["state"] == "finished"
    assert_clean_steps(run)
