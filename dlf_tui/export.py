"""Export a run's series.  No torch."""

from __future__ import annotations

import math
from pathlib import Path

from . import runs


def csv_columns(metric_cols: list[str], eval_cols: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(fixed head, validation columns, other per-update columns).

    The CSV header is ``head + validation + rest``: ``step, loss_dynamical,
    loss_ce, accuracy, accuracy_class_*, gamma_*, amplitude, period, lr``, then
    the validation columns where the run has them, then grad_norm and the like."""
    C = sum(c.startswith("accuracy_class_") for c in metric_cols)
    head = (["step", "loss_dynamical", "loss_ce", "accuracy"]
            + [f"accuracy_class_{i}" for i in range(C)]
            + [f"gamma_{i}" for i in range(C)] + ["amplitude", "period", "lr"])
    vals = [c for c in eval_cols if c != "step"]
    rest = [c for c in metric_cols if c not in head]
    return head, vals, rest


def _fmt(v: float, integer: bool) -> str:
    if math.isnan(v):
        return ""
    return str(int(v)) if integer else repr(float(v))


def write_csv(run: runs.Run, path: Path) -> int:
    """One row per update; validation cells are empty on rows without an evaluation."""
    mcols, ecols = run.columns("metrics"), run.columns("eval")
    if not mcols:
        raise runs.RunError(f"{run.id}: no metrics yet")
    head, vals, rest = csv_columns(mcols, ecols)
    m = run.read("metrics")
    hidx = [mcols.index(c) for c in head]
    ridx = [mcols.index(c) for c in rest]
    ints = [c in ("step", "period") for c in head]
    ev: dict[int, list[str]] = {}
    if vals and run.rows("eval"):
        vidx = [ecols.index(c) for c in vals]
        ev = {int(row[0]): [_fmt(float(row[i]), False) for i in vidx] for row in run.read("eval")}
    blank = [""] * len(vals)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(head + vals + rest) + "\n")
        for row in m:
            cells = [_fmt(float(row[i]), isint) for i, isint in zip(hidx, ints)]
            cells += ev.get(int(row[0]), blank)
            cells += [_fmt(float(row[i]), False) for i in ridx]
            fh.write(",".join(cells) + "\n")
    return int(m.shape[0])
