"""Starting engines: ``python -m dlf_tui.engine RUN_DIR`` for a run, the same with
a ``SWEEP_DIR`` for a sweep, each in its own session so that a closed terminal or
TUI never stops it; then waiting until a run's engine listens, or saying in one
line why it failed.  No torch here (the CLI and the UI start engines).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dlf_tui.core.errors import RunError
from dlf_tui.store.run import LOG, SOCKET, Run

if TYPE_CHECKING:
    from dlf_tui.store.sweep import Sweep


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    """Start ``args`` in a new session, stdin closed, stdout and stderr appended to ``log``."""
    with open(log, "ab") as logf:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True, close_fds=True)


def _clear_stale_socket(run: Run) -> None:
    """Remove a ``control.sock`` left by an engine that died without a word (kill -9,
    out of memory), so that waiting for the new engine's socket waits for *its* one."""
    if run.is_live():
        return  # a live engine's: never touch it
    try:
        os.unlink(run.file(SOCKET))
    except OSError:
        pass


def spawn_run_engine(run: Run, resume: bool = False, nproc: int = 1, fork: bool = False,
                     edits: dict | None = None) -> subprocess.Popen:
    """Start ``python -m dlf_tui.engine RUN_DIR``; its output goes to ``engine.log``.
    With ``nproc`` > 1 it is rank 0 of a data-parallel run and starts the other ranks.
    ``fork``: the directory is a fork (``store/fork.py``); ``edits``: live edits from the
    first update it trains (``resume --set``)."""
    _clear_stale_socket(run)
    args = [sys.executable, "-m", "dlf_tui.engine", str(run.path)]
    if resume:
        args.append("--resume")
    if fork:
        args.append("--fork")
    if edits:
        args += ["--edits", json.dumps(edits)]
    if nproc != 1:
        args += ["--nproc", str(nproc)]
    return _spawn(args, run.file(LOG))


def spawn_sweep_engine(sweep: "Sweep", resume: bool = False) -> subprocess.Popen:
    """Start ``python -m dlf_tui.engine SWEEP_DIR``; output to its ``engine.log``."""
    args = [sys.executable, "-m", "dlf_tui.engine", str(sweep.path)]
    if resume:
        args.append("--resume")
    return _spawn(args, sweep.file(LOG))


def wait_until_listening(run: Run, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Block until the engine accepts connections; raise ``RunError`` with the
    engine's own one-line reason if it exits first."""
    sock = run.file(SOCKET)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise RunError(engine_failure(run) or exit_text(code))
        if sock.exists():
            return
        time.sleep(0.02)
    raise RunError(f"engine pid {proc.pid} did not start within {timeout:g} s "
                   f"(see {run.file(LOG)})")


def exit_text(code: int) -> str:
    """How an engine process ended, in words: its status, or the signal that killed it."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the engine was killed by {name}{hint} before it listened"
    return f"engine exited with status {code}"


def engine_failure(run: Run) -> str:
    """The one-line reason a run (or a sweep: ``Run(sweep.path)``) failed:
    state.json's, else engine.log's last error line."""
    reason = run.raw_state().get("reason", "")
    if reason:
        return reason
    try:
        lines = run.file(LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("error: ") or "Error" in line:
            return line.removeprefix("error: ").strip()
    return lines[-1].strip() if lines else ""
