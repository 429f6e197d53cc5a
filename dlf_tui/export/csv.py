"""Export a run's series, or a sweep's summary and members (CSV).  No torch."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from dlf_tui.store import run as runs


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


DIAG_CSV = ("hessian_lambda_max", "ntk_lambda_max")


def _sparse(run: runs.Run, name: str, wanted: list[str]) -> dict[int, list[str]]:
    """{step: formatted cells} of a sparse series (held-out evaluations, diagnostics)."""
    cols = run.columns(name)
    if not wanted or not run.rows(name):
        return {}
    idx = [cols.index(c) for c in wanted]
    return {int(row[0]): [_fmt(float(row[i]), False) for i in idx] for row in run.read(name)}


def write_csv(run: runs.Run, path: Path) -> int:
    """One row per update; validation and diagnostics cells are empty on rows
    without an evaluation / a diagnostic."""
    mcols, ecols = run.columns("metrics"), run.columns("eval")
    if not mcols:
        raise runs.RunError(f"{run.id}: no metrics yet")
    head, vals, rest = csv_columns(mcols, ecols)
    dcols = [c for c in DIAG_CSV if c in run.columns("diag")]
    m = run.read("metrics")
    hidx = [mcols.index(c) for c in head]
    ridx = [mcols.index(c) for c in rest]
    ints = [c in ("step", "period") for c in head]
    ev, dg = _sparse(run, "eval", vals), _sparse(run, "diag", dcols)
    vblank, dblank = [""] * len(vals), [""] * len(dcols)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(head + vals + dcols + rest) + "\n")
        for row in m:
            step = int(row[0])
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


def write_sweep_csv(sweep, path: Path) -> tuple[int, int, Path]:
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
                                        "train_accuracy", "val_accuracy"])
        for m in sweep.members:
            raw = m.run.raw_state()
            state = m.run.state().get("state", "unknown") if raw else "pending"
            last, ev = m.run.last_row(), m.run.last_row("eval")
            step = str(int(last["step"])) if "step" in last else ""
            w.writerow([m.id] + [_value(v) for v in m.cell] + [m.seed, state, step]
                       + [_num(last.get(k)) for k in ("loss_dynamical", "loss_ce", "accuracy")]
                       + [_num(ev.get("val_accuracy"))])
    return len(rows), len(sweep.members), mpath
