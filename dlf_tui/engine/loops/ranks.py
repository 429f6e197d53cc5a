"""Rank 0's view of the other ranks' processes, and a rank's tie to rank 0.

Rank 0 starts ranks 1 … N−1 itself (children in its process group, each logging
to ``engine-rank<R>.log``) and a watchdog thread polls them: when one dies, the
run ends as crashed with that rank's own reason (rank 0's collective fails, or
after ``GRACE_S`` the watchdog ends rank 0 itself).  The other ranks die with
rank 0 (``follow_parent``) and leave stopping to it.  Under torchrun the ranks
are torchrun's (``TorchrunPeers``): they die with its agent, and tell rank 0 why
they failed through their ``rank-<R>.json``.
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
from dlf_tui.core.errors import RunError
from dlf_tui.store import files
from dlf_tui.store import run as runs

log = logging.getLogger("dlf_tui.engine")

GRACE_S = 5.0  # a dead rank: time for rank 0's collective to fail before the watchdog ends it


def loopback_gloo() -> None:
    """Every rank on this machine: gloo between them over loopback (unless the user
    chose an interface with ``GLOO_SOCKET_IFNAME``)."""
    if "GLOO_SOCKET_IFNAME" in os.environ:
        return
    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        names = set()
    for name in ("lo", "lo0"):
        if name in names:
            os.environ["GLOO_SOCKET_IFNAME"] = name
            break


def start_ranks(run_dir: Path, world: int, resume: bool) -> dict[int, subprocess.Popen]:
    """Rank 0 starts ranks 1 … world−1: children in its process group (a signal to
    the run's group reaches them all), each logging to ``engine-rank<R>.log``."""
    loopback_gloo()
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


class TorchrunPeers:
    """Rank 0's view of the other ranks of a torchrun job: torchrun started them, watches
    them and restarts them, so there is nothing to adopt, stop or join here.  What rank
    0 can tell when its collective fails is why: a rank that failed wrote its reason
    into ``rank-<R>.json`` (``note_failure``, marked with this attempt's ``token``), and a
    rank on this machine that is gone or a zombie left its exit status in ``/proc``."""

    WAIT_S = 2.0  # after a collective failed: time for the rank that failed to say why

    def __init__(self, run_dir: Path, world: int):
        self.dir = Path(run_dir)
        self.world = world
        self.token = ""  # this attempt's: rank 0 chose it (``distributed.meet``)
        self.children: dict[int, subprocess.Popen] = {}  # none: torchrun's
        self.closing = False
        self.failure = ""
        self.on_failure: Callable[[str], None] = lambda reason: None
        self._where: list[tuple[str, int]] = []  # (host, pid) of each rank

    def adopt_pids(self, where: list[tuple[str, int]]) -> None:
        self._where = list(where)

    def pids(self) -> list[int]:
        return [p for _, p in self._where] or [os.getpid()]

    def adopt(self, children: dict[int, subprocess.Popen]) -> None:  # pragma: no cover - unused
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float) -> None:
        self.closing = True

    def note_failure(self, rank: int, line: str) -> None:
        """A rank > 0 failed: say why in ``rank-<R>.json`` for rank 0 (best effort)."""
        try:
            runs.write_json_atomic(self.dir / f"rank-{rank}.json", {
                "rank": rank, "world": self.world, "pid": os.getpid(), "host": socket.gethostname(),
                "token": self.token, "error": line, "time": time.time()})
        except OSError:
            pass

    def _noted(self) -> str:
        for r in range(1, self.world):
            try:
                doc = files.read_json(self.dir / f"rank-{r}.json")
            except (OSError, RunError):
                continue
            if isinstance(doc, dict) and doc.get("token") == self.token and doc.get("error"):
                return f"rank {r} (pid {doc.get('pid')}): {doc['error']}"
        return ""

    def _gone_here(self) -> str:
        host = socket.gethostname()
        for r, (h, pid) in enumerate(self._where):
            if r == 0 or h != host:
                continue
            how = exit_status(pid)
            if how:
                return f"rank {r} (pid {pid}) {how}"
        return ""

    def abort(self, line: str) -> str:
        """Rank 0 failed: the other ranks' reason when one of them failed first, else ``line``."""
        self.closing = True
        if not lost_contact(line):
            return self._noted() or line  # rank 0's own failure (the others wait for it)
        deadline = time.monotonic() + self.WAIT_S
        story = ""
        while not story and time.monotonic() < deadline:
            story = self._noted()
            if not story and self._gone_here():
                time.sleep(0.3)  # gone: its own words may still be on their way (a shared file system)
                story = self._noted() or self._gone_here()
            if not story:
                time.sleep(0.05)
        self.failure = story
        return story or f"lost contact with the other ranks ({line})"


def lost_contact(line: str) -> bool:
    """Does a one-line error say a collective lost its peers (gloo, NCCL, the store)?"""
    low = line.lower()
    return any(w in low for w in ("gloo", "nccl", "connection", "distbackenderror",
                                  "distnetworkerror", "disterror", "broken pipe", "timed out"))


def exit_status(pid: int) -> str:
    """How process ``pid`` (not our child) ended, as far as ``/proc`` tells: '' while
    it runs; for a zombie its status ('was killed by SIGKILL', 'exited with status 1')."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "is gone (torchrun's output says how it ended)"
        except OSError:
            return ""
        return ""
    if not fields or fields[0] != b"Z":
        return ""
    try:
        code = int(fields[49])  # field 52: the exit status as waitpid(2) reports it
    except (IndexError, ValueError):
        return "is gone (torchrun's output says how it ended)"
    if code & 0x7F:
        try:
            name = signal.Signals(code & 0x7F).name
        except ValueError:
            name = str(code & 0x7F)
        return f"was killed by {name}"
    return f"exited with status {code >> 8}"


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
