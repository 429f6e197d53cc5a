"""The ``dlf-tui`` command line: parses, then delegates.  No torch here.

Every refusal is one line on stderr: ``error: …`` with exit status 2 (bad input)
or 1 (the engine refused / the run failed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from dlf_tui.core import config, presets
from dlf_tui.store import run as runs
from dlf_tui.wire.client import ClientError, EngineRefused

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    help="Train neural networks with dynamical loss functions; watch and steer them live.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
presets_app = typer.Typer(help="List shipped and user presets, or show one resolved.",
                          invoke_without_command=True)
app.add_typer(presets_app, name="presets")

RunsDir = typer.Option(None, "--runs-dir", help="Where runs live [default: ./runs or $DLF_TUI_RUNS_DIR].")
PresetsDir = typer.Option(None, "--presets-dir", help="Extra presets directory (searched first).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config key: section.key=value (repeatable).")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {config.printable(message)}", err=True)
    raise typer.Exit(code)


def _runs_dir(value: Optional[Path]) -> Path:
    return value if value is not None else runs.default_runs_dir()


def resolve_config(spec: str, sets: list[str], presets_dir: Optional[Path],
                   steps: Optional[int] = None, device: Optional[str] = None) -> config.Config:
    cfg = presets.find(spec, presets_dir)
    cfg = config.apply_overrides(cfg, sets or [])
    extra = []
    if steps is not None:
        extra.append(f"run.steps={steps}")
    if device is not None:
        extra.append(f"run.device={device}")
    return config.apply_overrides(cfg, extra, source="option")


# ---------------------------------------------------------------------------


@app.callback()
def main_callback(
    ctx: typer.Context,
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
    ascii_markers: bool = typer.Option(False, "--ascii", help="ASCII chart markers (no braille)."),
) -> None:
    """With no command: open the preset picker."""
    ctx.obj = {"runs_dir": runs_dir, "presets_dir": presets_dir, "ascii": ascii_markers}
    if ctx.invoked_subcommand is None:
        _ui(runs_dir=_runs_dir(runs_dir), presets_dir=presets_dir, ascii_markers=ascii_markers)


def _ui(**kw) -> None:
    from dlf_tui.ui.app import run_app  # textual is imported only for the TUI commands

    raise typer.Exit(run_app(**kw))


def _obj(ctx: typer.Context, key: str, value):
    return value if value is not None else (ctx.obj or {}).get(key)


def _run_or_sweep(spec: Optional[str], rdir: Path):
    """A sweep when ``spec`` names one (its directory, id or unique id prefix),
    else a run (``runs.resolve``: a member's directory is a run); one line when
    neither, or when a prefix names both a run and a sweep."""
    from dlf_tui.store import sweep as sweeps

    try:
        run, run_err = runs.resolve(spec, rdir), None
    except runs.RunError as err:
        run, run_err = None, err
    if spec in (None, "", "latest"):
        if run is None:
            raise run_err
        return run
    try:
        sw = sweeps.resolve(spec, rdir)
    except runs.RunError as err:
        if run is not None:
            return run
        raise (run_err if str(err).startswith("no sweep") else err) from None
    if run is not None:
        raise runs.RunError(f"{spec!r} is ambiguous: run {run.id} and sweep {sw.id}")
    return sw


def _cell(sw, text: str) -> tuple:
    """``"amplitude=70 period=5000"`` → that cell of sweep ``sw`` (axes by key or
    short name; an axis with one value may be left out)."""
    from dlf_tui.store import sweep as sweeps

    want: dict[str, object] = {}
    for item in text.split():
        key, raw = config.split_assignment(item, "--cell")
        found = [a for a in sw.axes if key in (a.key, a.short)]
        if len(found) != 1:
            names = ", ".join(a.key for a in sw.axes) or "none"
            raise config.ConfigError(f"--cell {config.printable(item)[:80]}: "
                                     f"{'ambiguous' if found else 'not an axis'} (axes of {sw.id}: {names})")
        a = found[0]
        values = sweeps.parse_axis(f"{a.key}={raw}", "--cell").values
        if len(values) != 1:
            raise config.ConfigError(f"--cell {config.printable(item)[:80]}: give one value per axis")
        if values[0] not in a.values:
            raise config.ConfigError(f"--cell {config.printable(item)[:80]}: {a.short} is one of "
                                     f"{', '.join(sweeps.slug(v) for v in a.values)}")
        want[a.key] = values[0]
    missing = [a.short for a in sw.axes if a.key not in want and len(a.values) > 1]
    if missing:
        raise config.ConfigError(f"--cell {config.printable(text)[:80]!r}: give {', '.join(missing)} too")
    return tuple(want.get(a.key, a.values[0]) for a in sw.axes)


@app.command()
def ui(
    ctx: typer.Context,
    preset: str = typer.Argument(..., help="Preset name or TOML file."),
    sets: List[str] = SetOpt,
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
) -> None:
    """Start PRESET and open the live dashboard (skips the picker)."""
    presets_dir = _obj(ctx, "presets_dir", presets_dir)
    try:
        cfg = resolve_config(preset, sets, presets_dir)
    except config.ConfigError as err:
        fail(str(err))
    _ui(runs_dir=_runs_dir(_obj(ctx, "runs_dir", runs_dir)), presets_dir=presets_dir, config=cfg,
        ascii_markers=(ctx.obj or {}).get("ascii", False))


@app.command()
def attach(
    ctx: typer.Context,
    run: Optional[str] = typer.Argument(None, help="Run or sweep: directory or id (default: the most recent run)."),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Open a run in the dashboard (live if it runs, read-only otherwise), or a sweep in the sweep view."""
    from dlf_tui.store.sweep import Sweep

    rdir = _runs_dir(_obj(ctx, "runs_dir", runs_dir))
    try:
        r = _run_or_sweep(run, rdir)
    except runs.RunError as err:
        fail(str(err))
    kw = {"sweep": r} if isinstance(r, Sweep) else {"attach": r}
    _ui(runs_dir=rdir, presets_dir=(ctx.obj or {}).get("presets_dir"),
        ascii_markers=(ctx.obj or {}).get("ascii", False), **kw)


NprocOpt = typer.Option(1, "--nproc", help="Train with N processes (DistributedDataParallel: "
                        "gloo on the CPU, nccl with one GPU per rank); same result as one.")


def _check_nproc(nproc: int) -> None:
    if nproc < 1:
        fail(f"--nproc {nproc}: must be at least 1")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    preset: str = typer.Argument(..., help="Preset name or TOML file."),
    sets: List[str] = SetOpt,
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
    steps: Optional[int] = typer.Option(None, "--steps", help="Shortcut for --set run.steps=N."),
    device: Optional[str] = typer.Option(None, "--device", help="Shortcut for --set run.device=D."),
    nproc: int = NprocOpt,
) -> None:
    """Run PRESET headless in a new run directory, with a progress display."""
    from dlf_tui.cli.follow_run import run_headless

    _check_nproc(nproc)
    try:
        cfg = resolve_config(preset, sets, _obj(ctx, "presets_dir", presets_dir), steps, device)
        run = runs.create_run(cfg, _runs_dir(_obj(ctx, "runs_dir", runs_dir)))
    except (config.ConfigError, runs.RunError) as err:
        fail(str(err))
    raise typer.Exit(run_headless(run, nproc=nproc))


