"""One run over the ranks torchrun starts: one node, two "nodes", restarts, resume.

Real torchrun processes (``python -m torch.distributed.run``), gloo on the CPU, every
rank a ``dlf-tui run``/``resume`` process of its own.  Rank 0 makes the run directory
and is its engine; the other ranks learn the directory from rank 0.  Each run's
metrics must be what one process computes (to rounding: the single process takes
the C-kernel step, the ranks autograd + DDP) and the ranks must agree (their
``rank-R.json``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlf_tui.cli.main import app
from dlf_tui.core import config
from dlf_tui.core.errors import RunError
from dlf_tui.store import launch, liveness
from dlf_tui.store import run as runs
from dlf_tui.store import torchrun as trun

from .conftest import tiny_config
from .test_distributed import assert_ranks_agree

runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env=env)


@pytest.fixture
def torchrun(tmp_path):
    """torchrun(*args) -> Popen of one torchrun agent (its output in a log file);
    agents and the ranks they started are killed at the end."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(*args: str) -> subprocess.Popen:
        out = tmp_path / f"torchrun-{len(procs)}.log"
        # every "node" on this machine: gloo over loopback
        env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
        with open(out, "w") as fh:
            p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *map(str, args)],
                                 stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        p.log = out
        procs.append((p, out))
        return p

    yield start
    for p, _ in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)  # the agent stops its ranks
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def output(p) -> str:
    return Path(p.log).read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def preset(tmp_path: Path, cfg: config.Config) -> Path:
    path = tmp_path / f"{cfg.name}.toml"
    path.write_text(config.to_toml(cfg))
    return path


def reference(tmp_path: Path, cfg: config.Config) -> tuple[runs.Run, subprocess.Popen]:
    """The same config in one ordinary engine process."""
    run = runs.create_run(cfg, tmp_path / "one")
    return run, launch.spawn_run_engine(run)


def the_run(rdir: Path, timeout: float = 60.0) -> runs.Run:
    deadline = time.monotonic() + timeout
    while not (found := runs.list_runs(rdir)):
        assert time.monotonic() < deadline, f"no run directory under {rdir}"
        time.sleep(0.05)
    [run] = found
    return run


