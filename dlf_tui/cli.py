"""The ``dlf-tui`` command line: parses, then delegates.  No torch here.

Every refusal is one line on stderr: ``error: …`` with exit status 2 (bad input)
or 1 (the engine refused / the run failed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import config, presets, runs
from .client import ClientError, EngineRefused

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
    from .ui.app import run_app  # textual is imported only for the TUI commands

    raise typer.Exit(run_app(**kw))


def _obj(ctx: typer.Context, key: str, value):
    return value if value is not None else (ctx.obj or {}).get(key)


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
    run: Optional[str] = typer.Argument(None, help="Run directory or id [default: the most recent]."),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Open a run in the dashboard: live if it runs, read-only otherwise."""
    rdir = _runs_dir(_obj(ctx, "runs_dir", runs_dir))
    try:
        r = runs.resolve(run, rdir)
    except runs.RunError as err:
        fail(str(err))
    _ui(runs_dir=rdir, presets_dir=(ctx.obj or {}).get("presets_dir"), attach=r,
        ascii_markers=(ctx.obj or {}).get("ascii", False))


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    preset: str = typer.Argument(..., help="Preset name or TOML file."),
    sets: List[str] = SetOpt,
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
    steps: Optional[int] = typer.Option(None, "--steps", help="Shortcut for --set run.steps=N."),
    device: Optional[str] = typer.Option(None, "--device", help="Shortcut for --set run.device=D."),
) -> None:
    """Run PRESET headless in a new run directory, with a progress display."""
    from .headless import run_headless

    try:
        cfg = resolve_config(preset, sets, _obj(ctx, "presets_dir", presets_dir), steps, device)
        run = runs.create_run(cfg, _runs_dir(_obj(ctx, "runs_dir", runs_dir)))
    except (config.ConfigError, runs.RunError) as err:
        fail(str(err))
    raise typer.Exit(run_headless(run))


@app.command()
def resume(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run directory or id."),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Continue a stopped or crashed run from its last checkpoint (headless)."""
    from .headless import run_headless

    try:
        r = runs.resolve(run, _runs_dir(_obj(ctx, "runs_dir", runs_dir)))
    except runs.RunError as err:
        fail(str(err))
    state = r.state().get("state")
    if state in runs.LIVE_STATES:
        fail(f"{r.id} is {state}: its engine is still live")
    if state == "finished":
        fail(f"{r.id} already finished")
    raise typer.Exit(run_headless(r, resume=True))


@app.command(context_settings={"allow_extra_args": False})
def ctl(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run directory or id."),
    command: str = typer.Argument(..., help="set | pause | resume | stop | checkpoint | rollback"),
    values: List[str] = typer.Argument(None, help="For set: amplitude=30 period=2000 lr=0.5"),
    runs_dir: Optional[Path] = RunsDir,
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the engine."),
) -> None:
    """Send a command to a running engine; exit 0 when it accepted."""
    from . import client, protocol

    try:
        r = runs.resolve(run, _runs_dir(_obj(ctx, "runs_dir", runs_dir)))
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


@app.command("runs")
def runs_cmd(ctx: typer.Context, runs_dir: Optional[Path] = RunsDir) -> None:
    """List runs: id, preset, state, step/total, last accuracy."""
    rdir = _runs_dir(_obj(ctx, "runs_dir", runs_dir))
    items = runs.list_runs(rdir)
    if not items:
        typer.echo(f"no runs under {rdir}")
        return
    rows = [r.summary() for r in items]
    w = max(len(s["id"]) for s in rows)
    pw = max(6, max(len(s["preset"]) for s in rows))
    typer.echo(f"{'id':<{w}}  {'preset':<{pw}}  {'state':<9} {'step/total':>17}  accuracy")
    for s in rows:
        acc = "" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
        steps = f"{s['step']}/{s['total']}"
        typer.echo(f"{s['id']:<{w}}  {s['preset']:<{pw}}  {s['state']:<9} {steps:>17}  {acc}")


@app.command()
def export(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run directory or id."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write one row per update to this CSV file."),
    png: Optional[Path] = typer.Option(None, "--png", help="Draw the paper's Fig. 4 panels to this PNG."),
    window: Optional[str] = typer.Option(None, "--window", help="PNG only: updates FIRST:LAST (the paper's inset)."),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Export a run's per-update metrics (CSV) or its figure (PNG)."""
    from .export import write_csv
    from .figure import FigureError, parse_window, write_png

    if csv is None and png is None:
        fail("nothing to export: give --csv FILE and/or --png FILE")
    target = csv
    try:
        r = runs.resolve(run, _runs_dir(_obj(ctx, "runs_dir", runs_dir)))
        win = parse_window(window)
        if csv is not None:
            n = write_csv(r, csv)
            typer.echo(f"wrote {n} rows to {csv}")
        if png is not None:
            target = png
            panels = write_png(r, png, win)
            typer.echo(f"wrote {panels} panels to {png}")
    except (runs.RunError, FigureError) as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {target}: {err.strerror}")


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
