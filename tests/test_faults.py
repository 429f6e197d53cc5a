"""Nothing lost when the machine misbehaves: each fault injected for real into a real
engine process — a full disk (a tiny tmpfs), a file size limit (RLIMIT_FSIZE), a
read-only run directory (a read-only bind mount), permission taken away (chmod, with
the engine's capability to ignore it dropped when the tests run as root), the run
directory removed, a stopped engine (SIGSTOP), kill -9 at random moments — then,
from the files, every update 1..N is there exactly once, bit-exact against an
uninterrupted float64 run, and state.json, the events and the clients tell the truth.

A fault that needs what this machine does not allow (mounting, setpriv) skips and
says why.  No timing is asserted: the waits are generous bounds against hangs.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dlf_tui.cli.main import app
from dlf_tui.core.errors import ClientError
from dlf_tui.engine.checkpoints import read_checkpoint
from dlf_tui.store import launch, liveness
from dlf_tui.store import run as runs
from dlf_tui.wire import protocol
from dlf_tui.wire.client import Client, unix_address

from .conftest import tiny_config

runner = CliRunner()
ROOT = os.geteuid() == 0
STEPS = 20000
# one config for every fault (and its one uninterrupted reference): float64, held-out
# evaluations (a second series), a checkpoint every 1000 updates
FAULT_CFG = (f"run.steps={STEPS}", "run.checkpoint_every=1000", "run.dtype=float64",
             "data.val_seed=3", "data.eval_every=97")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def wait_for(pred, what: str, timeout: float = 60.0, proc=None):
    """Poll ``pred`` until it is true (a bound against hangs, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"engine exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> runs.Run:
    """The uninterrupted run every faulted one must equal, bit for bit."""
    ref = runs.create_run(tiny_config(*FAULT_CFG), tmp_path_factory.mktemp("ref"))
    assert launch.spawn_run_engine(ref).wait(120) == 0, launch.engine_failure(ref)
    return ref


def assert_same_as(run: runs.Run, ref: runs.Run) -> None:
    m = run.read()
    assert np.array_equal(m[:, 0], np.arange(1, STEPS + 1)), "an update is missing or twice"
    assert np.array_equal(m, ref.read(), equal_nan=True)
    assert np.array_equal(run.read("eval"), ref.read("eval"), equal_nan=True)


def assert_nothing_torn(run: runs.Run) -> None:
    """Whole rows only, every update once, no temporary file, every checkpoint whole."""
    for name in ("metrics", "eval"):
        width = 8 * len(run.columns(name))
        assert run.file(f"{name}.bin").stat().st_size % width == 0, f"a torn {name} row"
    steps = run.read()[:, 0]
    assert np.array_equal(steps, np.arange(1, len(steps) + 1))
    assert not list(run.path.rglob("*.tmp")), list(run.path.rglob("*.tmp"))
    for ck in run.path.glob("checkpoints/*.pt"):
        read_checkpoint(ck)  # raises on a torn one


def kinds(run: runs.Run) -> list[str]:
    return [e["kind"] for e in run.events()]


class Listener:
    """A client attached before the fault: every message it gets, from a thread."""

    def __init__(self, run_dir: Path):
        self.client = Client.connect(run_dir)
        self.msgs: list[protocol.Message] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for m in self.client.messages():
                if not isinstance(m, protocol.Chunk):
                    self.msgs.append(m)
        except ClientError:
            pass

    def saw(self, pred) -> bool:
        return any(pred(m) for m in list(self.msgs))

    def close(self) -> None:
        self.client.close()


def greeting(run_dir: Path) -> tuple[protocol.Hello, protocol.Message | None]:
    """What a client connecting now gets: the hello and the message right after it."""
    with Client.connect(run_dir) as c:
        nxt = next(iter(c.messages(timeout=1.0)), None)
        return c.hello, nxt


def _mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode:
        raise OSError(r.stderr.strip() or f"mount {' '.join(args)} failed")


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    except OSError as err:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {err}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def spawn(run: runs.Run, resume: bool = False, prefix: list[str] | None = None):
    """``launch.spawn_run_engine``, optionally under a wrapper command (setpriv)."""
    if not prefix:
        return launch.spawn_run_engine(run, resume=resume)
    args = [*prefix, sys.executable, "-m", "dlf_tui.engine", str(run.path)]
    if resume:
        args.append("--resume")
    with open(run.file(runs.LOG), "ab") as log:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)