@app.command()
def resume(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run directory or id (or a sweep)."),
    runs_dir: Optional[Path] = RunsDir,
    nproc: int = NprocOpt,
) -> None:
    """Continue a stopped or crashed run (or sweep) from its last checkpoint (headless)."""
    from dlf_tui.cli.follow_run import run_headless

    _check_nproc(nproc)
    try:
        r = _run_or_sweep(run, _runs_dir(_obj(ctx, "runs_dir", runs_dir)))
    except runs.RunError as err:
        fail(str(err))
    if not isinstance(r, runs.Run):
        _resume_sweep(r)
    state = r.state().get("state")
    if state in runs.LIVE_STATES:
        fail(f"{r.id} is {state}: its engine is still live")
    if state == "finished":
        fail(f"{r.id} already finished")
    raise typer.Exit(run_headless(r, resume=True, nproc=nproc))


@app.command(context_settings={"allow_extra_args": False})
def ctl(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run directory or id (or a sweep: stop only)."),
    command: str = typer.Argument(..., help="set | pause | resume | stop | checkpoint | rollback"),
    values: List[str] = typer.Argument(None, help="For set: amplitude=30 period=2000 lr=0.5"),
    runs_dir: Optional[Path] = RunsDir,
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the engine."),
) -> None:
    """Send a command to a running engine; exit 0 when it accepted."""
    from dlf_tui.wire import client, protocol
    from dlf_tui.store.sweep import Sweep

    try:
        r = _run_or_sweep(run, _runs_dir(_obj(ctx, "runs_dir", runs_dir)))
        if isinstance(r, Sweep):
            _ctl_sweep(r, command, values, timeout)
        parsed = {}
        for item in values or []:
            key, raw = config.split_assignment(item, "ctl")
            parsed[key] = config.parse_scalar(raw)
        protocol.command(command, parsed if command == "set" else (parsed or None))  # validate first
    except (runs.RunError, config.ConfigError) as err:
        fail(str(err))
    except protocol.ProtocolError as err:
        fail(str(err))
    try:
        reply = client.request(r.path, command, parsed or None, timeout=timeout)
    except EngineRefused as err:
        fail(str(err), 1)
    except ClientError as err:
        fail(str(err), 1)
    data = reply.data
    if "params" in data:
        p = data["params"]
        typer.echo(f"ok: amplitude={p['amplitude']:g} period={p['period']} lr={p['lr']:g} "
                   f"(from update {p['step'] + 1})")
    elif "path" in data:
        typer.echo(f"ok: {data['path']}")
    else:
        typer.echo(f"ok: {data.get('state', command)}")


