"""``dlf-tui runs``, ``sweeps`` and ``presets``: one table line per item.  No torch here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlf_tui.core import presets, states
from dlf_tui.core.errors import ConfigError
from dlf_tui.cli.common import fail
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps


def list_runs(rdir: Path) -> None:
    """id, preset, state, step/total, last accuracy; a pointer to ``sweeps`` when there are some."""
    items = runs.list_runs(rdir)
    n = len(sweeps.list_sweeps(rdir))
    more = f"{n} sweep{'s' * (n != 1)} under {rdir}: dlf-tui sweeps" if n else ""
    if not items:
        typer.echo(f"no runs under {rdir}" + (f"; {more}" if more else ""))
        return
    rows = [r.summary() for r in items]
    w = max(len(s["id"]) for s in rows)
    pw = max(6, max(len(s["preset"]) for s in rows))
    typer.echo(f"{'id':<{w}}  {'preset':<{pw}}  {'state':<9} {'step/total':>17}  accuracy")
    for s in rows:
        acc = "" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
        steps = f"{s['step']}/{s['total']}"
        typer.echo(f"{s['id']:<{w}}  {s['preset']:<{pw}}  {s['state']:<9} {steps:>17}  {acc}")
    if more:
        typer.echo(f"\n{more}")


def list_sweeps(rdir: Path) -> None:
    """id, preset, state, cells, members finished, progress."""
    items = sweeps.list_sweeps(rdir)
    if not items:
        typer.echo(f"no sweeps under {rdir}")
        return
    rows = []
    for sw in items:
        done, total = sw.progress()
        fin = sum(m.run.raw_state().get("state") == states.FINISHED for m in sw.members)
        rows.append((sw.id, sw.preset, sw.state().get("state", runs.UNKNOWN), str(len(sw.cells())),
                     f"{fin}/{len(sw.members)}", f"{100.0 * done / total:.1f}%" if total else "-"))
    w = max(len(r[0]) for r in rows)
    pw = max(6, max(len(r[1]) for r in rows))
    typer.echo(f"{'id':<{w}}  {'preset':<{pw}}  {'state':<9} {'cells':>5} {'finished':>9} {'progress':>8}")
    for r in rows:
        typer.echo(f"{r[0]:<{w}}  {r[1]:<{pw}}  {r[2]:<9} {r[3]:>5} {r[4]:>9} {r[5]:>8}")


def list_presets(presets_dir: Optional[Path]) -> None:
    """name, origin, description."""
    try:
        found = presets.discover(presets_dir)
    except ConfigError as err:
        fail(str(err))
    if not found:
        typer.echo("no presets found")
        return
    w = max(len(p.name) for p in found)
    for p in found:
        typer.echo(f"{p.name:<{w}}  {p.origin:<7}  {p.description()}")
