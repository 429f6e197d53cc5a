"""Whether the process a run's ``state.json`` names is still the one writing it."""

from __future__ import annotations

import os
from typing import Any

def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None
    where that cannot be read.  With the pid it names one process: a pid the
    system reused belongs to a process started later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def engine_alive(pid: Any, start: Any = None) -> bool:
    """True if ``pid`` is the live process that writes the run: the one that
    started at ``start`` (``state.json``'s ``pid_start``; a user's own training
    loop records it), or else a dlf-tui engine process by its command line."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 1 << 31:
        return False  # not a pid (a hostile state.json: os.kill would overflow)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
        if fields[0] == b"Z":  # a zombie has exited
            return False
        if isinstance(start, int) and not isinstance(start, bool):
            return int(fields[19]) == start
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"dlf_tui.engine" in fh.read()
    except (OSError, ValueError, IndexError):
        return True  # no /proc: trust the signal probe
