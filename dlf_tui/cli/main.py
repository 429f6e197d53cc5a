"""The ``dlf-tui`` command line: parses, then delegates.  No torch here.

Each command's body is elsewhere: ``common`` (refusals, finding presets, runs,
sweeps and cells), ``start`` (run, sweep, resume), ``control`` (ctl), ``listing``
(runs, sweeps, presets), ``export_files`` (export), ``completion`` (what the
shell completes: run and sweep ids, preset names); the TUI is ``dlf_tui.ui``.
Every refusal is one line on stderr: ``error: …`` with exit status 2 (bad input)
or 1 (the engine refused / the run failed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from dlf_tui.cli import cluster, common, completion, control, export_files, listing, start
from dlf_tui.cli.common import explicit, fail, option, resolve_config, run_or_sweep, runs_dir as _runs_dir
from dlf_tui.core import config
from dlf_tui.core.errors import ConfigError, RunError, printable
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps

PROG = "dlf-tui"

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    no_args_is_help=False,
    invoke_without_command=True,
    help="Train neural networks with dynamical loss functions; watch and steer them live.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
presets_app = typer.Typer(help="List shipped and user presets, or show one resolved.",
                          invoke_without_command=True)
app.add_typer(presets_app, name="presets")

RunsDir = typer.Option(None, "--runs-dir", envvar=runs.RUNS_DIR_ENV, show_default=common.RUNS_DIR_DEFAULT,
                       help="Where runs live.")
PresetsDir = typer.Option(None, "--presets-dir", help="Extra presets directory (searched first).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config key: section.key=value (repeatable).")
OfflineOpt = typer.Option(False, "--offline", envvar="DLF_TUI_OFFLINE",
                          help="Never download a data set (--set data.download=false).")
PresetArg = typer.Argument(..., help="Preset name or TOML file.", autocompletion=completion.presets)
RunArg = typer.Argument(..., help="Run directory or id (or a sweep).", autocompletion=completion.runs)
TrustCodeOpt = typer.Option(
    False, "--trust-code",
    help="Run the copy of your model/data code saved in the run directory even when it is not "
         "the file on this machine (read it first: it came with the run).")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {common.version()}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    ctx: typer.Context,
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
    ascii_markers: bool = typer.Option(False, "--ascii", help="ASCII chart markers (no braille)."),
    offline: bool = OfflineOpt,
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """With no command: open the preset picker."""
    # only what was typed before the command: a command's own option (or the
    # environment) decides otherwise (``common.option``)
    ctx.obj = {"runs_dir": explicit(ctx, "runs_dir", runs_dir), "presets_dir": presets_dir,
               "ascii": ascii_markers, "offline": offline}
    if ctx.invoked_subcommand is None:
        _ui(runs_dir=_runs_dir(runs_dir), presets_dir=presets_dir, ascii_markers=ascii_markers,
            offline=offline)


def _ui(**kw) -> None:
    from dlf_tui.ui.app import run_app  # textual is imported only for the TUI commands

    raise typer.Exit(run_app(**kw))


@app.command()
def ui(
    ctx: typer.Context,
    preset: str = PresetArg,
    sets: List[str] = SetOpt,
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
    offline: bool = OfflineOpt,
) -> None:
    """Start PRESET and open the live dashboard (skips the picker)."""
    presets_dir = option(ctx, "presets_dir", presets_dir)
    offline = offline or (ctx.obj or {}).get("offline", False)
    try:
        cfg = resolve_config(preset, sets, presets_dir, offline=offline)
    except ConfigError as err:
        fail(str(err))
    _ui(runs_dir=_runs_dir(option(ctx, "runs_dir", runs_dir)), presets_dir=presets_dir, config=cfg,
        ascii_markers=(ctx.obj or {}).get("ascii", False), offline=offline)


@app.command()
def attach(
    ctx: typer.Context,
    run: Optional[str] = typer.Argument(None, help="Run or sweep: directory or id (default: the most recent run).",
                                        autocompletion=completion.runs),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Open a run in the dashboard (live if it runs, read-only otherwise), or a sweep in the sweep view."""
    rdir = _runs_dir(option(ctx, "runs_dir", runs_dir))
    try:
        r = run_or_sweep(run, rdir)
    except RunError as err:
        fail(str(err))
    kw = {"sweep": r} if isinstance(r, sweeps.Sweep) else {"attach": r}
    _ui(runs_dir=rdir, presets_dir=(ctx.obj or {}).get("presets_dir"),
        ascii_markers=(ctx.obj or {}).get("ascii", False), **kw)


