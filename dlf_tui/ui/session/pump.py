"""The event pump: which source follows a session, run in the app's thread worker.

A sweep member without a socket (and not spawned by this TUI) is followed
from disk (``MemberPolling``) until it ends or gets a socket of its own; any
other run goes to the live source, which opens it from disk when no engine
answers.
"""

from __future__ import annotations

from dlf_tui.store import run as runs
from dlf_tui.ui.session.base import Cancelled, Post, RunSession
from dlf_tui.ui.session.disk import DiskSource
from dlf_tui.ui.session.live import LiveSource
from dlf_tui.ui.session.member import MemberPolling, is_member


def pump(session: RunSession, post: Post, cancelled: Cancelled) -> None:
    disk = DiskSource(session)
    if session.proc is None and is_member(session.run) and not session.run.file(runs.SOCKET).exists():
        if not MemberPolling(session, disk).follow(post, cancelled):
            return
        # a sequential sweep started this member's own engine (with a socket): connect
    LiveSource(session, disk).pump(post, cancelled)