@pytest.fixture
def engines():
    """Engine processes a test starts: killed (SIGCONT first) whatever happens."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


def start(engines, run: runs.Run, **kw) -> subprocess.Popen:
    proc = spawn(run, **kw)
    engines.append(proc)
    launch.wait_until_listening(run, proc)
    return proc


def paused_for(run: runs.Run, text: str):
    def pred():
        st = run.raw_state()
        return st.get("state") == "paused" and text in st.get("reason", "")
    return pred


# -- a full disk ----------------------------------------------------------------------------
def test_a_full_disk_pauses_the_run_holds_its_rows_and_it_resumes_bit_exact(
        tmp_path, reference, engines):
    with tmpfs(tmp_path / "small", "1m") as mnt:
        run = runs.create_run(tiny_config(*FAULT_CFG), mnt / "runs")
        proc = start(engines, run)
        watcher = Listener(run.path)
        wait_for(paused_for(run, "disk full"), "pause for the full disk", proc=proc)
        st = run.raw_state()
        assert st["reason"].startswith("disk full: cannot write ")
        assert "held in memory" in st["reason"] and "retrying every 5 s" in st["reason"]
        assert_nothing_torn(run)
        assert run.rows() < STEPS and run.raw_state()["step"] >= run.rows()
        # the attached client was told; a new one is told at once, after its hello
        wait_for(lambda: watcher.saw(lambda m: m.type == "log" and m.kind == "fault"),
                 "fault log message")
        assert watcher.saw(lambda m: m.type == "state" and m.state == "paused"
                           and m.reason.startswith("disk full"))
        hello, nxt = greeting(run.path)
        assert hello.state == "paused"
        assert nxt is not None and nxt.type == "state" and nxt.reason.startswith("disk full")
        # resuming while the disk is still full says why not; so does a checkpoint
        r = cli("ctl", run.path, "resume")
        assert r.exit_code == 1 and "cannot resume: disk full" in r.stderr, r.output
        r = cli("ctl", run.path, "checkpoint")
        assert r.exit_code == 1 and "cannot checkpoint: disk full" in r.stderr, r.output
        assert_nothing_torn(run)
        # room again: resume writes what was held and the run goes on to its end
        _mount("-o", "remount,size=16m", str(mnt))
        r = cli("ctl", run.path, "resume")
        assert r.exit_code == 0, r.output
        assert proc.wait(120) == 0
        watcher.close()
        assert run.state()["state"] == "finished"
        assert_same_as(run, reference)
        assert_nothing_torn(run)
        k = kinds(run)
        assert k.count("fault") == 1 and k.count("recovered") == 1 and k[-1] == "finish"
        assert not run.file(runs.RESERVE).exists()


def test_stopped_while_the_disk_is_full_it_ends_as_crashed_and_resumes_from_its_checkpoint(
        tmp_path, reference, engines):
    with tmpfs(tmp_path / "small", "1m") as mnt:
        run = runs.create_run(tiny_config(*FAULT_CFG), mnt / "runs")
        proc = start(engines, run)
        wait_for(paused_for(run, "disk full"), "pause for the full disk", proc=proc)
        held = run.raw_state()["step"] - run.rows()
        assert held > 0
        r = cli("ctl", run.path, "stop")
        assert r.exit_code == 0, r.output
        assert proc.wait(60) == 1
        st = run.state()
        assert st["state"] == "crashed", st
        assert st["reason"].startswith("stopped while disk full: cannot write "), st["reason"]
        assert "were not saved" in st["reason"] and "resumes the run" in st["reason"]
        assert_nothing_torn(run)
        last = sorted(run.path.glob("checkpoints/*.pt"))[-1]
        assert last.name in st["reason"]
        _mount("-o", "remount,size=16m", str(mnt))
        r = cli("resume", run.path)
        assert r.exit_code == 0, r.output
        assert run.state()["state"] == "finished"
        assert_same_as(run, reference)
        assert_nothing_torn(run)


# -- a file size limit ------------------------------------------------------------------------
def test_a_file_size_limit_refuses_a_checkpoint_then_a_row_and_nothing_is_torn(
        tmp_path, engines):
    """A 105 kB checkpoint against a 100,000-byte limit (refused whole: no partial
    file); then 120,000 bytes, which cuts a metrics row in two (cut back: no torn
    row); then no limit, and the run retries by itself and ends bit-exact."""
    cfg = ("model.hidden=[2000]", "run.steps=3000", "run.checkpoint_every=500",
           "run.dtype=float64")
    ref = runs.create_run(tiny_config(*cfg), tmp_path / "ref")
    assert launch.spawn_run_engine(ref).wait(120) == 0
    assert ref.file("checkpoints/step-000000500.pt").stat().st_size > 100_000
    run = runs.create_run(tiny_config(*cfg), tmp_path / "runs")
    proc = launch.spawn_run_engine(run)
    engines.append(proc)
    unlimited = resource.RLIM_INFINITY
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (100_000, unlimited))
    launch.wait_until_listening(run, proc)

    wait_for(paused_for(run, "file size limit reached"), "pause for the size limit", proc=proc)
    reason = run.raw_state()["reason"]
    assert "cannot write checkpoints/step-000000500.pt" in reason and "nothing lost" in reason
    assert run.rows() == 500 and not run.file("checkpoints/step-000000500.pt").exists()
    assert_nothing_torn(run)

    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (120_000, unlimited))
    r = cli("ctl", run.path, "resume")  # retries on resume
    assert r.exit_code == 0, r.output
    wait_for(paused_for(run, "cannot write metrics.bin"), "pause for the metrics file", proc=proc)
    assert "held in memory" in run.raw_state()["reason"]
    width = 8 * len(run.columns())
    assert run.rows() < 120_000 // width + 1 and run.rows() * width <= 120_000
    assert_nothing_torn(run)

    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
    assert proc.wait(120) == 0  # it retried on its own, every few seconds
    assert run.state()["state"] == "finished"
    m = run.read()
    assert np.array_equal(m[:, 0], np.arange(1, 3001))
    assert np.array_equal(m, ref.read(), equal_nan=True)
    assert_nothing_torn(run)
    assert kinds(run).count("fault") == 2 and kinds(run).count("recovered") == 2


# -- a read-only directory, permission taken away ------------------------------------------------
def _read_only(run: runs.Run):
    try:
        _mount("--bind", str(run.path), str(run.path))
        _mount("-o", "remount,bind,ro", str(run.path))
    except OSError as err:
        subprocess.run(["umount", "-l", str(run.path)], capture_output=True)
        pytest.skip(f"cannot make a read-only bind mount here (needs root): {err}")
    return lambda: subprocess.run(["umount", "-l", str(run.path)], check=True)


def _no_permission(run: runs.Run):
    run.path.chmod(0o500)
    return lambda: run.path.chmod(0o700)


def _engine_prefix(fault: str) -> list[str]:
    if fault != "permission" or not ROOT:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores chmod and there is no setpriv to drop that power")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("fault,text", [("read-only", "file system is read-only"),
                                        ("permission", "permission denied")])
def test_a_directory_that_refuses_new_files_pauses_the_run_until_it_takes_them(
        tmp_path, reference, engines, fault, text):
    run = runs.create_run(tiny_config(*FAULT_CFG), tmp_path / "runs")
    proc = start(engines, run, prefix=_engine_prefix(fault))
    assert cli("ctl", run.path, "pause").exit_code == 0
    undo = (_read_only if fault == "read-only" else _no_permission)(run)
    try:
        r = cli("ctl", run.path, "resume")  # state.json (a new file) is refused
        assert r.exit_code == 0, r.output
        hello, nxt = wait_for(lambda: (lambda g: g if g[1] is not None else None)(greeting(run.path)),
                              "a greeting with a reason")
        assert hello.state == "paused"
        assert nxt.reason.startswith(f"{text}: cannot write state.json"), nxt.reason
        # state.json could not say so: it still says what it said before, untorn
        assert run.raw_state()["state"] == "paused"
        n = run.rows()
        r = cli("ctl", run.path, "checkpoint")
        assert r.exit_code == 1 and "cannot checkpoint: " in r.stderr, r.output
        assert run.rows() == n  # it does not train while anything is held
        assert_nothing_torn(run)
    finally:
        undo()
    assert proc.wait(120) == 0  # it retried by itself, wrote state.json, went on
    assert run.state()["state"] == "finished"
    assert_same_as(run, reference)
    assert_nothing_torn(run)
    assert "fault" in kinds(run) and "recovered" in kinds(run)


# -- a disk that answers EIO or EDQUOT ----------------------------------------------------------
@pytest.fixture(scope="module")
def fault_shim(tmp_path_factory) -> Path:
    """tests/data/fault_shim.c built: an LD_PRELOAD library that fails writes on demand."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the LD_PRELOAD fault shim (tests/data/fault_shim.c)")
    so = tmp_path_factory.mktemp("shim") / "fault_shim.so"
    src = Path(__file__).parent / "data" / "fault_shim.c"
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(src), "-ldl"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"the fault shim does not build here: {r.stderr.strip()[:200]}")
    return so