NprocOpt = typer.Option(1, "--nproc", help="Train with N processes (DistributedDataParallel: "
                        "gloo on the CPU, nccl with one GPU per rank); same result as one.")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    preset: str = PresetArg,
    sets: List[str] = SetOpt,
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
    steps: Optional[int] = typer.Option(None, "--steps", help="Shortcut for --set run.steps=N."),
    device: Optional[str] = typer.Option(None, "--device", help="Shortcut for --set run.device=D.",
                                         autocompletion=completion.devices),
    nproc: int = NprocOpt,
    offline: bool = OfflineOpt,
) -> None:
    """Run PRESET headless in a new run directory, with a progress display (under torchrun:
    every rank trains it, rank 0 makes the directory)."""
    env = cluster.torchrun_env()
    if env is not None:  # this process is a rank of torchrun: train here (cli/cluster.py)
        cluster.torchrun_run(env, preset, sets, option(ctx, "presets_dir", presets_dir),
                             _runs_dir(option(ctx, "runs_dir", runs_dir)), steps, device, nproc,
                             offline=offline or (ctx.obj or {}).get("offline", False))
    start.start_run(preset, sets, option(ctx, "presets_dir", presets_dir),
                    _runs_dir(option(ctx, "runs_dir", runs_dir)), steps, device, nproc,
                    offline=offline or (ctx.obj or {}).get("offline", False))


@app.command()
def resume(
    ctx: typer.Context,
    run: str = RunArg,
    runs_dir: Optional[Path] = RunsDir,
    nproc: int = NprocOpt,
    steps: Optional[int] = typer.Option(
        None, "--steps", help="Train to update N (past the old total: a finished run is extended)."),
    sets: List[str] = typer.Option(
        None, "--set", "-s", help="From the resumed update on: schedule.amplitude, schedule.period, "
                                  "optim.lr, run.pace; or run.* / diagnostics.* (repeatable)."),
    trust_code: bool = TrustCodeOpt,
) -> None:
    """Continue a stopped or crashed run (or sweep) from its last checkpoint (headless)."""
    env = cluster.torchrun_env()
    if env is not None:  # a rank of torchrun (cli/cluster.py)
        cluster.torchrun_resume(env, run, _runs_dir(option(ctx, "runs_dir", runs_dir)), nproc,
                                trust_code, steps=steps, sets=sets or [])
    start.resume(run, _runs_dir(option(ctx, "runs_dir", runs_dir)), nproc, trust_code,
                 steps=steps, sets=sets or [])