def _resume_sweep(sw) -> None:
    """``resume SWEEP``: the sweep engine continues every unfinished member from its
    last checkpoint (members never checkpointed start afresh); followed headless."""
    from dlf_tui.store import sweep as sweeps
    from dlf_tui.cli.follow_sweep import follow

    state = sw.state().get("state")
    if state in runs.LIVE_STATES:
        fail(f"{sw.id} is {state}: its engine is still live")
    if all(m.run.raw_state().get("state") == "finished" for m in sw.members):
        fail(f"{sw.id} already finished")
    try:
        proc = sweeps.spawn_engine(sw, resume=True)
    except OSError as err:
        fail(f"cannot start the sweep engine: {err.strerror}", 1)
    raise typer.Exit(follow(sw, proc))


def _ctl_sweep(sw, command: str, values: Optional[List[str]], timeout: float) -> None:
    """``ctl SWEEP stop``: SIGTERM to its live engine, then wait up to ``timeout``."""
    from dlf_tui.cli.follow_sweep import wait_gone

    if command != "stop" or values:
        fail(f"{sw.id} is a sweep: sweeps accept only stop")
    try:
        pid = sw.stop()
    except runs.RunError as err:
        fail(str(err), 1)
    if pid is None:
        fail(f"{sw.id} is not running (state {sw.state().get('state', 'unknown')})", 1)
    if wait_gone(pid, timeout):
        typer.echo(f"ok: {sw.state().get('state', 'stopped')}")
    else:
        typer.echo(f"ok: stopping (the engine is still shutting down after {timeout:g} s)")
    raise typer.Exit(0)


@app.command("runs")
def runs_cmd(ctx: typer.Context, runs_dir: Optional[Path] = RunsDir) -> None:
    """List runs: id, preset, state, step/total, last accuracy (sweeps: see `dlf-tui sweeps`)."""
    from dlf_tui.store.sweep import list_sweeps

    rdir = _runs_dir(_obj(ctx, "runs_dir", runs_dir))
    items = runs.list_runs(rdir)
    n = len(list_sweeps(rdir))
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