@pytest.mark.parametrize("err,kind", [(5, "I/O error"), (122, "disk quota exceeded")])
def test_a_disk_that_fails_writes_pauses_the_run_and_it_goes_on_once_the_disk_heals(
        tmp_path, reference, engines, fault_shim, err, kind):
    """Every write under the run directory fails with EIO (a failing disk, an NFS
    server gone) or EDQUOT (the user's quota) for as long as a trigger file exists:
    the run pauses with that reason, tears nothing, and when writes work again it
    retries by itself and ends bit-exact."""
    run = runs.create_run(tiny_config(*FAULT_CFG), tmp_path / "runs")
    trigger = tmp_path / "fail-writes"
    proc = start(engines, run, prefix=["env", f"LD_PRELOAD={fault_shim}",
                                       f"FAULT_PREFIX={run.path}", f"FAULT_TRIGGER={trigger}",
                                       f"FAULT_ERRNO={err}"])
    wait_for(lambda: run.rows() > 2000, "rows before the fault", proc=proc)
    trigger.touch()

    def told():  # state.json cannot be written now: a client is told
        hello, nxt = greeting(run.path)
        ok = (hello.state == "paused" and nxt is not None and nxt.type == "state"
              and nxt.reason.startswith(f"{kind}: "))
        return (hello, nxt) if ok else None

    _, nxt = wait_for(told, f"a pause for {kind}", proc=proc)
    assert "held in memory" in nxt.reason or "nothing lost" in nxt.reason, nxt.reason
    n = run.rows()
    time.sleep(0.5)
    assert run.rows() == n  # nothing more is written, nor trained, while it is held
    assert_nothing_torn(run)
    trigger.unlink()
    assert proc.wait(120) == 0  # it retried by itself once the disk took writes again
    assert run.state()["state"] == "finished"
    assert_same_as(run, reference)
    assert_nothing_torn(run)
    k = kinds(run)
    assert k.count("fault") == 1 and k.count("recovered") == 1 and k[-1] == "finish"
    [fault] = [e for e in run.events() if e["kind"] == "fault"]
    assert fault["message"].startswith(f"{kind}: cannot write "), fault