def wait_for(what, cond, procs, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        for p in procs:
            assert p.poll() is None, f"{what}: torchrun exited {p.returncode}:\n{output(p)[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.05)
    return value


def assert_same_as_one_process(one: runs.Run, run: runs.Run, rows: int) -> None:
    a, b = one.read(), run.read()
    assert a.shape == b.shape == (rows, len(one.columns()))
    cols = one.columns()
    diff = {c: float(np.abs(a[:, i] - b[:, i]).max()) for i, c in enumerate(cols)}
    assert max(diff.values()) < 1e-9, diff
    g = [i for i, c in enumerate(cols) if c.startswith("gamma_")]
    assert np.array_equal(a[:, g], b[:, g])  # the same schedule, exactly
    np.testing.assert_allclose(run.read("eval"), one.read("eval"), rtol=0, atol=1e-9)


def test_torchrun_one_node_and_two_nodes_compute_what_one_process_computes(tmp_path, torchrun):
    # 31 points per class: 93 rows, so the two shards differ in size
    cfg = tiny_config("run.steps=200", "data.points_per_class=31", "data.val_seed=1",
                      "data.eval_every=50")
    p_file = preset(tmp_path, cfg)
    one, ref = reference(tmp_path, cfg)
    # one node, two ranks
    node = torchrun("--standalone", "--nproc-per-node=2", "-m", "dlf_tui", "run", p_file,
                    "--runs-dir", tmp_path / "a")
    # two "nodes" of one rank each, meeting through a c10d rendezvous on 127.0.0.1
    port, rid = free_port(), f"dlf-test-{uuid.uuid4().hex[:8]}"
    nodes = [torchrun("--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                      f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={rid}", "-m", "dlf_tui", "run",
                      p_file, "--runs-dir", tmp_path / "b") for _ in range(2)]
    # a bad preset: rank 0 says why, the other rank says rank 0 could not start
    bad = torchrun("--standalone", "--nproc-per-node=2", "-m", "dlf_tui", "run", "no-such-preset",
                   "--runs-dir", tmp_path / "c")
    assert ref.wait(180) == 0, launch.engine_failure(one)
    for p in [node, *nodes]:
        assert p.wait(180) == 0, output(p)[-3000:]
    assert bad.wait(120) != 0
    text = output(bad)
    assert "error: " in text and "no-such-preset" in text, text[-2000:]
    assert "error: rank 0 could not start the run: " in text, text[-2000:]
    assert not runs.list_runs(tmp_path / "c")

    for rdir, nnodes, p in ((tmp_path / "a", 1, node), (tmp_path / "b", 2, None)):
        run = the_run(rdir)
        assert_same_as_one_process(one, run, 200)
        st = run.state()
        assert st["state"] == "finished" and st["nproc"] == 2 and len(st["ranks"]) == 2, st
        r0 = assert_ranks_agree(run)
        assert r0["step"] == 200 and r0["gamma_from"] == 1
        assert not any(liveness.engine_alive(pid) for pid in st["ranks"])
        [start] = [e for e in run.events() if e["kind"] == "start"]
        assert "2 ranks" in start["message"] and "torchrun" in start["message"]
        assert ("on 2 nodes" in start["message"]) == (nnodes == 2)
        assert run.file(runs.RANK_LOG.format(rank=1)).exists()  # rank 1 logs beside rank 0
        if p is not None:  # rank 0 printed the run and its summary; rank 1 nothing of it
            text = output(p)
            assert text.count(f"run {run.id}: starting with 2 ranks (torchrun) -> {run.path}") == 1
            assert text.count(f"finished: {run.id}") == 1


def test_torchrun_restart_resumes_from_the_last_checkpoint_then_stop_and_resume(tmp_path, torchrun):
    cfg = tiny_config("run.steps=1200", "run.checkpoint_every=100")
    p_file = preset(tmp_path, cfg)
    one, ref = reference(tmp_path, cfg)
    rdir = tmp_path / "runs"
    p = torchrun("--standalone", "--nproc-per-node=2", "--max-restarts=1", "-m", "dlf_tui", "run",
                 p_file, "--runs-dir", rdir)
    run = wait_for("run directory", lambda: runs.list_runs(rdir) and runs.list_runs(rdir)[0], [p])
    wait_for("a checkpoint and rows past it",
             lambda: trun.has_checkpoint(run.path) and run.rows() >= 250, [p])
    first = run.state()["ranks"]
    os.kill(first[1], signal.SIGKILL)  # torchrun restarts both ranks; rank 0 resumes the run
    resumed = wait_for("the restarted attempt's resume",
                       lambda: [e for e in run.events() if e["kind"] == "resume"], [p])
    [err] = [e for e in run.events() if e["kind"] == "error"]
    assert f"rank 1 (pid {first[1]})" in err["message"], err  # the rank that died, by its pid
    assert resumed[0]["rewound_to"] % 100 == 0 and resumed[0]["rewound_to"] >= 200
    st = wait_for("both ranks of the new attempt",
                  lambda: (s := run.state()).get("state") == "running" and s.get("ranks") != first and s, [p])
    assert not set(st["ranks"]) & set(first)
    wait_for("rows after the restart", lambda: run.rows() >= resumed[0]["rewound_to"] + 200, [p])

    # stop through rank 0's socket: every rank stops at the same update
    r = cli("ctl", run.path, "stop")
    assert r.exit_code == 0, r.output
    assert p.wait(60) == 0, output(p)[-3000:]
    assert run.state()["state"] == "stopped"
    stopped = assert_ranks_agree(run)["step"]
    assert stopped < 1200

    # dlf-tui resume under torchrun: rank 0 checks the run, both ranks continue it
    p2 = torchrun("--standalone", "--nproc-per-node=2", "-m", "dlf_tui", "resume", run.path)
    assert p2.wait(180) == 0, output(p2)[-3000:]
    assert f"run {run.id}: resuming with 2 ranks (torchrun) -> {run.path}" in output(p2)
    assert ref.wait(120) == 0
    assert run.state()["state"] == "finished"
    assert_same_as_one_process(one, run, 1200)
    r0 = assert_ranks_agree(run)
    assert r0["step"] == 1200 and r0["gamma_from"] == stopped + 1
    assert [e["rewound_to"] for e in run.events() if e["kind"] == "resume"] == \
        [resumed[0]["rewound_to"], stopped]


# ---------------------------------------------------------------------------
# cheap: refusals, the environment, the note a restart reads
# ---------------------------------------------------------------------------


TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                "GROUP_WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "localhost",
                "MASTER_PORT": "29500", "TORCHELASTIC_RESTART_COUNT": "0"}


