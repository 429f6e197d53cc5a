"""One run across several processes (``--nproc``): real engine processes, gloo on the CPU.

Rank 0 is the engine the other tests know; rank 1 is its child.  Each rank
writes ``rank-R.json`` when it ends: its final step and SHA-256 of the Γ rows it
trained with and of its parameters, so the tests can prove the ranks agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.store import liveness
from dlf_tui.cli.main import app

from .conftest import tiny_config
from .test_images import image_config, write_cifar

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def spawn():
    """spawn(run, nproc, resume=False) -> Popen of rank 0; every process group killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(run: runs.Run, nproc: int, resume: bool = False) -> subprocess.Popen:
        proc = launch.spawn_run_engine(run, resume=resume, nproc=nproc)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def wait_rows(run: runs.Run, proc, n: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while run.rows() < n:
        assert proc.poll() is None, f"engine exited: {launch.engine_failure(run)}"
        assert time.monotonic() < deadline, f"only {run.rows()} rows after {timeout} s"
        time.sleep(0.02)
    return run.rows()


def ranks_of(run: runs.Run, proc, timeout: float = 30.0) -> list[int]:
    """The pids of the ranks, rank 0 first (state.json once the run is running)."""
    deadline = time.monotonic() + timeout
    while "ranks" not in (st := run.state()):
        assert proc.poll() is None and time.monotonic() < deadline, st
        time.sleep(0.02)
    return st["ranks"]


def record(run: runs.Run, rank: int) -> dict:
    return json.loads(run.file(f"rank-{rank}.json").read_text())


def gamma_sha256(run: runs.Run, first_step: int) -> str:
    """SHA-256 of the Γ columns of metrics.bin from update ``first_step`` on."""
    g = [i for i, c in enumerate(run.columns()) if c.startswith("gamma_")]
    rows = np.ascontiguousarray(run.read()[first_step - 1:, g])
    return hashlib.sha256(rows.tobytes()).hexdigest()


def assert_ranks_agree(run: runs.Run) -> dict:
    """Rank 1 ended where rank 0 did, with the same Γ rows and the same parameters;
    rank 0's Γ rows are those in metrics.bin."""
    r0, r1 = record(run, 0), record(run, 1)
    assert r0["rank"] == 0 and r1["rank"] == 1 and r0["world"] == r1["world"] == 2
    for key in ("step", "lr", "schedule", "gamma_from", "gamma_sha256", "gamma_all_sha256",
                "params_sha256"):
        assert r0[key] == r1[key], key
    assert r0["step"] == run.rows()
    assert r0["gamma_sha256"] == gamma_sha256(run, r0["gamma_from"])
    return r0


def gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not liveness.engine_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_two_ranks_compute_what_one_process_computes(tmp_path, spawn):
    write_cifar(tmp_path / "data")  # 100 training, 30 test images in CIFAR-10's format
    cases = {
        # full-batch GD on the spiral; 31 points per class: 93 training and held-out
        # rows, so the shards differ in size.  1 process takes the C-kernel path,
        # 2 ranks autograd + DDP
        "full": tiny_config("run.steps=200", "data.points_per_class=31", "data.val_seed=1",
                            "data.eval_every=50"),
        # mini-batches of 9 images (4 + 5 per rank) from one permutation, random crops
        # and flips, SGD with momentum, held-out test images (15 per rank)
        "mini": image_config(tmp_path / "data", "model.kind=mlp", "model.hidden=[16]",
                             "run.dtype=float64", "data.batch_size=9", "run.steps=200",
                             "data.eval_every=50", "data.eval_batch_size=7"),
    }
    started = {}
    t0 = time.monotonic()
    for name, cfg in cases.items():
        for n in (1, 2):
            run = runs.create_run(cfg, tmp_path / f"{name}{n}")
            started[name, n] = (run, spawn(run, n))
    for run, proc in started.values():
        assert proc.wait(180) == 0, launch.engine_failure(run)
    print(f"4 runs (1 + 2 ranks; spiral full batch, images mini-batch) in "
          f"{time.monotonic() - t0:.1f} s")
    for name in cases:
        one, two = started[name, 1][0], started[name, 2][0]
        a, b = one.read(), two.read()
        assert a.shape == b.shape == (200, len(one.columns()))
        cols = one.columns()
        diff = {c: float(np.abs(a[:, i] - b[:, i]).max()) for i, c in enumerate(cols)}
        print(name, {c: f"{diff[c]:.1e}" for c in ("loss_dynamical", "loss_ce", "accuracy",
                                                    "grad_norm")})
        assert max(diff.values()) < 1e-9, diff
        g = [i for i, c in enumerate(cols) if c.startswith("gamma_")]
        assert np.array_equal(a[:, g], b[:, g])  # the same schedule, exactly
        ea, eb = one.read("eval"), two.read("eval")
        assert ea.shape == eb.shape == (5, len(one.columns("eval")))  # updates 1, 50, …, 200
        np.testing.assert_allclose(eb, ea, rtol=0, atol=1e-9)
        st = two.state()
        assert st["state"] == "finished" and st["nproc"] == 2 and len(st["ranks"]) == 2
        if name == "full":
            assert "fused step not used: 2 ranks" in two.file(runs.LOG).read_text()
        r0 = assert_ranks_agree(two)
        assert r0["step"] == 200 and r0["gamma_from"] == 1
        assert not any(liveness.engine_alive(pid) for pid in st["ranks"])


def test_live_edits_reach_every_rank_at_the_same_update(tmp_path, spawn):
    run = runs.create_run(tiny_config(), tmp_path / "runs")
    proc = spawn(run, 2)
    launch.wait_until_listening(run, proc)
    ranks = ranks_of(run, proc)
    assert len(ranks) == 2 and ranks[0] == proc.pid

    # an edit while the ranks train: it lands between two planned chunks
    wait_rows(run, proc, 100)
    assert cli("ctl", run.path, "set", "amplitude=3", "lr=0.5").exit_code == 0
    [ev] = [e for e in run.events() if e["kind"] == "set"]
    edit = ev["step"]
    wait_rows(run, proc, edit + 50)
    r = cli("ctl", run.path, "checkpoint")
    assert r.exit_code == 0, r.output
    ckpt = int(r.stdout.split("step-")[1].split(".")[0])
    wait_rows(run, proc, ckpt + 50)
    assert cli("ctl", run.path, "set", "period=80").exit_code == 0
    wait_rows(run, proc, run.rows() + 50)
    # rollback while paused: rank 1 loads the checkpoint rank 0 wrote, during a heartbeat
    assert cli("ctl", run.path, "pause").exit_code == 0
    assert cli("ctl", run.path, "rollback").exit_code == 0
    assert run.rows() == ckpt
    time.sleep(1.2)  # a few heartbeat plans while paused
    assert run.rows() == ckpt and proc.poll() is None
    assert cli("ctl", run.path, "resume").exit_code == 0
    wait_rows(run, proc, ckpt + 100)

    # SIGTERM to the whole process group: rank 1 ignores it, rank 0 stops both
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0
    st = run.state()
    assert st["state"] == "stopped", st
    assert all(gone(pid) for pid in ranks)
    r0 = assert_ranks_agree(run)
    assert r0["gamma_from"] == ckpt + 1  # the rollback
    m = run.read()
    cols = run.columns()
    amp, per, lr = (m[:, cols.index(c)] for c in ("amplitude", "period", "lr"))
    assert (amp[: edit - 1] == 10).all() and (amp[edit - 1:] == 3).all()
    assert (lr[: edit - 1] == 1).all() and (lr[edit - 1:] == 0.5).all()
    assert (per == 50).all()  # the period edit came after the checkpoint: rolled back
    assert r0["schedule"]["period"] == 50 and r0["lr"] == 0.5

    # resume with two ranks: both load the stop checkpoint at start; then a divergence,
    # detected and replayed by both ranks alike
    stopped = r0["step"]
    proc2 = spawn(run, 2, resume=True)
    launch.wait_until_listening(run, proc2)
    wait_rows(run, proc2, stopped + 60)
    assert cli("ctl", run.path, "set", "lr=1e300").exit_code == 0  # float64 overflows
    deadline = time.monotonic() + 60
    while "diverged" not in run.state().get("reason", ""):
        assert proc2.poll() is None and time.monotonic() < deadline, run.state()
        time.sleep(0.05)
    assert cli("ctl", run.path, "stop").exit_code == 0
    assert proc2.wait(60) == 0
    r0 = assert_ranks_agree(run)
    assert r0["gamma_from"] == stopped + 1 and r0["step"] > stopped
    [ev] = [e for e in run.events() if e["kind"] == "diverged"]
    assert ev["step"] == r0["step"] + 1
    m = run.read()
    assert np.isfinite(m).all()  # nothing non-finite was kept
    assert np.array_equal(m[:, 0], np.arange(1, len(m) + 1))


def test_a_dead_rank_ends_the_run_as_crashed(tmp_path, spawn):
    # a rank killed mid-run: rank 0 notices, says which, and stops (no hang)
    run = runs.create_run(tiny_config(), tmp_path / "a")
    proc = spawn(run, 2)
    launch.wait_until_listening(run, proc)
    wait_rows(run, proc, 50)
    rank1 = ranks_of(run, proc)[1]
    t0 = time.monotonic()
    os.kill(rank1, signal.SIGKILL)
    assert proc.wait(30) == 1
    print(f"rank 0 ended {time.monotonic() - t0:.2f} s after rank 1 was killed")
    st = run.state()
    assert st["state"] == "crashed"
    assert st["reason"] == f"rank 1 (pid {rank1}) was killed by SIGKILL"
    assert any(e["kind"] == "error" and "rank 1" in e["message"] for e in run.events())
    assert not run.file(runs.SOCKET).exists()

    # rank 0 killed: the other rank does not outlive it
    run = runs.create_run(tiny_config(), tmp_path / "b")
    proc = spawn(run, 2)
    rank1 = ranks_of(run, proc)[1]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert gone(rank1, 10)


def test_bad_nproc_is_one_line(tmp_path):
    rdir = tmp_path / "r"
    for args in (["run", "spiral-fig4", "--nproc", "0"], ["run", "spiral-fig4", "--nproc", "-3"]):
        r = cli(*args, "--runs-dir", rdir)
        assert r.exit_code == 2
        assert r.stderr.splitlines() == [f"error: --nproc {args[-1]}: must be at least 1"]
    assert cli("resume", "nothing", "--runs-dir", rdir, "--nproc", "0").exit_code == 2
    assert not rdir.exists()  # refused before any run directory is made
    # more ranks than samples per batch: every rank refuses to start, rank 0 says why
    r = subprocess.run([sys.executable, "-m", "dlf_tui", "run", "spiral-fig4", "--runs-dir",
                        str(rdir), "--nproc", "2", "--set", "data.batch_size=1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "error: --nproc 2: more ranks than samples in the mini-batch (data.batch_size): 1"]
    [run] = runs.list_runs(rdir)
    st = run.state()
    assert st["state"] == "crashed" and run.rows() == 0
    assert not liveness.engine_alive(st["pid"])