# -- the run directory removed -------------------------------------------------------------------
def test_a_removed_run_directory_ends_the_engine_with_the_reason(tmp_path, engines):
    run = runs.create_run(tiny_config("run.checkpoint_every=0"), tmp_path / "runs")
    err = tmp_path / "engine.stderr"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "dlf_tui.engine", str(run.path)],
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                                start_new_session=True)
    engines.append(proc)
    launch.wait_until_listening(run, proc)
    wait_for(lambda: run.rows() > 200, "rows", proc=proc)
    while run.path.exists():  # the engine may add a file meanwhile: remove until gone
        shutil.rmtree(run.path, ignore_errors=True)
    assert proc.wait(60) == 1
    text = err.read_text()
    assert "was removed" in text and "nothing more can be recorded" in text, text
    assert "Traceback" not in text
    assert not run.path.exists()  # nothing was made again in its place


# -- a stopped engine -------------------------------------------------------------------------------
def _in_thread(fn, *args):
    """Run ``fn`` in a thread; its result, or a failure if it does not return (a hang)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    t.join(60)
    assert out, f"{fn.__name__} did not return within 60 s"
    return out[0]


def test_a_stopped_engine_is_named_as_not_responding_with_what_to_do(tmp_path, engines):
    run = runs.create_run(tiny_config(), tmp_path / "runs")
    proc = start(engines, run)
    pid = proc.pid
    os.killpg(pid, signal.SIGSTOP)
    wait_for(lambda: liveness.process_state(pid) == "T", "stopped process")
    r = _in_thread(cli, "ctl", run.path, "pause")
    assert r.exit_code == 1
    [line] = r.stderr.strip().splitlines()
    assert f"engine pid {pid} is not responding" in line and "stopped" in line, line
    assert f"kill -CONT {pid}" in line and f"dlf-tui resume {run.id}" in line
    assert "None" not in line and "instead of hello" not in line
    # a full accept queue: connect() itself would block; the wait is still bounded
    raw = []
    for _ in range(24):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            with unix_address(run.path / runs.SOCKET) as address:
                s.connect(address)
        except (BlockingIOError, OSError):
            pass
        raw.append(s)

    def attach():
        try:
            Client.connect(run.path, timeout=5, hello_timeout=1)
        except ClientError as err:
            return str(err)
        return "connected"

    msg = _in_thread(attach)
    assert f"engine pid {pid} is not responding" in msg, msg
    assert run.state()["state"] == "running"  # alive: not shown as crashed
    for s in raw:
        s.close()
    os.killpg(pid, signal.SIGCONT)
    r = cli("ctl", run.path, "pause")
    assert r.exit_code == 0, r.output


def test_following_a_stopped_engine_warns_and_ctrl_c_leaves_it_as_it_is(tmp_path):
    """``dlf-tui run`` follows its engine; SIGSTOP it and the follower says within
    seconds that engine pid N is not responding (kill -CONT); SIGCONT and it says it
    answers again; stopped again, Ctrl-C returns at once and leaves the engine as it
    is, and once continued it acts on the stop it was sent."""
    rdir = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "dlf_tui", "run", "spiral-fig4", "--runs-dir",
                          str(rdir), "--set", "run.pace=2000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(p.stderr), daemon=True).start()
    pid = None
    try:
        wait_for(lambda: runs.list_runs(rdir) and runs.list_runs(rdir)[0].rows() > 200,
                 "rows", proc=p)
        [run] = runs.list_runs(rdir)
        pid = run.state()["pid"]
        said = lambda text: any(text in line for line in err)  # noqa: E731
        os.killpg(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: said("is not responding"), "the not-responding warning", 30)
        assert time.monotonic() - t0 < 12
        [line] = [ln for ln in err if "is not responding" in ln]
        assert f"engine pid {pid} is not responding" in line and "it is stopped" in line, line
        assert f"kill -CONT {pid}" in line and "Ctrl-C leaves it as it is" in line
        os.killpg(pid, signal.SIGCONT)
        wait_for(lambda: said("the engine responds again"), "the all-clear", 30)
        os.killpg(pid, signal.SIGSTOP)
        wait_for(lambda: sum("is not responding" in ln for ln in err) == 2, "a second warning", 30)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=15) == 1  # not the 60 s wait for an engine that cannot act
        wait_for(lambda: said("left running"), "the parting line", 5)
        assert f"engine pid {pid} left running" in "".join(err)
        assert liveness.process_state(pid) == "T"  # left as it was
        os.killpg(pid, signal.SIGCONT)
        wait_for(lambda: run.state()["state"] == "stopped", "the stop it was sent", 30)
        assert run.last_row()["step"] == run.rows()
    finally:
        if pid:
            try:
                os.killpg(pid, signal.SIGCONT)
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if p.poll() is None:
            p.kill()


# -- an engine that died without a word -------------------------------------------------------------
def test_resume_without_a_checkpoint_says_the_engines_reason(start_run):
    live = start_run(tiny_config("run.checkpoint_every=0"))
    live.wait_rows(100)
    os.killpg(live.proc.pid, signal.SIGKILL)
    live.proc.wait(10)
    assert live.run.file(runs.SOCKET).exists()  # left behind by kill -9
    st = live.run.state()
    assert st["state"] == "crashed" and st["reason"].startswith("engine gone (pid ")
    [line] = [ln for ln in cli("runs", "--runs-dir", live.path.parent).stdout.splitlines()
              if ln.startswith(live.run.id)]
    assert "crashed (engine gone)" in line
    r = cli("ctl", live.path, "pause")
    assert r.exit_code == 1 and "run is crashed: engine gone" in r.stderr, r.stderr
    r = cli("resume", live.path)
    assert r.exit_code == 2, r.output
    assert "cannot resume: " in r.stderr and "no checkpoint yet" in r.stderr, r.stderr
    assert "no engine is listening" not in r.stderr


def test_a_reused_pid_is_not_the_engine(tmp_path):
    """state.json names a live process that is not its engine: a later one with the
    same pid (its start time says so), so the run reads as crashed."""
    run = runs.create_run(tiny_config(), tmp_path / "runs")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "dlf_tui.engine"])  # looks like an engine by its command line
    try:
        wait_for(lambda: liveness.process_start(other.pid), "the process")
        doc = {"state": "running", "pid": other.pid, "started": time.time() + 5}
        runs.write_json_atomic(run.file(runs.STATE), doc)
        assert run.state()["state"] == "running"  # started before the run: could be it
        runs.write_json_atomic(run.file(runs.STATE), dict(doc, started=time.time() - 3600))
        st = run.state()
        assert st["state"] == "crashed" and "engine gone" in st["reason"]
        start_ticks = liveness.process_start(other.pid)
        runs.write_json_atomic(run.file(runs.STATE), dict(doc, pid_start=start_ticks + 1))
        assert run.state()["state"] == "crashed"
        runs.write_json_atomic(run.file(runs.STATE), dict(doc, pid_start=start_ticks))
        assert run.state()["state"] == "running" and run.is_live()
    finally:
        other.kill()
        other.wait()
    assert run.state()["state"] == "crashed"


# -- kill -9 at random moments ----------------------------------------------------------------------
@settings(max_examples=5, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kills=st.lists(st.tuples(st.integers(1200, STEPS - 500), st.floats(0.0, 0.03)),
                      min_size=1, max_size=2))
def test_kill_9_at_random_moments_then_resume_is_bit_exact(tmp_path_factory, reference, kills):
    run = runs.create_run(tiny_config(*FAULT_CFG), tmp_path_factory.mktemp("k9"))
    resume = False
    for at, extra in sorted(kills):
        proc = launch.spawn_run_engine(run, resume=resume)
        try:
            launch.wait_until_listening(run, proc)
            while run.rows() < at and proc.poll() is None:
                time.sleep(0.002)
            time.sleep(extra)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if run.raw_state().get("state") == "finished":
            break
        assert run.state()["state"] == "crashed"
        resume = True
    if run.raw_state().get("state") != "finished":
        proc = launch.spawn_run_engine(run, resume=True)
        assert proc.wait(120) == 0, launch.engine_failure(run)
    assert run.state()["state"] == "finished"
    assert_same_as(run, reference)
    assert not list(run.path.rglob("*.tmp"))


def test_a_cluster_jobs_state_is_not_judged_by_this_machines_pids(tmp_path):
    """A Slurm member records its host: from the login node its pid says nothing."""
    run = runs.create_run(tiny_config(), tmp_path / "runs")
    dead = {"state": "running", "pid": 2 ** 22 + 17, "started": time.time() - 5}
    runs.write_json_atomic(run.file(runs.STATE), {**dead, "host": "compute-node-7"})
    assert run.state()["state"] == "running"
    runs.write_json_atomic(run.file(runs.STATE), {**dead, "host": socket.gethostname()})
    assert run.state()["state"] == "crashed" and run.state()["gone"]
