"""Rank 0's view of the other ranks' processes, and a rank's tie to rank 0.

Rank 0 starts ranks 1 … N−1 itself (children in its process group, each logging
to ``engine-rank<R>.log``) and a watchdog thread polls them: when one dies, the
run ends as crashed with that rank's own reason (rank 0's collective fails, or
after ``GRACE_S`` the watchdog ends rank 0 itself).  The other ranks die with
rank 0 (``follow_parent``) and leave stopping to it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from dlf_tui.core import states
from dlf_tui.store import run as runs

log = logging.getLogger("dlf_tui.engine")

GRACE_S = 5.0  # a dead rank: time for rank 0's collective to fail before the watchdog ends it


def start_ranks(run_dir: Path, world: int, resume: bool) -> dict[int, subprocess.Popen]:
    """Rank 0 starts ranks 1 … world−1: children in its process group (a signal to
    the run's group reaches them all), each logging to ``engine-rank<R>.log``."""
    if "GLOO_SOCKET_IFNAME" not in os.environ:  # gloo between the ranks over loopback
        try:
            names = {name for _, name in socket.if_nameindex()}
        except OSError:
            names = set()
        for name in ("lo", "lo0"):
            if name in names:
                os.environ["GLOO_SOCKET_IFNAME"] = name
                break
    try:
        (run_dir / runs.RENDEZVOUS).unlink()  # left by an earlier session that crashed
    except FileNotFoundError:
        pass
    children = {}
    for r in range(1, world):
        args = [sys.executable, "-m", "dlf_tui.engine", str(run_dir), "--nproc", str(world),
                "--rank", str(r)] + (["--resume"] if resume else [])
        with open(run_dir / runs.RANK_LOG.format(rank=r), "ab") as logf:
            children[r] = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf,
                                           stderr=logf, close_fds=True)
    return children


class RankProcesses:
    """Rank 0's children (ranks 1 … N−1): watched, stopped, and why one died."""

    def __init__(self, run_dir: Path, world: int):
        self.dir = Path(run_dir)
        self.world = world
        self.children: dict[int, subprocess.Popen] = {}  # rank → process
        self.closing = False  # the other ranks are told to stop (or are being stopped)
        self.failure = ""  # why a rank died
        self.on_failure: Callable[[str], None] = self._failed_before_start

    def pids(self) -> list[int]:
        return [os.getpid()] + [p.pid for _, p in sorted(self.children.items())]

    def adopt(self, children: dict[int, subprocess.Popen]) -> None:
        self.children = dict(children)
        threading.Thread(target=self._watch, name="rank-watchdog", daemon=True).start()

    def _story(self, rank: int, proc: subprocess.Popen) -> str:
        code = proc.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"rank {rank} (pid {proc.pid}) was killed by {name}"
        why = ""  # the rank's own one-line reason: the last ``error:`` line of its log
        try:
            log_file = self.dir / runs.RANK_LOG.format(rank=rank)
            lines = log_file.read_text(errors="replace").splitlines()
            why = next((ln[7:] for ln in reversed(lines) if ln.startswith("error: ")), "")
        except OSError:
            pass
        return (f"rank {rank} (pid {proc.pid}) exited with status {code}"
                + (f": {why}" if why else ""))

    def _dead(self) -> str:
        for r, p in sorted(self.children.items()):
            if p.poll() is not None:
                return self._story(r, p)
        return ""

    def _watch(self) -> None:
        while not self.closing:
            time.sleep(0.2)
            if self.closing:
                return
            story = self._dead()
            if not story:
                continue
            self.failure = story
            log.error("%s", story)
            deadline = time.monotonic() + GRACE_S
            while time.monotonic() < deadline:
                if self.closing:  # the main thread saw it and ends the run itself
                    return
                time.sleep(0.05)
            # rank 0 is stuck in a collective with a dead rank: end the run from here
            self.closing = True
            self.stop()
            try:
                self.on_failure(story)
            except Exception:  # noqa: BLE001 - the process ends either way
                log.error("while reporting the failure:\n%s", traceback.format_exc())
            logging.shutdown()
            os._exit(1)

    def _failed_before_start(self, reason: str) -> None:
        runs.write_json_atomic(self.dir / runs.STATE, {
            "state": states.CRASHED, "pid": os.getpid(), "reason": reason, "ended": time.time(),
            "nproc": self.world, "ranks": self.pids()})

    def stop(self) -> None:
        for p in self.children.values():
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for p in self.children.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass

    def join(self, timeout: float) -> None:
        """The run ended: wait for the other ranks to stop, kill what does not."""
        self.closing = True
        deadline = time.monotonic() + timeout
        for r, p in sorted(self.children.items()):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("rank %d did not stop; killed", r)
        self.stop()
        for r, p in sorted(self.children.items()):
            if p.returncode:
                log.warning("%s", self._story(r, p))

    def abort(self, line: str) -> str:
        """Rank 0 failed (or a rank died): stop the other ranks; the one-line reason."""
        self.closing = True
        story = self.failure
        deadline = time.monotonic() + 1.0  # a collective can fail a moment before the poll sees why
        while not story and self.children and time.monotonic() < deadline:
            story = self._dead()
            if not story:
                time.sleep(0.05)
        self.stop()
        return story or line


def follow_parent() -> None:
    """Die with rank 0, and leave stopping to it: SIGTERM/SIGINT to the whole
    process group (``kill -TERM -PGID``, a closed terminal) must stop the run
    cleanly, which only rank 0 can do (it tells the others at the next chunk)."""
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # where prctl is missing: poll
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # pragma: no cover - rank 0 died before prctl
        os._exit(1)
