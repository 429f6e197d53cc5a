"""Sweeps whose members train elsewhere: one per device of this box (``--devices``), or
as submitit jobs (``--executor submitit-local``: real processes, the path a Slurm
job array takes without Slurm).

The sweep's engine process is then a controller (``engine/loops/executors.py``):
each member is an ordinary engine of its own, started, stopped (with a checkpoint)
and resumed by it.  Every member must end with exactly what the one-process sweep
engine computes for it, stop and resume included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from dlf_tui.cli import cluster
from dlf_tui.cli.main import app
from dlf_tui.core import config
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps

from .conftest import tiny_config

runner = CliRunner()
AXIS = "schedule.amplitude=1,10,30"
STEPS = 1000
# paced (pace only waits: the same trajectory), so that a member lasts a few seconds on any machine
BASE = ("run.device=auto", f"run.steps={STEPS}", "run.pace=400", "run.checkpoint_every=250")

try:
    import submitit  # noqa: F401
except ImportError:  # pragma: no cover - the dev extra installs it
    submitit = None
needs_submitit = pytest.mark.skipif(submitit is None, reason="submitit is not installed "
                                    "(pip install 'dlf-tui[slurm]')")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def plan():
    return sweeps.plan(tiny_config(*BASE, name="tiny"), [AXIS], seeds=1)


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict[str, np.ndarray]:
    """Each member's metrics from the one-process sweep engine (member id -> rows)."""
    sw = sweeps.create(plan(), tmp_path_factory.mktemp("reference"))
    subprocess.run([sys.executable, "-m", "dlf_tui.engine", str(sw.path)], check=True, timeout=180)
    assert sw.state()["state"] == "finished"
    return {m.id: m.run.read() for m in sw.members}


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # the controller stops its members
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def wait_for(what, cond, proc, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert proc.poll() is None, f"{what}: the sweep's engine exited {proc.returncode}"
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.05)
    return value


def two_running(sw: sweeps.Sweep) -> list[sweeps.Member]:
    live = [m for m in sw.members if m.run.raw_state().get("state") == "running" and m.run.is_live()
            and m.run.rows() > 0]
    return live if len(live) == 2 else []


def assert_as_one_process(sw: sweeps.Sweep, expected: dict[str, np.ndarray]) -> None:
    for m in sw.members:
        assert m.run.raw_state()["state"] == "finished", (m.id, m.run.raw_state())
        got = m.run.read()
        assert got.shape == expected[m.id].shape == (STEPS, len(m.run.columns()))
        np.testing.assert_allclose(got, expected[m.id], rtol=0, atol=1e-12, err_msg=m.id)


