"""The sweep engine: every mode computes what separate single runs compute.

Members are trained together (threads: each member's own C-kernel stepper in a
thread pool; batched: one stacked hand-written step; vmap: torch.func), so the
proof is member-by-member equality with ordinary runs of the same config
(float64, CPU, 1e-9), plus the process-level behaviour: stop, resume,
divergence of one member, the sequential fallback and bad input.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlf_tui.store import launch
from dlf_tui.store import run as runs, sweep as sweeps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config  # noqa: E402

from dlf_tui.engine.loops.sweep import SweepEngine  # noqa: E402
from dlf_tui.engine.loops.single import SingleRun  # noqa: E402


def single_run(cfg, runs_dir: Path) -> runs.Run:
    """The same config as an ordinary run (the engine's code, in this process)."""
    run = runs.create_run(cfg, runs_dir)
    e = SingleRun(run.path, serve=False)
    try:
        assert e.run() == 0
    finally:
        e.close()
    return run


def run_sweep(path: Path, mode: str = "auto") -> SweepEngine:
    eng = SweepEngine(path, mode=mode)
    eng.setup()
    try:
        assert eng.run() == 0
    finally:
        eng.close()
    return eng


def worst_difference(member: runs.Run, single: runs.Run) -> float:
    worst = 0.0
    for name in ("metrics", "eval"):
        a, b = member.read(name), single.read(name)
        assert a.shape == b.shape and a.shape[0] > 0, (name, a.shape, b.shape)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        worst = max(worst, float(np.nanmax(np.abs(a - b))))
    return worst


@pytest.mark.parametrize("mode", ["threads", "batched", "vmap"])
def test_every_member_equals_its_single_run(tmp_path, mode):
    steps = 60 if mode == "vmap" else 400  # vmap's batching rules are slow on tiny tensors
    base = tiny_config(f"run.steps={steps}", "data.val_seed=1", "data.eval_every=25",
                       "run.dtype=float64")
    plan = sweeps.plan(base, ["schedule.amplitude=1,10", "optim.lr=0.5,1"], seeds=2)
    sw = sweeps.create(plan, tmp_path / "runs")
    eng = run_sweep(sw.path, mode)
    assert eng.mode == mode and sw.state()["state"] == "finished"
    worst = 0.0
    for m in sw.members:
        st = m.run.raw_state()
        assert st["state"] == "finished" and st["sweep"] == sw.id and st["step"] == steps
        assert any((m.run.path / runs.CHECKPOINTS).glob("step-*.pt"))
        worst = max(worst, worst_difference(m.run, single_run(m.run.config(), tmp_path / "single")))
    assert worst <= 1e-9, worst
    if mode == "threads":
        assert worst == 0.0  # the same stepper code: bit for bit
    # the members really differ: amplitude, lr and seed each change the trajectory
    finals = {m.id: m.run.last_row()["loss_ce"] for m in sw.members}
    assert len(set(finals.values())) == len(finals)


def test_summary_is_mean_std_and_fraction_over_seeds(tmp_path):
    base = tiny_config("run.steps=300", "data.val_seed=1", "data.eval_every=100")
    sw = sweeps.create(sweeps.plan(base, ["schedule.amplitude=1,30"], seeds=3, threshold=0.4),
                       tmp_path / "runs")
    run_sweep(sw.path)
    rows = sw.summary()
    assert [r["values"]["schedule.amplitude"] for r in rows] == [1.0, 30.0]
    for r in rows:
        acc = [m.run.last_row()["accuracy"] for m in sw.members_of(r["cell"])]
        val = [m.run.last_row("eval")["val_accuracy"] for m in sw.members_of(r["cell"])]
        assert r["train"]["n"] == 3 and r["finished"] == 3 and r["step"] == 300
        assert r["train"]["mean"] == pytest.approx(np.mean(acc))
        assert r["train"]["std"] == pytest.approx(np.std(acc))
        assert r["train"]["frac"] == pytest.approx(np.mean(np.array(acc) >= 0.4))
        assert r["val"]["mean"] == pytest.approx(np.mean(val))


def test_one_diverging_member_stops_alone(tmp_path):
    base = tiny_config("run.steps=300", "run.dtype=float32")
    for mode in ("threads", "batched"):  # lr 1e38: the logits overflow float32
        sw = sweeps.create(sweeps.plan(base, ["optim.lr=0.1,1e38"], seeds=1), tmp_path / mode)
        run_sweep(sw.path, mode)
        calm, wild = sw.members
        assert calm.run.raw_state()["state"] == "finished" and calm.run.rows() == 300
        st = wild.run.raw_state()
        assert st["state"] == "stopped" and "diverged" in st["reason"], (mode, st)
        assert wild.run.rows() < 300
        assert np.isfinite(wild.run.read()[:, 1:3]).all()  # only the finite updates were kept
        assert "diverged" in [e["kind"] for e in wild.run.events()]
        assert sw.state()["state"] == "finished"


def test_members_needing_autograd_run_one_after_another(tmp_path):
    base = tiny_config("run.steps=60", "optim.name=adam", "optim.lr=0.01", "run.dtype=float64")
    sw = sweeps.create(sweeps.plan(base, ["schedule.amplitude=1,10"], seeds=1), tmp_path / "runs")
    eng = run_sweep(sw.path)
    assert eng.mode == "sequential"
    for m in sw.members:
        assert m.run.raw_state()["state"] == "finished"
        assert worst_difference_metrics(m.run, single_run(m.run.config(), tmp_path / "s")) == 0.0


def worst_difference_metrics(a: runs.Run, b: runs.Run) -> float:
    x, y = a.read(), b.read()
    assert x.shape == y.shape and x.shape[0] > 0
    return float(np.max(np.abs(x - y)))


def _engine(path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlf_tui.engine", str(path), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_process_stops_on_sigterm_and_resumes_to_the_same_numbers(tmp_path):
    steps = 30000  # long enough that the stop comes mid-way
    base = tiny_config(f"run.steps={steps}", "run.dtype=float64")
    sw = sweeps.create(sweeps.plan(base, ["schedule.amplitude=1,10"], seeds=2), tmp_path / "runs")
    proc = launch.spawn_sweep_engine(sw)
    try:
        deadline = time.monotonic() + 60
        while min(m.run.rows() for m in sw.members) < 200:
            assert proc.poll() is None, launch.engine_failure(runs.Run(sw.path))
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert sw.is_live() and sw.state()["mode"] == "threads"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert sw.state()["state"] == "stopped"
    stopped_at = {m.run.raw_state()["step"] for m in sw.members}
    assert len(stopped_at) == 1 and 0 < stopped_at.pop() < steps  # all stop after the same round
    for m in sw.members:
        assert m.run.raw_state()["state"] == "stopped"
    done = subprocess.run([sys.executable, "-m", "dlf_tui", "resume", str(sw.path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sw.state()["state"] == "finished"
    again = subprocess.run([sys.executable, "-m", "dlf_tui", "resume", str(sw.path)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.strip().endswith("already finished")
    m = sw.members[3]
    rows = m.run.read()
    assert np.array_equal(rows[:, 0], np.arange(1, steps + 1))  # one row per update, no gap
    assert worst_difference_metrics(m.run, single_run(m.run.config(), tmp_path / "s")) == 0.0


def test_bad_sweep_directory_is_one_line(tmp_path):
    proc = _engine(tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.count("\n") == 1 and "not a sweep directory" in err