@app.command()
def export(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run or sweep: directory or id."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Run: one row per update. Sweep: one row per cell, "
                                       "and one per member in FILE's stem + -members.csv."),
    png: Optional[Path] = typer.Option(None, "--png", help="Run: the paper's Fig. 4 panels. Sweep: heatmaps "
                                       "of the mean final accuracy per cell."),
    window: Optional[str] = typer.Option(None, "--window", help="A run's PNG only: updates FIRST:LAST (the inset)."),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Export a run's per-update metrics (CSV) or its figure (PNG); or a sweep's summary (CSV) or heatmap (PNG)."""
    from dlf_tui.export.csv import write_csv, write_sweep_csv
    from dlf_tui.export.png import FigureError, parse_window, write_png, write_sweep_png
    from dlf_tui.store.sweep import Sweep

    if csv is None and png is None:
        fail("nothing to export: give --csv FILE and/or --png FILE")
    target = csv
    try:
        r = _run_or_sweep(run, _runs_dir(_obj(ctx, "runs_dir", runs_dir)))
        win = parse_window(window)
        sweep = isinstance(r, Sweep)
        if sweep and win is not None:
            fail(f"--window: {r.id} is a sweep; --window applies to a run's figure")
        if csv is not None:
            if sweep:
                cells, members, mpath = write_sweep_csv(r, csv)
                typer.echo(f"wrote {cells} cells to {csv} and {members} members to {mpath}")
            else:
                n = write_csv(r, csv)
                typer.echo(f"wrote {n} rows to {csv}")
        if png is not None:
            target = png
            if sweep:
                panels = write_sweep_png(r, png)
                typer.echo(f"wrote {panels} heatmap{'s' * (panels != 1)} to {png}")
            else:
                panels = write_png(r, png, win)
                typer.echo(f"wrote {panels} panels to {png}")
    except (runs.RunError, FigureError) as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {err.filename or target}: {err.strerror}")


@app.command()
def sweep(
    ctx: typer.Context,
    preset: str = typer.Argument(..., help="Preset name or TOML file."),
    sets: List[str] = typer.Option(None, "--set", "-s", help="An axis: section.key=v1,v2,... (repeatable; "
                                   "replaces the preset's sweep.grid axis of the same key)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per cell: run.seed, run.seed+1, ... "
                                        "(default: the preset's sweep.seeds)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Summary: fraction of seeds whose final "
                                              "accuracy is >= this (default: the preset's sweep.threshold)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Updates per member (run.steps)."),
    device: Optional[str] = typer.Option(None, "--device", help="run.device for every member."),
    open_ui: bool = typer.Option(False, "--ui", help="Open the TUI sweep view instead of following headless."),
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
) -> None:
    """Train the cross product of the axes' values × seeds as one sweep; follow it headless (or --ui)."""
    from dlf_tui.store import sweep as sweeps
    from dlf_tui.cli.follow_sweep import follow, print_plan

    presets_dir = _obj(ctx, "presets_dir", presets_dir)
    rdir = _runs_dir(_obj(ctx, "runs_dir", runs_dir))
    try:
        cfg = resolve_config(preset, [], presets_dir, steps, device)
        sw = sweeps.create(sweeps.plan(cfg, sets or [], seeds, threshold), rdir)
    except (config.ConfigError, runs.RunError) as err:
        fail(str(err))
    print_plan(sw)
    try:
        proc = sweeps.spawn_engine(sw)
    except OSError as err:
        fail(f"cannot start the sweep engine: {err.strerror}", 1)
    if open_ui:
        _ui(runs_dir=rdir, presets_dir=presets_dir, sweep=sw,
            ascii_markers=(ctx.obj or {}).get("ascii", False))
    raise typer.Exit(follow(sw, proc))


@app.command("sweeps")
def sweeps_cmd(ctx: typer.Context, runs_dir: Optional[Path] = RunsDir) -> None:
    """List sweeps: id, preset, state, cells, members finished, progress."""
    from dlf_tui.store.sweep import list_sweeps

    rdir = _runs_dir(_obj(ctx, "runs_dir", runs_dir))
    items = list_sweeps(rdir)
    if not items:
        typer.echo(f"no sweeps under {rdir}")
        return
    rows = []
    for sw in items:
        done, total = sw.progress()
        fin = sum(m.run.raw_state().get("state") == "finished" for m in sw.members)
        rows.append((sw.id, sw.preset, sw.state().get("state", "unknown"), str(len(sw.cells())),
                     f"{fin}/{len(sw.members)}", f"{100.0 * done / total:.1f}%" if total else "-"))
    w = max(len(r[0]) for r in rows)
    pw = max(6, max(len(r[1]) for r in rows))
    typer.echo(f"{'id':<{w}}  {'preset':<{pw}}  {'state':<9} {'cells':>5} {'finished':>9} {'progress':>8}")
    for r in rows:
        typer.echo(f"{r[0]:<{w}}  {r[1]:<{pw}}  {r[2]:<9} {r[3]:>5} {r[4]:>9} {r[5]:>8}")


