"""``dlf-tui run``, ``sweep`` and ``resume``: make or pick the directory, start its
engine (``store/launch.py``), then follow it headless (``follow_run``,
``follow_sweep``).  No torch here."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NoReturn, Optional

import typer

from dlf_tui.core import states
from dlf_tui.core.errors import ConfigError, RunError
from dlf_tui.cli.common import FAILED, fail, resolve_config, run_or_sweep
from dlf_tui.store import code, launch
from dlf_tui.store import fork as forks
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        fail(f"--nproc {nproc}: must be at least 1")


def start_run(preset: str, sets: list[str], presets_dir: Optional[Path], rdir: Path,
              steps: Optional[int], device: Optional[str], nproc: int, offline: bool = False) -> NoReturn:
    """A new run directory for ``preset``, trained headless; exits with the run's status."""
    from dlf_tui.cli.follow_run import run_headless

    check_nproc(nproc)
    try:
        cfg = resolve_config(preset, sets, presets_dir, steps, device, offline=offline)
        run = runs.create_run(cfg, rdir)
    except (ConfigError, RunError) as err:
        fail(str(err))
    raise typer.Exit(run_headless(run, nproc=nproc))


def resume(spec: str, rdir: Path, nproc: int, trust_code: bool = False,
           steps: Optional[int] = None, sets: Optional[list[str]] = None) -> NoReturn:
    """Continue a stopped or crashed run or sweep from its last checkpoint, headless.
    Code saved in the run directory that is not the file on this machine runs only
    with ``trust_code``.  ``steps``: a new total (a finished run is extended);
    ``sets``: what may change from the resumed update on (``store/fork.split_sets``)."""
    from dlf_tui.cli.follow_run import run_headless

    check_nproc(nproc)
    try:
        r = run_or_sweep(spec, rdir)
        dirs = [m.run.path for m in r.members] if isinstance(r, sweeps.Sweep) else [r.path]
        problem = "" if trust_code else next(filter(None, map(code.trust_problem, dirs)), "")
    except RunError as err:
        fail(str(err))
    if problem:
        fail(f"{r.id}: {problem}")
    if isinstance(r, sweeps.Sweep):
        resume_sweep(r)
    if r.own_loop_reason():
        fail(r.own_loop_reason())
    state = r.state().get("state")
    if state in states.LIVE:
        fail(f"{r.id} is {state}: its engine is still live")
    if state == states.FINISHED and steps is None:
        fail(f"{r.id} already finished (--steps N trains it on to update N)")
    try:
        edits = forks.continued(r, steps, sets or [])
    except (ConfigError, RunError) as err:
        fail(str(err))
    raise typer.Exit(run_headless(r, resume=True, nproc=nproc, edits=edits))


def start_sweep(preset: str, sets: list[str], seeds: Optional[int], threshold: Optional[float],
                steps: Optional[int], device: Optional[str], presets_dir: Optional[Path],
                rdir: Path, offline: bool = False, executor: Optional[sweeps.Executor] = None
                ) -> tuple[sweeps.Sweep, subprocess.Popen]:
    """Plan and write a sweep of ``preset``, print its plan and start its engine
    (``executor``: how the members are trained, ``store/sweep.py``)."""
    from dlf_tui.cli.follow_sweep import print_plan

    try:
        cfg = resolve_config(preset, [], presets_dir, steps, device, offline=offline)
        sw = sweeps.create(sweeps.plan(cfg, sets or [], seeds, threshold), rdir, executor=executor)
    except (ConfigError, RunError) as err:
        fail(str(err))
    print_plan(sw)
    return sw, _spawn_sweep(sw, resume=False)


def follow_sweep(sw: sweeps.Sweep, proc: subprocess.Popen) -> NoReturn:
    from dlf_tui.cli.follow_sweep import follow

    raise typer.Exit(follow(sw, proc))


def resume_sweep(sw: sweeps.Sweep) -> NoReturn:
    """``resume SWEEP``: the sweep engine continues every unfinished member from its
    last checkpoint (members never checkpointed start afresh); followed headless."""
    state = sw.state().get("state")
    if state in states.LIVE:
        fail(f"{sw.id} is {state}: its engine is still live")
    if all(m.run.raw_state().get("state") == states.FINISHED for m in sw.members):
        fail(f"{sw.id} already finished")
    follow_sweep(sw, _spawn_sweep(sw, resume=True))


def _spawn_sweep(sw: sweeps.Sweep, resume: bool) -> subprocess.Popen:
    try:
        return launch.spawn_sweep_engine(sw, resume=resume)
    except OSError as err:
        fail(f"cannot start the sweep engine: {err.strerror}", FAILED)
