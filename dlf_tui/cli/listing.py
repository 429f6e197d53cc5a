"""``dlf-tui runs``, ``sweeps`` and ``presets``: one table line per item (a
preset's description wraps to the terminal, under its own column).  No torch here."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Optional

import typer

from dlf_tui.core import entries, presets, states
from dlf_tui.core.errors import ConfigError
from dlf_tui.cli.common import fail, with_hint
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps


def where(text: str) -> None:
    """Which directory a listing read, on stderr (stdout stays the table)."""
    typer.echo(text + ":", err=True)


def list_runs(rdir: Path) -> None:
    """id, preset, state, step/total, last accuracy; a pointer to ``sweeps`` when there are some."""
    items = runs.list_runs(rdir)
    n = len(sweeps.list_sweeps(rdir))
    more = f"{n} sweep{'s' * (n != 1)} under {rdir}: dlf-tui sweeps" if n else ""
    if not items:
        typer.echo(with_hint(f"no runs under {rdir}", rdir) + (f"; {more}" if more else ""))
        return
    where(f"runs under {rdir}")
    rows = [r.summary() for r in items]
    w = max(len(s["id"]) for s in rows)
    pw = max(6, max(len(s["preset"]) for s in rows))
    for s in rows:  # a run recorded as live whose engine died without a word
        s["state"] = f"{s['state']} (engine gone)" if s["gone"] else s["state"]
    sw = max(9, max(len(s["state"]) for s in rows))
    typer.echo(f"{'id':<{w}}  {'preset':<{pw}}  {'state':<{sw}} {'step/total':>17}  accuracy")
    for s in rows:
        acc = "" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
        steps = f"{s['step']}/{s['total']}"
        fork = f"  fork of {s['fork_of']}" if s["fork_of"] else ""
        typer.echo(f"{s['id']:<{w}}  {s['preset']:<{pw}}  {s['state']:<{sw}} {steps:>17}  "
                   f"{acc:<8}{fork}".rstrip())
    if more:
        typer.echo(f"\n{more}")


def list_sweeps(rdir: Path) -> None:
    """id, preset, state, cells, members finished, progress."""
    items = sweeps.list_sweeps(rdir)
    if not items:
        typer.echo(f"no sweeps under {rdir}")
        return
    where(f"sweeps under {rdir}")
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


MIN_TEXT = 24  # a description column narrower than this goes on lines of its own


def preset_lines(rows: list[tuple[str, str, str]], width: int) -> list[str]:
    """``(name, origin, description)`` rows as table lines at most ``width``
    wide: the description wraps under its own column (or, when the terminal is
    too narrow for that, on indented lines below the name)."""
    w = max(len(name) for name, _, _ in rows)
    head = w + 2 + 7 + 2
    lines = []
    for name, origin, text in rows:
        first = f"{name:<{w}}  {origin:<7}  "
        if width - head >= MIN_TEXT:
            wrapped = textwrap.wrap(text, width - head) or [""]
            lines.append((first + wrapped[0]).rstrip())
            lines += [" " * head + more for more in wrapped[1:]]
        else:
            lines.append(first.rstrip())
            lines += textwrap.wrap(text, max(MIN_TEXT, width - 4), initial_indent="    ",
                                   subsequent_indent="    ")
    return lines


def list_presets(presets_dir: Optional[Path]) -> None:
    """name, origin, description (wrapped to the terminal: ``$COLUMNS``, else 80 when piped)."""
    try:
        found = presets.discover(presets_dir)
    except ConfigError as err:
        fail(str(err))
    if not found:
        typer.echo("no presets found")
        return
    width = shutil.get_terminal_size((80, 24)).columns
    for line in preset_lines([(p.name, p.origin, p.description()) for p in found], width):
        typer.echo(line)
    offered = [(role, name, target) for role in ("model", "data")
               for name, target in sorted(entries.plugins(role).items())]
    if offered:  # what installed packages offer by name (entry points)
        typer.echo("\nplugins (use as model.kind / data.name):")
        for line in preset_lines([(name, role, target) for role, name, target in offered], width):
            typer.echo(line)
