"""Sweep members without a socket: the sweep engine trains them in its own
process, so a member is followed by re-reading its files every ``DISK_POLL_S``
(read-only) until it ends, or until it gets a socket of its own (a sequential
sweep starts one engine per member) for the live source to connect to."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dlf_tui.core.states import ENDED
from dlf_tui.store import run as runs, sweep as sweeps
from dlf_tui.ui import messages as M

if TYPE_CHECKING:
    from dlf_tui.ui.session.base import Cancelled, Post, RunSession
    from dlf_tui.ui.session.disk import DiskSource

DISK_POLL_S = 0.5  # how often a run without a socket (a sweep member) is re-read from disk
PENDING = "pending"  # the state shown for a member its sweep engine has not reached yet


def is_member(run: runs.Run) -> bool:
    """A member of a sweep (its directory is inside a sweep directory)."""
    return sweeps.is_sweep(run.path.parent)


def member_live(run: runs.Run) -> bool:
    """A member still trains while its sweep engine runs and it has not ended
    (also before its first row: a pending member has no state yet)."""
    if run.is_live():
        return True
    own = run.raw_state().get("state")
    return own not in ENDED and runs.Run(run.path.parent).is_live()


def still_live(run: runs.Run) -> bool:
    """A run (or sweep member) whose rows may still grow."""
    return member_live(run) if is_member(run) else run.is_live()


class MemberPolling:
    """Follows a socket-less sweep member from disk through ``disk``."""

    def __init__(self, session: "RunSession", disk: "DiskSource") -> None:
        self.s = session
        self.disk = disk

    def follow(self, post: "Post", cancelled: "Cancelled") -> bool:
        """Open the member read-only and follow its files.  Returns True when
        the member got a socket of its own to connect to."""
        s, disk = self.s, self.disk
        disk.open(post, ended=False)
        sweep_id = s.run.path.parent.name
        post(M.EventLogged(0, "ui", f"member of sweep {sweep_id}: following its files "
                                    "(read-only; the sweep engine trains it)"))
        shown = (s.state, s.reason)
        while not cancelled() and member_live(s.run):
            time.sleep(DISK_POLL_S)
            if s.run.file(runs.SOCKET).exists():
                return True
            if disk.poll():
                post(M.MetricsArrived(0, s.history.rows))
            disk.load_events(post)
            if (s.state, s.reason) != shown:
                shown = (s.state, s.reason)
                post(M.StateChanged(s.state, s.step, s.total, s.rate, s.reason))
        if not cancelled():
            disk.load_events(post)
            disk.finish(post)
        return False