@app.command("fork")
def fork_cmd(
    ctx: typer.Context,
    run: str = RunArg,
    at: str = typer.Option("latest", "--at", help="The update to fork at: a number, latest "
                                                  "(the last on disk) or now (a live engine's)."),
    sets: List[str] = typer.Option(
        None, "--set", "-s", help="From the fork update on: schedule.amplitude, schedule.period, "
                                  "optim.lr, run.pace; or run.* / diagnostics.* (repeatable)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="The fork's total updates."),
    runs_dir: Optional[Path] = RunsDir,
    trust_code: bool = TrustCodeOpt,
) -> None:
    """A new run with RUN's exact parameters at update --at and other settings from there on
    ("what if A were 1 from here?"); followed headless like run."""
    from dlf_tui.cli import fork

    fork.fork(run, at, sets or [], steps, _runs_dir(option(ctx, "runs_dir", runs_dir)), trust_code)


@app.command(context_settings={"allow_extra_args": False})
def ctl(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run directory or id (or a sweep: stop only).",
                              autocompletion=completion.runs),
    command: str = typer.Argument(..., help="set | pause | resume | stop | checkpoint | rollback",
                                  autocompletion=completion.ctl_commands),
    values: List[str] = typer.Argument(None, help="For set: amplitude=30 period=2000 lr=0.5",
                                       autocompletion=completion.ctl_values),
    runs_dir: Optional[Path] = RunsDir,
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the engine."),
) -> None:
    """Send a command to a running engine; exit 0 when it accepted."""
    control.ctl(run, command, values, _runs_dir(option(ctx, "runs_dir", runs_dir)), timeout)


@app.command("runs")
def runs_cmd(ctx: typer.Context, runs_dir: Optional[Path] = RunsDir) -> None:
    """List runs: id, preset, state, step/total, last accuracy (sweeps: see `dlf-tui sweeps`).
    The first line says which directory was read."""
    listing.list_runs(_runs_dir(option(ctx, "runs_dir", runs_dir)))


@app.command()
def export(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run or sweep: directory or id.", autocompletion=completion.runs),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Run: one row per update. Sweep: one row per cell, "
                                       "and one per member in FILE's stem + -members.csv."),
    png: Optional[Path] = typer.Option(None, "--png", help="Run: the paper's Fig. 4 panels. Sweep: heatmaps "
                                       "of the mean final accuracy per cell."),
    window: Optional[str] = typer.Option(None, "--window", help="A run's PNG only: updates FIRST:LAST (the inset)."),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", help="Run: DIR/<run id>/, every series "
                                               "as scalars, events as text. Sweep: DIR/<sweep id>/<member>/ "
                                               "each, and the HParams table (needs dlf-tui[tensorboard])."),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Export a run's per-update metrics (CSV), its figure (PNG) or TensorBoard events; or a sweep's summary
    (CSV), heatmap (PNG) or TensorBoard runs with HParams."""
    export_files.export(run, csv, png, window, _runs_dir(option(ctx, "runs_dir", runs_dir)),
                        tensorboard=tensorboard)


@app.command()
def sweep(
    ctx: typer.Context,
    preset: str = PresetArg,
    sets: List[str] = typer.Option(None, "--set", "-s", help="An axis: section.key=v1,v2,... (repeatable; "
                                   "replaces the preset's sweep.grid axis of the same key)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per cell: run.seed, run.seed+1, ... "
                                        "(default: the preset's sweep.seeds)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Summary: fraction of seeds whose final "
                                              "accuracy is >= this (default: the preset's sweep.threshold)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Updates per member (run.steps)."),
    device: Optional[str] = typer.Option(None, "--device", help="run.device for every member.",
                                         autocompletion=completion.devices),
    open_ui: bool = typer.Option(False, "--ui", help="Open the TUI sweep view instead of following headless."),
    devices: Optional[str] = typer.Option(
        None, "--devices", help="Train one member at a time on each device, each with its own engine "
                                "and socket: cuda:0,cuda:1 | all (every visible GPU) | cpu,cpu."),
    executor: Optional[str] = typer.Option(
        None, "--executor", help="engine (default: one process trains every member) | slurm (a job "
                                 "array through submitit) | submitit-local (the same, as local processes)."),
    partition: Optional[str] = typer.Option(None, "--partition", help="--executor slurm: the partition."),
    gpus_per_member: Optional[int] = typer.Option(None, "--gpus-per-member",
                                                  help="--executor slurm: GPUs per member's job (default 0)."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="--executor slurm: each job's time limit, "
                                             "HH:MM (default 01:00; a member stops with a checkpoint)."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel",
                                               help="--executor slurm/submitit-local: members at once."),
    runs_dir: Optional[Path] = RunsDir,
    presets_dir: Optional[Path] = PresetsDir,
    offline: bool = OfflineOpt,
) -> None:
    """Train the cross product of the axes' values × seeds as one sweep; follow it headless (or --ui)."""
    presets_dir = option(ctx, "presets_dir", presets_dir)
    rdir = _runs_dir(option(ctx, "runs_dir", runs_dir))
    ex = cluster.sweep_executor(executor, devices, partition, gpus_per_member, time_limit, max_parallel)
    sw, proc = start.start_sweep(preset, sets, seeds, threshold, steps, device, presets_dir, rdir,
                                 offline=offline or (ctx.obj or {}).get("offline", False), executor=ex)
    if open_ui:
        _ui(runs_dir=rdir, presets_dir=presets_dir, sweep=sw,
            ascii_markers=(ctx.obj or {}).get("ascii", False))
    start.follow_sweep(sw, proc)