def test_torchrun_refusals_are_one_line(tmp_path):
    rdir = tmp_path / "r"
    p_file = preset(tmp_path, tiny_config())
    env = dict(TORCHRUN_ENV, WORLD_SIZE="2")
    r = cli("run", p_file, "--nproc", "2", "--runs-dir", rdir, env=env)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["error: --nproc 2: under torchrun, torchrun starts the ranks "
                                     "(--nproc-per-node)"]
    r = cli("run", "no-such-preset", "--runs-dir", rdir, env=TORCHRUN_ENV)
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, r.output
    assert r.stderr.startswith("error: ") and "no-such-preset" in r.stderr
    assert not runs.list_runs(rdir)
    r = cli("run", p_file, "--runs-dir", rdir, env=dict(TORCHRUN_ENV, RANK="x"))
    assert r.exit_code == 2 and r.stderr.startswith("error: torchrun: RANK, WORLD_SIZE")
    # a restart whose first attempt left no note
    r = cli("run", p_file, "--runs-dir", rdir, env=dict(TORCHRUN_ENV, TORCHELASTIC_RESTART_COUNT="1"))
    assert r.exit_code == 2 and "no note of the run directory" in r.stderr, r.output
    # resume: a run with no checkpoint, a sweep
    run = runs.create_run(tiny_config(), rdir)
    r = cli("resume", run.path, env=TORCHRUN_ENV)
    assert r.exit_code == 2 and r.stderr.strip() == f"error: cannot resume {run.id}: it has no checkpoint"


def test_torchrun_environment_and_restart_note(tmp_path):
    assert trun.from_environ({}) is None
    assert trun.from_environ({"RANK": "0", "WORLD_SIZE": "2"}) is None  # no launcher said so
    env = trun.from_environ(dict(TORCHRUN_ENV, RANK="3", WORLD_SIZE="4", LOCAL_RANK="1",
                                 LOCAL_WORLD_SIZE="2", GROUP_WORLD_SIZE="2",
                                 TORCHELASTIC_RESTART_COUNT="2"))
    assert (env.rank, env.world, env.local_rank, env.local_world, env.nodes, env.restart) == (3, 4, 1, 2, 2, 2)
    assert env.key == "id:abc"
    nameless = trun.from_environ(dict(TORCHRUN_ENV, TORCHELASTIC_RUN_ID="none"))
    assert nameless.key == f"agent:{socket.gethostname()}:{os.getppid()}"
    with pytest.raises(RunError, match="need 0 <= RANK < WORLD_SIZE"):
        trun.from_environ(dict(TORCHRUN_ENV, RANK="2", WORLD_SIZE="2"))
    run = runs.create_run(tiny_config(), tmp_path / "r")
    trun.remember(tmp_path / "r", env, run.path)
    assert trun.recall(tmp_path / "r", env) == run.path.resolve()
    other = trun.from_environ(dict(TORCHRUN_ENV, TORCHELASTIC_RUN_ID="another", TORCHELASTIC_RESTART_COUNT="1"))
    with pytest.raises(RunError, match="torchrun restart 1: no note"):
        trun.recall(tmp_path / "r", other)
    assert [r.path for r in runs.list_runs(tmp_path / "r")] == [run.path]  # the notes are no run
