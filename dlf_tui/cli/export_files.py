"""``dlf-tui export``: a run's per-update CSV, its figure (PNG) or its TensorBoard
event file; a sweep's summary CSV (and its members' CSV), its heatmaps (PNG) or one
TensorBoard run per member with the HParams table.  No torch here; matplotlib only
for a PNG, tensorboardX only for --tensorboard."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlf_tui.core.errors import ExportError, FigureError, RunError
from dlf_tui.cli.common import fail, run_or_sweep
from dlf_tui.store import sweep as sweeps


def export(spec: str, csv: Optional[Path], png: Optional[Path], window: Optional[str], rdir: Path,
           tensorboard: Optional[Path] = None) -> None:
    from dlf_tui.export.csv import write_csv, write_sweep_csv
    from dlf_tui.export.png import parse_window, write_png, write_sweep_png

    if csv is None and png is None and tensorboard is None:
        fail("nothing to export: give --csv FILE, --png FILE and/or --tensorboard DIR")
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
        if tensorboard is not None:
            target = tensorboard
            _tensorboard(r, tensorboard)
    except (RunError, FigureError, ExportError) as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {err.filename or target}: {err.strerror}")


def _tensorboard(r, out: Path) -> None:
    from dlf_tui.export.tensorboard import write_sweep_tensorboard, write_tensorboard

    if isinstance(r, sweeps.Sweep):
        w = write_sweep_tensorboard(r, out)
        scalars = sum(m.scalars for m in w.members)
        pending = f"; {len(w.skipped)} without metrics yet" if w.skipped else ""
        typer.echo(f"wrote {len(w.members)} members ({scalars:,} scalars) and the HParams table "
                   f"to {w.path}{pending}  (tensorboard --logdir {out})")
    else:
        w = write_tensorboard(r, out)
        typer.echo(f"wrote {w.scalars:,} scalars ({w.updates:,} updates) and {w.texts} event "
                   f"text{'s' * (w.texts != 1)} to {w.path}  (tensorboard --logdir {out})")
