"""``dlf-tui ctl``: one command to a running engine over its socket; to a sweep,
only ``stop`` (a signal to its engine).  No torch here."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer

from dlf_tui.core import config, states
from dlf_tui.core.errors import ClientError, ConfigError, ProtocolError, RunError
from dlf_tui.cli.common import FAILED, fail, run_or_sweep
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps
from dlf_tui.wire import client, protocol


def parse_values(values: Optional[list[str]]) -> dict:
    """``amplitude=30 lr=0.5`` → {"amplitude": 30, "lr": 0.5} (checked later, by the protocol)."""
    parsed = {}
    for item in values or []:
        key, raw = config.split_assignment(item, "ctl")
        parsed[key] = config.parse_scalar(raw)
    return parsed


def ctl(spec: str, command: str, values: Optional[list[str]], rdir: Path, timeout: float) -> None:
    """Validate everything before connecting, send, print the engine's ``ok: …`` line."""
    try:
        r = run_or_sweep(spec, rdir)
        if isinstance(r, sweeps.Sweep):
            stop_sweep(r, command, values, timeout)
        parsed = parse_values(values)
        protocol.command(command, parsed if command == "set" else (parsed or None))  # validate first
    except (RunError, ConfigError, ProtocolError) as err:
        fail(str(err))
    try:
        reply = client.request(r.path, command, parsed or None, timeout=timeout)
    except ClientError as err:  # EngineRefused too
        fail(str(err), FAILED)
    data = reply.data
    if "params" in data:
        p = data["params"]
        typer.echo(f"ok: amplitude={p['amplitude']:g} period={p['period']} lr={p['lr']:g} "
                   f"(from update {p['step'] + 1})")
    elif "path" in data:
        typer.echo(f"ok: {data['path']}")
    else:
        typer.echo(f"ok: {data.get('state', command)}")


def stop_sweep(sw: sweeps.Sweep, command: str, values: Optional[list[str]], timeout: float) -> NoReturn:
    """``ctl SWEEP stop``: SIGTERM to its live engine, then wait up to ``timeout``."""
    from dlf_tui.cli.follow_sweep import wait_gone

    if command != "stop" or values:
        fail(f"{sw.id} is a sweep: sweeps accept only stop")
    try:
        pid = sw.stop()
    except RunError as err:
        fail(str(err), FAILED)
    if pid is None:
        fail(f"{sw.id} is not running (state {sw.state().get('state', runs.UNKNOWN)})", FAILED)
    if wait_gone(pid, timeout):
        typer.echo(f"ok: {sw.state().get('state', states.STOPPED)}")
    else:
        typer.echo(f"ok: stopping (the engine is still shutting down after {timeout:g} s)")
    raise typer.Exit(0)
