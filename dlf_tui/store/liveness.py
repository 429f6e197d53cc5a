"""Whether the process a run's ``state.json`` names is still the one writing it,
and whether it is able to answer (a stopped or stuck process is alive but mute)."""

from __future__ import annotations

import os
from typing import Any

SLACK_S = 30.0  # a process started this long after the state.json naming it is another one (clock steps allowed for)


def _stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/<pid>/stat`` after the command name (field 3 on), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None
    where that cannot be read.  With the pid it names one process: a pid the
    system reused belongs to a process started later."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def started_at(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (None: unknown)."""
    ticks, boot = process_start(pid), _boot_time()
    if ticks is None or boot is None:
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def process_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (R running, S sleeping, D waiting on
    the disk, T stopped, t traced, Z zombie), '' when unknown or gone."""
    fields = _stat_fields(pid)
    return fields[0].decode("ascii", "replace") if fields else ""


def engine_alive(pid: Any, start: Any = None, started: Any = None) -> bool:
    """True if ``pid`` is the live process that writes the run: the one that
    started at ``start`` (``state.json``'s ``pid_start``; a user's own training
    loop records it), else one that started no later than ``started`` (the time
    ``state.json`` says the run started: a reused pid belongs to a later process),
    and a dlf-tui engine process by its command line."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 1 << 31:
        return False  # not a pid (a hostile state.json: os.kill would overflow)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: trust the signal probe
    try:
        if fields[0] == b"Z":  # a zombie has exited
            return False
        if isinstance(start, int) and not isinstance(start, bool):
            return int(fields[19]) == start
        if isinstance(started, (int, float)) and not isinstance(started, bool):
            began = started_at(pid)
            if began is not None and began > started + SLACK_S:
                return False  # the pid was reused after the run started
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"dlf_tui.engine" in fh.read()
    except (OSError, ValueError, IndexError):
        return True


def not_responding(pid: int | None) -> str:
    """Why process ``pid`` may not answer, as the kernel sees it ('' when nothing is seen)."""
    if not pid:
        return ""
    st = process_state(pid)
    if st in ("T", "t"):
        return "it is stopped (SIGSTOP, Ctrl-Z or a debugger)"
    if st == "D":
        return "it is waiting on the disk (uninterruptible I/O)"
    if st == "Z":
        return "it has exited"
    return ""
