"""What the shell completes (``dlf-tui --install-completion``): run and sweep
ids, preset names, ``ctl`` commands and settings.  No torch here, and no
parsing of a run's files beyond its state: a completion must answer at once.

Each function is a typer ``autocompletion`` callback: ``(ctx, incomplete)`` →
``[(value, help), …]``.  The runs directory is the one the command line names
so far (``--runs-dir`` before or after the command), else the default.  Paths
(``--runs-dir``, ``--presets-dir``) are the shell's own file completion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import typer

from dlf_tui.core import presets as presetsmod
from dlf_tui.core.errors import ConfigError
from dlf_tui.store import run as rundir

CTL_COMMANDS = (("set", "change amplitude, period, lr or diagnostics"), ("pause", "pause after this update"),
                ("resume", "resume a paused run"), ("stop", "checkpoint and stop"),
                ("checkpoint", "save a checkpoint now"), ("rollback", "back to the last checkpoint"))
CTL_SETTINGS = (("amplitude=", "A (>= 1)"), ("period=", "T (updates)"), ("lr=", "learning rate"),
                ("diagnostics=", "true / false"), ("diagnostics_every=", "Hessian λ_max every N updates"),
                ("ntk_every=", "NTK λ_max every N updates"))
MAX_RUNS = 200  # the newest; a shell shows no more anyway


def _param(ctx: typer.Context, name: str) -> Any:
    """``name`` as parsed so far on this command or the one before it."""
    c: Any = ctx
    while c is not None:
        value = (c.params or {}).get(name)
        if value is not None:
            return value
        c = c.parent
    return None


def _runs_dir(ctx: typer.Context) -> Path:
    value = _param(ctx, "runs_dir")
    return Path(value) if value is not None else rundir.default_runs_dir()


def run_ids(rdir: Path) -> list[tuple[str, str]]:
    """(id, state) of the runs and sweeps directly under ``rdir``, newest first."""
    try:
        dirs = sorted((p for p in rdir.iterdir() if p.is_dir() and (p / rundir.STATE).is_file()),
                      key=lambda p: p.name, reverse=True)[:MAX_RUNS]
    except OSError:
        return []
    out = []
    for p in dirs:
        state = rundir.Run(p).raw_state().get("state", rundir.UNKNOWN)
        out.append((p.name, str(state)))
    return out


def _matching(items: Iterable[tuple[str, str]], incomplete: str) -> list[tuple[str, str]]:
    return [(v, h) for v, h in items if v.startswith(incomplete)]


def runs(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Run and sweep ids (and ``latest``)."""
    items = [("latest", "the most recent run")] + run_ids(_runs_dir(ctx))
    return _matching(items, incomplete)


def presets(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Preset names (shipped, user, ``--presets-dir``), described by their origin."""
    pdir = _param(ctx, "presets_dir")
    try:
        found = presetsmod.discover(Path(pdir) if pdir is not None else None)
    except ConfigError:
        return []
    return _matching(((p.name, p.origin) for p in found), incomplete)


def ctl_commands(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    return _matching(CTL_COMMANDS, incomplete)


def ctl_values(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    if _param(ctx, "command") != "set":
        return []
    return _matching(CTL_SETTINGS, incomplete)


def devices(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    return _matching((("auto", "cuda when there is one"), ("cpu", ""), ("cuda", "the first GPU"),
                      *((f"cuda:{i}", "") for i in range(8))), incomplete)
