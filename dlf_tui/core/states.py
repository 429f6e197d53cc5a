"""The states a run (or a sweep) goes through, spelled once.

``starting`` → ``running`` ⇄ ``paused`` → ``stopping`` → one of the ended states:
``stopped`` (asked to; resumable), ``finished`` (all updates done), ``crashed``
(an error; the reason is in ``state.json``).  A divergence pauses the run.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    CRASHED = "crashed"


STARTING, RUNNING, PAUSED, STOPPING = (RunState.STARTING, RunState.RUNNING, RunState.PAUSED,
                                       RunState.STOPPING)
STOPPED, FINISHED, CRASHED = RunState.STOPPED, RunState.FINISHED, RunState.CRASHED

ALL = tuple(RunState)
LIVE = (STARTING, RUNNING, PAUSED, STOPPING)  # an engine process should be there
ENDED = (STOPPED, FINISHED, CRASHED)  # state.json also records when it ended