def test_devices_cpu_cpu_two_members_at_once_each_its_own_engine_stop_and_resume(
        tmp_path, expected, procs):
    rdir = tmp_path / "runs"
    sw = sweeps.create(plan(), rdir, executor=sweeps.Executor("devices", ("cpu", "cpu")))
    proc = launch.spawn_sweep_engine(sw)
    procs.append(proc)
    a, b = wait_for("two members training at once", lambda: two_running(sw), proc)
    [third] = [m for m in sw.members if m not in (a, b)]
    assert third.run.raw_state() == {} and third.run.rows() == 0  # waits for a free device
    st = sw.state()
    assert st["state"] == "running" and st["mode"] == "devices" and sorted(st["running"]) == sorted([a.id, b.id])
    pids = {a.run.raw_state()["pid"], b.run.raw_state()["pid"], st["pid"]}
    assert len(pids) == 3  # two engines of their own, and the controller
    for m in (a, b):  # each member has its own socket: steer it like any run
        assert m.run.file(runs.SOCKET).exists()
        r = cli("ctl", m.run.path, "checkpoint")
        assert r.exit_code == 0 and r.stdout.startswith("ok: "), r.output
        assert 'device = "cpu"' in m.run.file(runs.CONFIG).read_text()  # the device it was given

    r = cli("ctl", sw.path, "stop", "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert proc.wait(60) == 0
    assert sw.state()["state"] == "stopped"
    for m in (a, b):
        assert m.run.raw_state()["state"] == "stopped"
        assert any(e["kind"] == "stop" for e in m.run.events())
    assert third.run.raw_state() == {}  # never started: still pending

    r = cli("resume", sw.path)
    assert r.exit_code == 0, r.output
    assert f"finished: {sw.id}" in r.stdout
    assert sw.state()["state"] == "finished"
    assert_as_one_process(sw, expected)
    for m in (a, b):
        [ev] = [e for e in m.run.events() if e["kind"] == "resume"]
        assert 0 < ev["rewound_to"] < STEPS
    assert not any(e["kind"] == "resume" for e in third.run.events())


@needs_submitit
def test_submitit_local_executor_end_to_end_stop_and_resume(tmp_path, expected, procs):
    from dlf_tui.ui.session.member import member_live

    rdir = tmp_path / "runs"
    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config(*BASE, name="tiny")))
    out = tmp_path / "sweep.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "dlf_tui", "sweep", str(preset), "--set", AXIS,
                                 "--seeds", "1", "--executor", "submitit-local", "--max-parallel", "2",
                                 "--runs-dir", str(rdir)], stdout=fh, stderr=subprocess.STDOUT)
    procs.append(proc)
    sw = wait_for("the sweep directory", lambda: sweeps.list_sweeps(rdir) and sweeps.list_sweeps(rdir)[0], proc)
    assert sw.executor() == sweeps.Executor("submitit-local", max_parallel=2)
    a, b = wait_for("two members training at once", lambda: two_running(sw), proc)
    [third] = [m for m in sw.members if m not in (a, b)]
    assert third.run.raw_state() == {}
    jobs = sw.jobs()
    assert sorted(jobs) == sorted([a.id, b.id])
    for m in (a, b):
        st = m.run.raw_state()
        assert st["sweep"] == sw.id and st["job"] == jobs[m.id]  # the job that trains it
        assert member_live(m.run)  # what the sweep view follows from disk
        logs = list((sw.path / sweeps.SUBMITIT).glob(f"{jobs[m.id]}_0_log.out"))
        assert logs, f"no submitit log for job {jobs[m.id]}"

    r = cli("ctl", sw.path, "stop", "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert proc.wait(60) == 0, out.read_text()
    assert f"stopped: {sw.id}" in out.read_text()
    assert sw.state()["state"] == "stopped"
    for m in (a, b):
        assert m.run.raw_state()["state"] == "stopped", m.run.raw_state()
        assert any((m.run.path / runs.CHECKPOINTS).glob("step-*.pt"))
    assert third.run.raw_state() == {}

    r = cli("resume", sw.id, "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    assert sw.state()["state"] == "finished"
    assert_as_one_process(sw, expected)
    again = sw.jobs()
    assert sorted(again) == sorted(m.id for m in sw.members)
    assert not set(again.values()) & set(jobs.values())  # resubmitted: new jobs
    for m in (a, b):
        [ev] = [e for e in m.run.events() if e["kind"] == "resume"]
        assert 0 < ev["rewound_to"] < STEPS


def test_a_member_that_crashes_ends_the_sweep_crashed_with_its_reason(tmp_path, procs):
    # a member whose config cannot start: the others still train, the sweep says which failed
    sw = sweeps.create(sweeps.plan(tiny_config("run.steps=300", name="tiny"), ["schedule.amplitude=1,10"],
                                   seeds=1), tmp_path / "runs", executor=sweeps.Executor("devices", ("cpu",)))
    bad = sw.members[0]
    bad.run.file(runs.CONFIG).write_text('[run]\nsteps = "many"\n')
    proc = launch.spawn_sweep_engine(sw)
    procs.append(proc)
    assert proc.wait(120) == 1
    st = sw.state()
    assert st["state"] == "crashed", st
    assert st["reason"].startswith(f"1 member crashed; {bad.id}: ") and "run.steps" in st["reason"], st
    assert "run.steps" in bad.run.raw_state()["reason"]
    assert sw.members[1].run.raw_state()["state"] == "finished"


# ---------------------------------------------------------------------------
# cheap: the options, the sbatch script a Slurm sweep submits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, text", [
    (["--devices", "cpu,tpu"], "'tpu' is not cpu, cuda or cuda:N"),
    (["--devices", "cpu,"], "'(empty)'"),
    (["--devices", "cpu", "--executor", "slurm"], "--devices: only without --executor"),
    (["--partition", "gpu"], "--partition: only with --executor slurm"),
    (["--executor", "ray"], "--executor ray: one of engine, devices, slurm, submitit-local"),
    (["--executor", "slurm", "--time", "4h"], "--time 4h: expected HH:MM"),
    (["--executor", "slurm", "--max-parallel", "0"], "--max-parallel 0: must be at least 1"),
    (["--executor", "slurm", "--gpus-per-member", "-1"], "--gpus-per-member -1"),
    (["--devices", "cpu,cpu", "--max-parallel", "2"], "the members at once are the devices listed"),
    (["--max-parallel", "2"], "--max-parallel: only with --devices"),
])
def test_sweep_executor_options_refused_in_one_line(tmp_path, args, text):
    rdir = tmp_path / "runs"
    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config(name="tiny")))
    r = cli("sweep", preset, "--runs-dir", rdir, *args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
    assert not rdir.exists()


def test_cluster_executor_needs_submitit(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster.importlib.util, "find_spec", lambda name: None)
    r = cli("sweep", "spiral-fig4", "--runs-dir", tmp_path / "r", "--executor", "slurm")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --executor slurm needs submitit: pip install 'dlf-tui[slurm]'"


def test_executor_file_round_trip_and_unreadable(tmp_path):
    ex = sweeps.executor_spec("slurm", None, "gpu", 1, "04:00", 8)
    assert ex == sweeps.Executor("slurm", (), "gpu", 1, 1, "04:00", 8) and ex.timeout_min == 240
    sw = sweeps.create(sweeps.plan(tiny_config(), ["schedule.amplitude=1,2"], 1), tmp_path, executor=ex)
    assert json.loads((sw.path / sweeps.EXECUTOR).read_text())["partition"] == "gpu"
    assert sweeps.Sweep(sw.path).executor() == ex
    plain = sweeps.create(sweeps.plan(tiny_config(), ["schedule.amplitude=1,2"], 1), tmp_path / "p")
    assert not (plain.path / sweeps.EXECUTOR).exists() and plain.executor() == sweeps.Executor()
    (sw.path / sweeps.EXECUTOR).write_text('{"kind": "slurm", "time": "soon"}')
    with pytest.raises(runs.RunError, match="unreadable executor.json"):
        sw.executor()
    # the engine refuses it in one line, and says so in the sweep's state
    p = subprocess.run([sys.executable, "-m", "dlf_tui.engine", str(sw.path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "unreadable executor.json" in p.stderr
    assert sw.state()["state"] == "crashed"


@needs_submitit
def test_slurm_sweep_is_one_job_array_with_the_options_given(tmp_path, monkeypatch):
    from submitit.slurm.slurm import _make_sbatch_string

    from dlf_tui.engine.loops import executors

    bin_dir = tmp_path / "bin"  # submitit looks for srun before it builds a Slurm executor
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ex = sweeps.executor_spec("slurm", None, "gpu", 1, "04:00", 8)
    sw = sweeps.create(sweeps.plan(tiny_config(), ["schedule.amplitude=1,2,3,4,5,6"], 2), tmp_path, executor=ex)
    launcher = executors.Submitit(sw, ex)
    assert launcher.capacity is None  # Slurm queues the array itself
    params = launcher.executor._executor.parameters
    text = _make_sbatch_string(command="CMD", folder=str(sw.path / sweeps.SUBMITIT), map_count=12, **params)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=240",
                 "#SBATCH --array=0-11%8", "#SBATCH --signal=USR2@120", "#SBATCH --cpus-per-task=1",
                 f"#SBATCH --job-name=dlf-{sw.id}"):
        assert line in text, (line, text)


def test_devices_all_without_a_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    sw = sweeps.create(sweeps.plan(tiny_config(), ["schedule.amplitude=1,2"], 1), tmp_path,
                       executor=sweeps.executor_spec(None, "all"))
    p = subprocess.run([sys.executable, "-m", "dlf_tui.engine", str(sw.path)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == ("error: --devices all: no CUDA device is visible here "
                                                 "(name the devices: --devices cpu,cpu)")
    st = sw.state()
    assert st["state"] == "crashed" and "no CUDA device" in st["reason"]
    assert all(m.run.raw_state() == {} for m in sw.members)  # nothing started
