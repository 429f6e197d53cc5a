"""Engine process: ``python -m dlf_tui.engine RUN_DIR [--resume] [--nproc N]``, or
``python -m dlf_tui.engine SWEEP_DIR [--resume] [--mode M] [--threads N]``.

Started by the CLI or the TUI in its own session, so closing the terminal or the
TUI never stops training.  Exit status: 0 finished/stopped, 1 crashed, 2 could
not start (the reason is the last line of ``engine.log`` and in ``state.json``).

With ``--nproc N`` this process is rank 0 and starts ranks 1 … N−1 itself
(``--rank R``, see ``loops/distributed.py``); only rank 0 writes ``state.json``.
Under torchrun, ``dlf-tui run``/``resume`` call ``torchrun()`` in each rank's own
process instead (``cli/cluster.py``).  A sweep whose ``executor.json`` names another
executor (``--devices``, ``--executor slurm``) is run by ``loops/executors.py``: this
process then starts and watches the members' engines or jobs, and trains nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from dlf_tui.core import states
from dlf_tui.core.errors import RunError, SetupError, first_line, one_line
from dlf_tui.engine.loops.ranks import start_ranks  # no torch: ranks start while rank 0 imports it
from dlf_tui.store import run as runs, sweep as sweeps

SWEEP_MODES = ("auto", "threads", "batched", "vmap", "sequential")  # see loops/sweep.py


def _fail(run_dir: Path, reason: str) -> int:
    print(f"error: {reason}", file=sys.stderr, flush=True)
    try:
        runs.write_json_atomic(run_dir / runs.STATE, {
            "state": states.CRASHED, "pid": os.getpid(), "reason": reason, "ended": time.time()})
    except OSError:
        pass
    return 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlf_tui.engine")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ap.add_argument("--fork", action="store_true",
                    help="a fork's directory (dlf-tui fork): reach its fork update first")
    ap.add_argument("--edits", default="{}",
                    help="live edits (JSON) applied from the first update trained (resume --set)")
    ap.add_argument("--nproc", type=int, default=1,
                    help="train with N processes (DistributedDataParallel); this one is rank 0")
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)  # set by rank 0
    ap.add_argument("--mode", default=os.environ.get("DLF_TUI_SWEEP_MODE", "auto"),
                    choices=SWEEP_MODES, help="a sweep: how its members train")
    ap.add_argument("--threads", type=int, default=None, help="a sweep: worker threads")
    args = ap.parse_args(argv)
    run_dir: Path = args.run_dir
    if sweeps.is_sweep(run_dir):
        return _sweep(run_dir, args.resume, args.mode, args.threads)
    if args.nproc < 1 or not 0 <= args.rank < args.nproc:
        print(f"error: --nproc {args.nproc} --rank {args.rank}: need nproc >= 1 and "
              f"0 <= rank < nproc", file=sys.stderr)
        return 2
    if not (run_dir / runs.CONFIG).exists():
        print(f"error: {run_dir}: not a run directory (no {runs.CONFIG}), not a sweep directory "
              f"(no {sweeps.SWEEP})", file=sys.stderr)
        return 2
    why = runs.Run(run_dir).own_loop_reason()
    if why:  # its state.json stays as the user's loop left it
        print(f"error: {why}", file=sys.stderr)
        return 2
    if args.rank:
        return _other_rank(run_dir, args.rank, args.nproc, args.resume)
    logging.basicConfig(
        filename=run_dir / runs.LOG, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s")
    runs.write_json_atomic(run_dir / runs.STATE, {"state": states.STARTING, "pid": os.getpid(),
                                                  "started": time.time()})
    # the other ranks import torch while this one does
    children = start_ranks(run_dir, args.nproc, args.resume) if args.nproc > 1 else {}
    # torch is imported here, after the cheap checks
    from dlf_tui.engine.loops import distributed
    from dlf_tui.engine.loops.single import SingleRun

    group = None
    try:
        if args.nproc > 1:
            group = distributed.launch(run_dir, args.nproc, children)
        engine = SingleRun(run_dir, resume=args.resume, dist=group, fork=args.fork,
                           edits=_edits(args.edits))
    except (SetupError, RunError, OSError) as err:
        logging.getLogger("dlf_tui.engine").error("cannot start: %s", err)
        if group is not None:
            group.abort(str(err))
        return _fail(run_dir, str(err))
    except Exception as err:
        if group is None:
            raise
        # e.g. a rank died while the ranks were meeting: say which, stop the others
        logging.getLogger("dlf_tui.engine").exception("cannot start")
        _fail(run_dir, group.abort(one_line(err)))
        return 1
    try:
        return engine.run()
    finally:
        engine.close()


def torchrun(run_dir: Path | None, resume: bool = False, edits: dict | None = None,
             error: str = "") -> int:
    """This process is a rank of a torchrun job (``dlf-tui run``/``resume`` under
    torchrun: ``cli/cluster.py``).  Rank 0 passes the run directory it made or resumes
    (or ``error``: why it could not), and tells the other ranks, which pass None.
    Rank 0 then is the engine of the run (pid, socket, events, metrics, checkpoints,
    as with ``--nproc``); the others follow its plans.  Exit status as ``main``'s."""
    import uuid

    from dlf_tui.store import torchrun as trun

    env = trun.from_environ()
    if env is None:
        raise SetupError("not a rank of a torchrun job (no RANK/WORLD_SIZE)")
    if env.world == 1:  # one rank: an ordinary engine in this process
        if error or run_dir is None:
            return 2  # the caller says why
        return _torchrun_rank0(run_dir, resume, edits or {}, None, None, env)
    from dlf_tui.engine.loops import distributed

    try:
        store = distributed.torchrun_store(env)
        word = None
        if env.rank == 0:
            word = {"run_dir": str(run_dir) if run_dir else None, "resume": resume,
                    "edits": edits or {}, "error": error, "token": uuid.uuid4().hex}
        word = distributed.meet(store, env, word)
    except Exception as err:  # noqa: BLE001 - the store: a timeout, a refused connection
        print(f"error: rank {env.rank}: cannot meet the other ranks: {one_line(err)}",
              file=sys.stderr, flush=True)
        return 2
    if word["error"] or not word["run_dir"]:
        why = word["error"] or "rank 0 made no run directory"
        if env.rank:  # rank 0 says it itself
            print(f"error: rank 0 could not start the run: {why}", file=sys.stderr, flush=True)
        return 2
    run_dir = Path(word["run_dir"])
    if env.rank == 0:
        return _torchrun_rank0(run_dir, word["resume"], word["edits"], store, word["token"], env)
    logging.basicConfig(
        filename=run_dir / runs.RANK_LOG.format(rank=env.rank), level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s")
    try:
        group = distributed.join_torchrun(run_dir, store, env, word["token"])
        trainer, recorder = distributed.rank_trainer(run_dir, word["resume"], group)
    except (SetupError, RunError, OSError) as err:
        logging.getLogger("dlf_tui.engine").error("rank %d cannot start: %s", env.rank, err)
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:  # noqa: BLE001 - e.g. rank 0 went away during the start
        logging.getLogger("dlf_tui.engine").exception("rank %d cannot start", env.rank)
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        return 1
    return distributed.follow_rank(group, trainer, recorder)


def _torchrun_rank0(run_dir: Path, resume: bool, edits: dict, store, token, env) -> int:
    """Rank 0 of a torchrun job (``store`` None: the only rank)."""
    from dlf_tui.store import liveness

    logging.basicConfig(
        filename=run_dir / runs.LOG, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s")
    # this process's command line is dlf-tui's, not the engine's: liveness goes by its start time
    runs.write_json_atomic(run_dir / runs.STATE, {
        "state": states.STARTING, "pid": os.getpid(),
        "pid_start": liveness.process_start(os.getpid()), "started": time.time()})
    from dlf_tui.engine.loops import distributed
    from dlf_tui.engine.loops.single import SingleRun

    log = logging.getLogger("dlf_tui.engine")
    log.info("torchrun: rank 0 of %d (%d nodes), attempt %d, run id %s", env.world, env.nodes,
             env.restart, env.run_id or "-")
    group = None
    try:
        if store is not None:
            group = distributed.join_torchrun(run_dir, store, env, token)
        engine = SingleRun(run_dir, resume=resume, dist=group, edits=edits)
    except (SetupError, RunError, OSError) as err:
        log.error("cannot start: %s", err)
        return _fail(run_dir, str(err))
    except Exception as err:
        if group is None:
            raise
        log.exception("cannot start")
        _fail(run_dir, group.abort(one_line(err)))
        return 1
    try:
        return engine.run()
    finally:
        engine.close()


def _edits(text: str) -> dict:
    try:
        edits = json.loads(text)
    except ValueError:
        edits = None
    if not isinstance(edits, dict):
        raise SetupError(f"--edits {text[:60]}: needs a JSON object")
    return edits


def _other_rank(run_dir: Path, rank: int, world: int, resume: bool) -> int:
    """Ranks 1 … N−1 (started by rank 0): follow rank 0's plans; log to their own file."""
    from dlf_tui.engine.loops import distributed

    logging.basicConfig(
        filename=run_dir / runs.RANK_LOG.format(rank=rank), level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s")
    try:
        group = distributed.join(run_dir, rank, world)
        trainer, recorder = distributed.rank_trainer(run_dir, resume, group)
    except (SetupError, RunError, OSError) as err:
        logging.getLogger("dlf_tui.engine").error("rank %d cannot start: %s", rank, err)
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:  # noqa: BLE001 - e.g. rank 0 went away during the start
        logging.getLogger("dlf_tui.engine").exception("rank %d cannot start", rank)
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        return 1
    return distributed.follow_rank(group, trainer, recorder)


def _sweep(path: Path, resume: bool, mode: str, threads: int | None) -> int:
    """The sweep engine: every member of the sweep in this process (``loops/sweep.py``)."""
    logging.basicConfig(filename=path / runs.LOG, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        sweep = sweeps.Sweep(path)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        ex = sweep.executor()
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        sweeps.write_state(sweep, states.CRASHED, reason=str(err))
        return 2
    sweeps.write_state(sweep, states.STARTING, started=time.time(),
                       **({"mode": ex.kind} if ex.kind != "engine" else {}))
    if ex.kind != "engine":  # the members' engines or jobs, started and watched from here
        from dlf_tui.engine.loops.executors import Controller  # no torch

        return Controller(sweep, ex, resume).run()
    from dlf_tui.engine.loops.sweep import SweepEngine  # torch is imported here, after the cheap checks

    eng = SweepEngine(path, resume=resume, mode=mode, threads=threads)
    try:
        eng.setup()
    except (SetupError, RunError, OSError, ValueError) as err:
        reason = first_line(err) or type(err).__name__
        logging.getLogger("dlf_tui.engine").error("cannot start: %s", reason)
        print(f"error: {reason}", file=sys.stderr, flush=True)
        sweeps.write_state(sweep, states.CRASHED, reason=reason)
        eng.close()
        return 2
    try:
        return eng.run()
    finally:
        eng.close()


if __name__ == "__main__":
    sys.exit(main())
