"""Engine process: ``python -m dlf_tui.engine RUN_DIR [--resume] [--nproc N]``.

Started by the CLI or the TUI in its own session, so closing the terminal or the
TUI never stops training.  Exit status: 0 finished/stopped, 1 crashed, 2 could
not start (the reason is the last line of ``engine.log`` and in ``state.json``).

With ``--nproc N`` this process is rank 0 and starts ranks 1 … N−1 itself
(``--rank R``, see ``distributed.py``); only rank 0 writes ``state.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from dlf_tui.store import run as runs


def _fail(run_dir: Path, reason: str) -> int:
    print(f"error: {reason}", file=sys.stderr, flush=True)
    try:
        runs.write_json_atomic(run_dir / runs.STATE, {
            "state": "crashed", "pid": os.getpid(), "reason": reason, "ended": time.time()})
    except OSError:
        pass
    return 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlf_tui.engine")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ap.add_argument("--nproc", type=int, default=1,
                    help="train with N processes (DistributedDataParallel); this one is rank 0")
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)  # set by rank 0
    args = ap.parse_args(argv)
    run_dir: Path = args.run_dir
    if args.nproc < 1 or not 0 <= args.rank < args.nproc:
        print(f"error: --nproc {args.nproc} --rank {args.rank}: need nproc >= 1 and "
              f"0 <= rank < nproc", file=sys.stderr)
        return 2
    if not (run_dir / runs.CONFIG).exists():
        print(f"error: {run_dir}: not a run directory (no {runs.CONFIG})", file=sys.stderr)
        return 2
    if args.rank:
        return _other_rank(run_dir, args.rank, args.nproc, args.resume)
    logging.basicConfig(
        filename=run_dir / runs.LOG, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s")
    runs.write_json_atomic(run_dir / runs.STATE, {"state": "starting", "pid": os.getpid(),
                                                  "started": time.time()})
    # the other ranks import torch while this one does
    children = _start_ranks(run_dir, args.nproc, args.resume) if args.nproc > 1 else {}
    from dlf_tui.engine.trainer import Engine, SetupError  # torch is imported here, after the cheap checks

    group = None
    try:
        if args.nproc > 1:
            from dlf_tui.engine.loops import distributed

            group = distributed.launch(run_dir, args.nproc, children)
        engine = Engine(run_dir, resume=args.resume, dist=group)
    except (SetupError, runs.RunError, OSError) as err:
        logging.getLogger("dlf_tui.engine").error("cannot start: %s", err)
        if group is not None:
            group.abort(str(err))
        return _fail(run_dir, str(err))
    except Exception as err:
        if group is None:
            raise
        # e.g. a rank died while the ranks were meeting: say which, stop the others
        logging.getLogger("dlf_tui.engine").exception("cannot start")
        line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".strip()
        _fail(run_dir, group.abort(line))
        return 1
    try:
        return engine.run()
    finally:
        engine.close()


def _start_ranks(run_dir: Path, world: int, resume: bool) -> dict:
    """Rank 0 starts ranks 1 … world−1: children in its process group (a signal to
    the run's group reaches them all), each logging to ``engine-rank<R>.log``."""
    import socket
    import subprocess

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


def _other_rank(run_dir: Path, rank: int, world: int, resume: bool) -> int:
    """Ranks 1 … N−1 (started by rank 0): follow rank 0's plans; log to their own file."""
    from dlf_tui.engine.loops import distributed

    logging.basicConfig(
        filename=run_dir / runs.RANK_LOG.format(rank=rank), level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s")
    try:
        group = distributed.join(run_dir, rank, world)
        worker = distributed.Worker(run_dir, resume=resume, dist=group)
    except (distributed.SetupError, runs.RunError, OSError) as err:
        logging.getLogger("dlf_tui.engine").error("rank %d cannot start: %s", rank, err)
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:  # noqa: BLE001 - e.g. rank 0 went away during the start
        logging.getLogger("dlf_tui.engine").exception("rank %d cannot start", rank)
        print(f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
              file=sys.stderr, flush=True)
        return 1
    try:
        return worker.run()
    finally:
        worker.close()


if __name__ == "__main__":
    sys.exit(main())
