"""``dlf-tui fork``: a new run from a run's exact parameters at an update, with other
settings from there on (``store/fork.py`` makes it, ``engine/loops/fork.py`` reaches
the fork update), then followed headless like ``run``.  No torch here."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer

from dlf_tui.cli.common import fail, run_or_sweep
from dlf_tui.core.errors import ClientError, ConfigError, RunError
from dlf_tui.store import code, fork as forks
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps
from dlf_tui.wire import client


def parse_at(text: str) -> int | str:
    if text in ("latest", "now"):
        return text
    try:
        at = int(text)
    except ValueError:
        fail(f"--at {text}: needs an update number, latest or now")
    if at < 0:
        fail(f"--at {text}: needs an update number >= 0, latest or now")
    return at


def snapshot_now(parent: runs.Run) -> int:
    """Ask the parent's live engine for a checkpoint; the update it holds."""
    try:
        reply = client.request(parent.path, "checkpoint", timeout=60)
    except ClientError as err:
        fail(f"--at now: {err}")
    step = forks.checkpoint_step(Path(str(reply.data.get("path", ""))))
    if step is None:
        fail(f"--at now: {parent.id}: the engine's checkpoint reply names no checkpoint")
    return step


def fork(spec: str, at_text: str, sets: list[str], steps: Optional[int], rdir: Path,
         trust_code: bool) -> NoReturn:
    from dlf_tui.cli.follow_run import run_headless

    at = parse_at(at_text)
    try:
        parent = run_or_sweep(spec, rdir)
        if isinstance(parent, sweeps.Sweep):
            raise RunError(f"{parent.id} is a sweep: fork one of its members "
                           f"({parent.members[0].run.path} …)")
        if not trust_code:
            problem = code.trust_problem(parent.path)
            if problem:
                raise RunError(f"{parent.id}: {problem.replace('resuming', 'forking')}")
        if at == "now":
            at = snapshot_now(parent)
        plan = forks.plan(parent, at, sets, steps)
        child = forks.create(plan, rdir)
    except (ConfigError, RunError) as err:
        fail(str(err))
    typer.echo(f"fork {child.id}: {parent.id} at update {plan.at}"
               + (f" with {', '.join(f'{k}={v:g}' for k, v in plan.changes.items())}"
                  if plan.changes else ""))
    raise typer.Exit(run_headless(child, fork=True))
