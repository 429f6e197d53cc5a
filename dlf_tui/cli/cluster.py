"""Beyond one process on one box: ``dlf-tui run``/``resume`` as a rank of torchrun, and
how a sweep's members are trained (``--devices``, ``--executor slurm``).  No torch at
import (under torchrun each rank's own process becomes its engine, ``engine.__main__.torchrun``).

    torchrun --nproc-per-node=2 -m dlf_tui run spiral-fig4
    torchrun --nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        --rdzv-id=JOB --max-restarts=3 -m dlf_tui run PRESET --runs-dir /shared/runs

Rank 0 makes (or, for ``resume``, checks) the run directory and is its engine; the
other ranks learn the directory from rank 0.  After a torchrun restart, rank 0 of the
new attempt resumes the first attempt's directory from its last checkpoint.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import NoReturn, Optional

import typer

from dlf_tui.cli.common import fail, resolve_config, run_or_sweep
from dlf_tui.core import states
from dlf_tui.core.errors import ConfigError, RunError
from dlf_tui.store import code
from dlf_tui.store import fork as forks
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps
from dlf_tui.store import torchrun as trun


def torchrun_env() -> trun.TorchrunEnv | None:
    """This process's place in a torchrun job, or None when torchrun did not start it."""
    try:
        return trun.from_environ()
    except RunError as err:
        fail(str(err))


def _no_nproc(nproc: int) -> None:
    if nproc != 1:
        fail(f"--nproc {nproc}: under torchrun, torchrun starts the ranks (--nproc-per-node)")


def torchrun_run(env: trun.TorchrunEnv, preset: str, sets: list[str], presets_dir: Optional[Path],
                 rdir: Path, steps: Optional[int], device: Optional[str], nproc: int,
                 offline: bool = False) -> NoReturn:
    """``dlf-tui run`` in every rank of a torchrun job: rank 0 makes the run directory
    (a restarted attempt: resumes the first attempt's), all ranks train it."""
    _no_nproc(nproc)
    run_dir, resume, error = None, False, ""
    if env.rank == 0:
        try:
            if env.restart:
                run_dir = trun.recall(rdir, env)
                resume = trun.has_checkpoint(run_dir)
                if not resume:  # it crashed before its first checkpoint: from update 1 again
                    trun.clear_series(run_dir)
            else:
                cfg = resolve_config(preset, sets, presets_dir, steps, device, offline=offline)
                run_dir = runs.create_run(cfg, rdir).path
                trun.remember(rdir, env, run_dir)
        except (ConfigError, RunError) as err:
            error = str(err)
    raise typer.Exit(_train(env, run_dir, resume, {}, error))


def torchrun_resume(env: trun.TorchrunEnv, spec: str, rdir: Path, nproc: int, trust_code: bool = False,
                    steps: Optional[int] = None, sets: Optional[list[str]] = None) -> NoReturn:
    """``dlf-tui resume RUN`` in every rank of a torchrun job: rank 0 checks the run as
    ``resume`` does and tells the others; all ranks continue it from its last checkpoint."""
    _no_nproc(nproc)
    run_dir, edits, error = None, {}, ""
    if env.rank == 0:
        try:
            r = run_or_sweep(spec, rdir)
            if isinstance(r, sweeps.Sweep):
                raise RunError(f"{r.id} is a sweep: resume it without torchrun (dlf-tui resume {r.id})")
            problem = "" if trust_code else code.trust_problem(r.path)
            if problem:
                raise RunError(f"{r.id}: {problem}")
            if r.own_loop_reason():
                raise RunError(r.own_loop_reason())
            state = r.state().get("state")
            if state in states.LIVE:
                raise RunError(f"{r.id} is {state}: its engine is still live")
            if not trun.has_checkpoint(r.path):
                raise RunError(f"cannot resume {r.id}: it has no checkpoint")
            edits = forks.continued(r, steps, sets or [])
            if r.state().get("state") == states.FINISHED and steps is None:
                raise RunError(f"{r.id} already finished (--steps N trains it on to update N)")
            run_dir = r.path
        except (ConfigError, RunError) as err:
            error = str(err)
    raise typer.Exit(_train(env, run_dir, True, edits, error))


def _train(env: trun.TorchrunEnv, run_dir: Path | None, resume: bool, edits: dict, error: str) -> int:
    from dlf_tui.engine.__main__ import torchrun as engine  # torch: this process is a rank

    lead = env.rank == 0
    if lead and not error:
        run = runs.Run(run_dir)
        how = "resuming" if resume else "starting"
        again = f" restart {env.restart}" if env.restart else ""
        nodes = f" on {env.nodes} nodes" if env.nodes > 1 else ""
        typer.echo(f"run {run.id}: {how} with {env.world} rank{'s' * (env.world != 1)}{nodes} "
                   f"(torchrun{again}) -> {run.path}")
    t0 = time.monotonic()
    status = engine(run_dir, resume, edits, error)
    if lead:
        if error:
            typer.echo(f"error: {error}", err=True)
        elif run_dir is not None:
            from dlf_tui.cli.follow_run import _summary

            _summary(runs.Run(run_dir), time.monotonic() - t0, False)
    return status


# ---------------------------------------------------------------------------
# Sweeps: which executor trains the members
# ---------------------------------------------------------------------------


def sweep_executor(executor: Optional[str], devices: Optional[str], partition: Optional[str],
                   gpus_per_member: Optional[int], time_limit: Optional[str],
                   max_parallel: Optional[int]) -> sweeps.Executor:
    """The sweep options, checked before anything is made (one-line refusals)."""
    try:
        ex = sweeps.executor_spec(executor, devices, partition, gpus_per_member, time_limit,
                                  max_parallel)
    except ConfigError as err:
        fail(str(err))
    if ex.kind in sweeps.CLUSTER and importlib.util.find_spec("submitit") is None:
        fail(f"--executor {ex.kind} needs submitit: pip install 'dlf-tui[slurm]'")
    return ex
