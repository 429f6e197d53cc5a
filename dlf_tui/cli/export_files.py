"""``dlf-tui export``: a run's per-update CSV or its figure (PNG); a sweep's summary
CSV (and its members' CSV) or its heatmaps (PNG).  No torch here; matplotlib only
for a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlf_tui.core.errors import FigureError, RunError
from dlf_tui.cli.common import fail, run_or_sweep
from dlf_tui.store import sweep as sweeps


def export(spec: str, csv: Optional[Path], png: Optional[Path], window: Optional[str], rdir: Path) -> None:
    from dlf_tui.export.csv import write_csv, write_sweep_csv
    from dlf_tui.export.png import parse_window, write_png, write_sweep_png

    if csv is None and png is None:
        fail("nothing to export: give --csv FILE and/or --png FILE")
    target = csv
    try:
        r = run_or_sweep(spec, rdir)
        win = parse_window(window)
        sweep = isinstance(r, sweeps.Sweep)
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
    except (RunError, FigureError) as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {err.filename or target}: {err.strerror}")
