"""This process as a rank of a torchrun job, and where that job's run directory is.

``torchrun --nproc-per-node=N [--nnodes=M --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT]
-m dlf_tui run PRESET`` starts N×M processes of ``dlf-tui run`` (``cli/cluster.py``):
rank 0 makes the run directory, the others learn it from rank 0 through torchrun's
store (``engine/loops/distributed.py``).  When torchrun restarts the ranks
(``--max-restarts``), rank 0 of the new attempt continues the directory the first
attempt made: the first attempt notes it under ``RUNS_DIR/.torchrun/``, keyed by
torchrun's run id (``--rdzv-id``; a one-node job's own id otherwise).  No torch here.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from dlf_tui.core import series
from dlf_tui.core.errors import RunError
from dlf_tui.store import files
from dlf_tui.store import run as runs

POINTERS = ".torchrun"  # under the runs directory: one small JSON file per torchrun job


@dataclass(frozen=True)
class TorchrunEnv:
    """What torchrun (or any launcher setting the same variables) says about this process."""
    rank: int
    world: int
    local_rank: int
    local_world: int
    nodes: int
    restart: int  # TORCHELASTIC_RESTART_COUNT: 0 on the first attempt
    run_id: str  # TORCHELASTIC_RUN_ID ('none' for a c10d job without --rdzv-id)

    @property
    def key(self) -> str:
        """What names this job across its restarts: torchrun's run id, else (a job
        without one) the agent process on this host, which lives through restarts."""
        if self.run_id and self.run_id != "none":
            return f"id:{self.run_id}"
        return f"agent:{socket.gethostname()}:{os.getppid()}"


def from_environ(env: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The torchrun environment of this process, or None outside one.  Raises
    ``RunError`` for variables that are set but are not what torchrun sets."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    if "TORCHELASTIC_RUN_ID" not in env and not ("MASTER_ADDR" in env and "MASTER_PORT" in env):
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        nodes = int(env.get("GROUP_WORLD_SIZE", max(1, world // max(1, local_world))))
        restart = int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    except ValueError:
        raise RunError("torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE must be "
                       "whole numbers") from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < max(1, local_world)):
        raise RunError(f"torchrun: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local_rank}: "
                       "need 0 <= RANK < WORLD_SIZE")
    return TorchrunEnv(rank, world, local_rank, local_world, nodes, restart,
                       env.get("TORCHELASTIC_RUN_ID", ""))


def _pointer(runs_dir: Path, env: TorchrunEnv) -> Path:
    return Path(runs_dir) / POINTERS / (hashlib.sha256(env.key.encode()).hexdigest()[:32] + ".json")


def remember(runs_dir: Path, env: TorchrunEnv, run_dir: Path) -> None:
    """Rank 0 of a first attempt: note the run directory for later attempts."""
    path = _pointer(runs_dir, env)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        runs.write_json_atomic(path, {"run": str(Path(run_dir).resolve()), "key": env.key,
                                      "created": time.time()})
    except OSError as err:
        raise RunError(f"cannot write {path}: {err.strerror}") from None


def recall(runs_dir: Path, env: TorchrunEnv) -> Path:
    """Rank 0 of a restarted attempt: the run directory the first attempt made."""
    path = _pointer(runs_dir, env)
    try:
        doc = files.read_json(path)
        run_dir = Path(doc["run"])
    except (OSError, RunError, KeyError, TypeError, ValueError):
        raise RunError(f"torchrun restart {env.restart}: no note of the run directory the first "
                       f"attempt made ({path}); start it again with dlf-tui resume RUN") from None
    if not (run_dir / runs.CONFIG).is_file():
        raise RunError(f"torchrun restart {env.restart}: {run_dir} is not a run directory")
    return run_dir


def has_checkpoint(run_dir: Path) -> bool:
    return any((Path(run_dir) / runs.CHECKPOINTS).glob("step-*.pt"))


def clear_series(run_dir: Path) -> None:
    """A run restarted before its first checkpoint starts again from update 1."""
    for name in series.SERIES:
        for suffix in (".bin", ".json"):
            (Path(run_dir) / f"{name}{suffix}").unlink(missing_ok=True)
