"""What every command shares: the one way to refuse, and finding what the
command line names (a preset with its overrides, a run or a sweep, a sweep's
cell).  No torch here.

Every refusal is one line on stderr: ``error: …`` with exit status 2 (bad input)
or 1 (the engine refused / the run failed).
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer

from dlf_tui.core import config, presets
from dlf_tui.core.errors import ConfigError, RunError, printable
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps

BAD_INPUT, FAILED = 2, 1  # exit statuses


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {printable(message)}", err=True)
    raise typer.Exit(code)


def _home_short(path: Path) -> str:
    """``path`` with the home directory written ``~`` (for help texts)."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


RUNS_DIR_DEFAULT = _home_short(runs.user_runs_dir())  # what --help says (typer adds the env var)


def runs_dir(value: Optional[Path]) -> Path:
    return value if value is not None else runs.default_runs_dir()


def typed(ctx: typer.Context, key: str) -> bool:
    """Was option ``key`` of this command typed on the command line (not taken
    from its environment variable or its default)?"""
    try:
        source = ctx.get_parameter_source(key)
    except Exception:  # noqa: BLE001 - not a parameter of this command
        return False
    return source is not None and source.name == "COMMANDLINE"


def explicit(ctx: typer.Context, key: str, value):
    """``value`` if it was typed, else None."""
    return value if typed(ctx, key) else None


def option(ctx: typer.Context, key: str, value):
    """A command's own option when typed, else the same option typed before the
    command, else the command's value (from the environment, or None)."""
    if value is not None and typed(ctx, key):
        return value
    before = (ctx.obj or {}).get(key)
    return before if before is not None else value


def version() -> str:
    """The installed distribution's version (the package's own in a bare checkout)."""
    from importlib import metadata

    try:
        return metadata.version("dlf-tui")
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        from dlf_tui import __version__

        return __version__


def with_hint(message: str, rdir: Path) -> str:
    """A "no run" refusal that says where runs were looked for and, when the
    directory dlf-tui was started from has a ``runs/`` of its own (where runs
    lived before they moved to the per-user directory), how to read that one."""
    if not message.startswith("no "):
        return message
    out = message if str(rdir) in message else f"{message} (looked under {rdir})"
    legacy = Path("runs")
    try:
        other = legacy.resolve() != rdir.resolve() and any(legacy.glob("*/" + runs.STATE))
    except OSError:
        other = False
    return out + ("; ./runs holds runs too: --runs-dir runs" if other else "")


def resolve_config(spec: str, sets: list[str], presets_dir: Optional[Path],
                   steps: Optional[int] = None, device: Optional[str] = None,
                   offline: bool = False) -> config.Config:
    cfg = presets.find(spec, presets_dir)
    cfg = config.apply_overrides(cfg, sets or [])
    extra = []
    if steps is not None:
        extra.append(f"run.steps={steps}")
    if device is not None:
        extra.append(f"run.device={device}")
    if offline:
        extra.append("data.download=false")
    return config.apply_overrides(cfg, extra, source="option")


def run_or_sweep(spec: Optional[str], rdir: Path) -> runs.Run | sweeps.Sweep:
    """A sweep when ``spec`` names one (its directory, id or unique id prefix),
    else a run (``runs.resolve``: a member's directory is a run); one line when
    neither, or when a prefix names both a run and a sweep."""
    try:
        run, run_err = runs.resolve(spec, rdir), None
    except RunError as err:
        run, run_err = None, RunError(with_hint(str(err), rdir))
    if spec in (None, "", "latest"):
        if run is None:
            raise run_err
        return run
    try:
        sw = sweeps.resolve(spec, rdir)
    except RunError as err:
        if run is not None:
            return run
        raise (run_err if str(err).startswith("no sweep") else err) from None
    if run is not None:
        raise RunError(f"{spec!r} is ambiguous: run {run.id} and sweep {sw.id}")
    return sw


def sweep_cell(sw: sweeps.Sweep, text: str) -> tuple:
    """``"amplitude=70 period=5000"`` → that cell of sweep ``sw`` (axes by key or
    short name; an axis with one value may be left out)."""
    want: dict[str, object] = {}
    for item in text.split():
        key, raw = config.split_assignment(item, "--cell")
        found = [a for a in sw.axes if key in (a.key, a.short)]
        if len(found) != 1:
            names = ", ".join(a.key for a in sw.axes) or "none"
            raise ConfigError(f"--cell {printable(item)[:80]}: "
                              f"{'ambiguous' if found else 'not an axis'} (axes of {sw.id}: {names})")
        a = found[0]
        values = config.parse_axis(f"{a.key}={raw}", "--cell").values
        if len(values) != 1:
            raise ConfigError(f"--cell {printable(item)[:80]}: give one value per axis")
        if values[0] not in a.values:
            raise ConfigError(f"--cell {printable(item)[:80]}: {a.short} is one of "
                              f"{', '.join(sweeps.slug(v) for v in a.values)}")
        want[a.key] = values[0]
    missing = [a.short for a in sw.axes if a.key not in want and len(a.values) > 1]
    if missing:
        raise ConfigError(f"--cell {printable(text)[:80]!r}: give {', '.join(missing)} too")
    return tuple(want.get(a.key, a.values[0]) for a in sw.axes)


MAX_COMPARE = 32


def runs_to_compare(specs: list[str], cell: Optional[str], rdir: Path) -> list[runs.Run]:
    """The runs ``compare`` overlays: each spec a run, or a sweep standing for the
    members of ``--cell``; refuses (``fail``) duplicates and fewer than 2 or more
    than ``MAX_COMPARE`` runs."""
    chosen: list[runs.Run] = []
    swept = False
    try:
        for spec in specs:
            r = run_or_sweep(spec, rdir)
            if isinstance(r, sweeps.Sweep):
                if cell is None:
                    fail(f"{r.id} is a sweep: pick one cell with --cell \"{r.label(r.cells()[0])}\"")
                chosen += [m.run for m in r.members_of(sweep_cell(r, cell))]
                swept = True
            else:
                chosen.append(r)
    except (RunError, ConfigError) as err:
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
    return chosen
