"""Export a run's series, or a sweep's summary and members (CSV).  No torch."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from dlf_tui.core import series
from dlf_tui.core.errors import RunError
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps


def csv_columns(metric_cols: list[str], eval_cols: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(fixed head, validation columns, other per-update columns).

    The CSV header is ``head + validation + rest``: ``step, loss_dynamical,
    loss_ce (loss_mse for an MSE run), accuracy, accuracy_class_*, gamma_*, amplitude, period, lr``, then
    the validation columns where the run has them, then grad_norm and the like."""
    C = series.classes_of(metric_cols)
    head = ([series.STEP, series.LOSS_DYNAMICAL, series.plain_loss(metric_cols), series.ACCURACY]
            + [series.accuracy_class(i) for i in range(C)]
            + [series.gamma(i) for i in range(C)] + [series.AMPLITUDE, series.PERIOD, series.LR])
    vals = [c for c in eval_cols if c != series.STEP]
    rest = [c for c in metric_cols if c not in head]
    return head, vals, rest


def _fmt(v: float, integer: bool) -> str:
    if math.isnan(v):
        return ""
    return str(int(v)) if integer and math.isfinite(v) else repr(float(v))


def _step(run: runs.Run, name: str, k: int, v: float) -> int:
    """Row ``k``'s update number, which must be a whole finite number."""
    if not math.isfinite(v) or v != int(v):
        raise RunError(f"{run.id}: {name}.bin row {k + 1}: update number {v!r} is not a whole number")
    return int(v)


def _indices(run: runs.Run, name: str, cols: list[str], wanted: list[str]) -> list[int]:
    missing = [c for c in wanted if c not in cols]
    if missing:
        raise RunError(f"{run.id}: {name}.json lacks the column(s) {', '.join(missing[:5])}")
    return [cols.index(c) for c in wanted]


DIAG_CSV = (series.HESSIAN_LAMBDA_MAX, series.NTK_LAMBDA_MAX)


def _sparse(run: runs.Run, name: str, wanted: list[str]) -> dict[int, list[str]]:
    """{step: formatted cells} of a sparse series (held-out evaluations, diagnostics)."""
    cols = run.columns(name)
    if not wanted or not run.rows(name):
        return {}
    idx = _indices(run, name, cols, wanted)
    return {_step(run, name, k, float(row[0])): [_fmt(float(row[i]), False) for i in idx]
            for k, row in enumerate(run.read(name))}


def write_csv(run: runs.Run, path: Path) -> int:
    """One row per update; validation and diagnostics cells are empty on rows
    without an evaluation / a diagnostic."""
    mcols, ecols = run.columns(series.METRICS), run.columns(series.EVAL)
    if not mcols:
        raise RunError(f"{run.id}: no metrics yet")
    head, vals, rest = csv_columns(mcols, ecols)
    dcols = [c for c in DIAG_CSV if c in run.columns(series.DIAG)]
    m = run.read(series.METRICS)
    hidx = _indices(run, series.METRICS, mcols, head)
    ridx = _indices(run, series.METRICS, mcols, rest)
    ints = [c in (series.STEP, series.PERIOD) for c in head]
    ev, dg = _sparse(run, series.EVAL, vals), _sparse(run, series.DIAG, dcols)
    vblank, dblank = [""] * len(vals), [""] * len(dcols)
    steps = [_step(run, series.METRICS, k, v) for k, v in enumerate(m[:, 0].tolist())]
    with open(path, "w", encoding="utf-8", newline="") as fh:  # nothing is written before this
        fh.write(",".join(head + vals + dcols + rest) + "\n")
        for step, row in zip(steps, m):
            cells = [_fmt(float(row[i]), isint) for i, isint in zip(hidx, ints)]
            cells += ev.get(step, vblank) + dg.get(step, dblank)
            cells += [_fmt(float(row[i]), False) for i in ridx]
            fh.write(",".join(cells) + "\n")
    return int(m.shape[0])


# ---------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------


def _value(v) -> str:
    """An axis value exactly: 70.0, 5000, [16, 16], triangle."""
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _num(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else repr(float(v))


def members_csv_path(path: Path) -> Path:
    """``summary.csv`` → ``summary-members.csv`` (next to it)."""
    path = Path(path)
    return path.with_name(path.stem + "-members.csv")


def write_sweep_csv(sweep: sweeps.Sweep, path: Path) -> tuple[int, int, Path]:
    """``path``: one row per cell (axis values, seeds, finished, mean/std/fraction ≥
    threshold of the final train and validation accuracy, threshold); next to it
    ``<stem>-members.csv``: one row per member (its final update's values).
    Returns (cells, members, members path).  Blank cells where there is no value."""
    keys = [a.key for a in sweep.axes]
    rows = sweep.summary()
    mpath = members_csv_path(path)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys + ["seeds", "finished", "train_mean", "train_std", "train_frac",
                           "val_mean", "val_std", "val_frac", "threshold"])
        for r in rows:
            tr, va = r["train"], r["val"] or {}
            w.writerow([_value(v) for v in r["cell"]] + [r["seeds"], r["finished"]]
                       + [_num(tr.get(k)) for k in ("mean", "std", "frac")]
                       + [_num(va.get(k)) for k in ("mean", "std", "frac")]
                       + [repr(sweep.threshold)])
    with open(mpath, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["member"] + keys + ["seed", "state", "step", "loss_dynamical", "loss_ce",
                                        "train_accuracy", "val_accuracy", "loss_mse"])
        for m in sweep.members:
            raw = m.run.raw_state()
            state = m.run.state().get("state", runs.UNKNOWN) if raw else sweeps.PENDING
            last, ev = m.run.last_row(), m.run.last_row(series.EVAL)
            step = str(int(last[series.STEP])) if series.STEP in last else ""
            w.writerow([m.id] + [_value(v) for v in m.cell] + [m.seed, state, step]
                       + [_num(last.get(k)) for k in (series.LOSS_DYNAMICAL, series.LOSS_CE,
                                                      series.ACCURACY)]
                       + [_num(ev.get(series.VAL_ACCURACY)), _num(last.get(series.LOSS_MSE))])
    return len(rows), len(sweep.members), mpath