@app.command("sweeps")
def sweeps_cmd(ctx: typer.Context, runs_dir: Optional[Path] = RunsDir) -> None:
    """List sweeps: id, preset, state, cells, members finished, progress."""
    listing.list_sweeps(_runs_dir(option(ctx, "runs_dir", runs_dir)))


@app.command()
def compare(
    ctx: typer.Context,
    specs: List[str] = typer.Argument(..., help="Runs: ids, unique id prefixes or directories (sweep members "
                                      "too); a sweep id with --cell stands for that cell's members.",
                                      autocompletion=completion.runs),
    cell: Optional[str] = typer.Option(None, "--cell", help='A sweep\'s cell, e.g. "amplitude=70 period=5000".'),
    runs_dir: Optional[Path] = RunsDir,
) -> None:
    """Overlay 2-32 runs on the same charts (the TUI compare view)."""
    rdir = _runs_dir(option(ctx, "runs_dir", runs_dir))
    chosen = common.runs_to_compare(specs, cell, rdir)
    _ui(runs_dir=rdir, presets_dir=(ctx.obj or {}).get("presets_dir"), compare=chosen,
        ascii_markers=(ctx.obj or {}).get("ascii", False))


@presets_app.callback()
def presets_list(ctx: typer.Context, presets_dir: Optional[Path] = PresetsDir) -> None:
    """List presets (name, origin, description)."""
    ctx.obj = dict(ctx.obj or {}, presets_dir=option(ctx, "presets_dir", presets_dir))
    if ctx.invoked_subcommand is None:
        listing.list_presets(ctx.obj["presets_dir"])


@presets_app.command("show")
def presets_show(
    ctx: typer.Context,
    name: str = PresetArg,
    sets: List[str] = SetOpt,
) -> None:
    """Print a preset's fully resolved TOML (with --set overrides applied)."""
    try:
        cfg = resolve_config(name, sets, (ctx.obj or {}).get("presets_dir"))
    except ConfigError as err:
        fail(str(err))
    typer.echo(config.to_toml(cfg), nl=False)


def main() -> None:
    """Run the CLI; usage errors are one ``error:`` line too (not click's box)."""
    from typer import Abort, Exit

    try:
        from typer._click.exceptions import ClickException  # typer >= 0.26 vendors click
    except ImportError:  # pragma: no cover - older typer, on click itself
        from click.exceptions import ClickException

    try:
        code = app(standalone_mode=False, prog_name=PROG)  # prog_name: completion reads _DLF_TUI_COMPLETE
    except ClickException as err:
        typer.echo(f"error: {printable(err.format_message())} (see dlf-tui --help)", err=True)
        sys.exit(err.exit_code)
    except Exit as err:
        sys.exit(err.exit_code)
    except (Abort, KeyboardInterrupt):  # pragma: no cover - interactive
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