MAX_COMPARE = 32


@app.command()
def compare(
    ctx: typer.Context,
    specs: List[str] = typer.Argument(..., help="Runs: ids, unique id prefixes or directories (sweep members "
                                      "too); a sweep id with --cell stands for that cell's members."),
    cell: Optional[str] = typer.Option(None, "--cell", help='A sweep\'s cell, e.g. "amplitude=70 period=5000".'),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Overlay 2-32 runs on the same charts (the TUI compare view)."""
    from dlf_tui.store.sweep import Sweep

    rdir = _runs_dir(_obj(ctx, "runs_dir", runs_dir))
    chosen: list[runs.Run] = []
    swept = False
    try:
        for spec in specs:
            r = _run_or_sweep(spec, rdir)
            if isinstance(r, Sweep):
                if cell is None:
                    fail(f"{r.id} is a sweep: pick one cell with --cell \"{r.label(r.cells()[0])}\"")
                chosen += [m.run for m in r.members_of(_cell(r, cell))]
                swept = True
            else:
                chosen.append(r)
    except (runs.RunError, config.ConfigError) as err:
        fail(str(err))
    if cell is not None and not swept:
        fail("--cell needs a sweep among the runs")
    seen: set[Path] = set()
    for r in chosen:
        if r.path.resolve() in seen:
            fail(f"{r.id} is listed twice")
        seen.add(r.path.resolve())
    if len(chosen) < 2:
        fail(f"compare needs at least 2 runs (got {len(chosen)})")
    if len(chosen) > MAX_COMPARE:
        fail(f"compare takes at most {MAX_COMPARE} runs (got {len(chosen)})")
    _ui(runs_dir=rdir, presets_dir=(ctx.obj or {}).get("presets_dir"), compare=chosen,
        ascii_markers=(ctx.obj or {}).get("ascii", False))


@presets_app.callback()
def presets_list(ctx: typer.Context, presets_dir: Optional[Path] = PresetsDir) -> None:
    """List presets (name, origin, description)."""
    ctx.obj = dict(ctx.obj or {}, presets_dir=_obj(ctx, "presets_dir", presets_dir))
    if ctx.invoked_subcommand is not None:
        return
    try:
        found = presets.discover(ctx.obj["presets_dir"])
    except config.ConfigError as err:
        fail(str(err))
    if not found:
        typer.echo("no presets found")
        return
    w = max(len(p.name) for p in found)
    for p in found:
        typer.echo(f"{p.name:<{w}}  {p.origin:<7}  {p.description()}")


@presets_app.command("show")
def presets_show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Preset name or TOML file."),
    sets: List[str] = SetOpt,
) -> None:
    """Print a preset's fully resolved TOML (with --set overrides applied)."""
    try:
        cfg = resolve_config(name, sets, (ctx.obj or {}).get("presets_dir"))
    except config.ConfigError as err:
        fail(str(err))
    typer.echo(config.to_toml(cfg), nl=False)


def main() -> None:
    """Run the CLI; usage errors are one ``error:`` line too (not click's box)."""
    from typer._click.exceptions import ClickException  # typer vendors click
    from typer.exceptions import Abort, Exit

    try:
        code = app(standalone_mode=False)
    except ClickException as err:
        typer.echo(f"error: {config.printable(err.format_message())} (see dlf-tui --help)", err=True)
        sys.exit(err.exit_code)
    except Exit as err:
        sys.exit(err.exit_code)
    except (Abort, KeyboardInterrupt):  # pragma: no cover - interactive
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
