"""Reaching a fork's first update: the parent's parameters at update ``at``, exactly.

The fork's directory (``store/fork.py``) holds the parent's newest checkpoint at or
before ``at`` (or none: the initial weights) and the parent's live edits after it.
This replays the updates from there to ``at`` with those edits at their updates and
the parent's run length (which decides its plain-CE tail), checks the replayed rows
against the parent's recorded ones, then applies the fork's own changes from update
``at + 1`` on and checkpoints.  Nothing of the replay is written: the parent's rows
1…at are already in the fork's series.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from dlf_tui.core.errors import SetupError
from dlf_tui.core.schedule import Schedule
from dlf_tui.engine.checkpoints import load_parts, read_checkpoint
from dlf_tui.engine.trainer import LIVE_EDITS
from dlf_tui.store import fork as forkstore
from dlf_tui.store import run as runs

if TYPE_CHECKING:
    from dlf_tui.engine.loops.single import SingleRun

log = logging.getLogger("dlf_tui.engine")


def reach_fork_point(run: "SingleRun") -> None:
    try:
        plan = forkstore.read_plan(run.dir)
    except runs.RunError as err:
        raise SetupError(str(err)) from None
    tr, rec = run.trainer, run.recorder
    at, base, total = plan["at"], plan["base"], tr.total
    if plan.get("checkpoint"):
        path = run.dir / runs.CHECKPOINTS / plan["checkpoint"]
        load_parts(read_checkpoint(path, tr.device), tr.parts(), path)  # the series stay as copied
        if tr.step != base:
            raise SetupError(f"{path}: holds update {tr.step}, the fork plan says {base}")
    else:  # from the initial weights, with the parent's initial settings
        s, init = run.cfg.schedule, plan["initial"]
        tr.schedule = Schedule.create(s.kind, float(init["amplitude"]), int(init["period"]), tr.C,
                                      plan["parent_total"], s.last_period_static)
        tr.set_lr(float(init["lr"]))
    tr.total = plan["parent_total"]
    tr.schedule.set_total(tr.total)
    edits = sorted((int(s), dict(c)) for s, c in plan["edits"])
    replayed, i = [], 0
    while tr.step < at:
        while i < len(edits) and edits[i][0] <= tr.step + 1:  # takes effect at update step+1
            for name, value in edits[i][1].items():
                getattr(tr, LIVE_EDITS[name])(value)
            i += 1
        stop = min(at, edits[i][0] - 1) if i < len(edits) else at
        result = tr.train_chunk(min(tr.chunk_rows, stop - tr.step))
        if result.diverged:
            raise SetupError(f"replaying the parent to update {at}: update {tr.step + 1} "
                             f"diverged ({result.diverged})")
        replayed.append(result.rows)
    tr.total = total
    tr.schedule.set_total(total)
    how = (f"from its checkpoint at update {base}, replaying {at - base} updates" if at > base
           else f"from its checkpoint at update {base}" if plan.get("checkpoint")
           else "from the initial weights")
    rec.event("fork", f"forked from {plan['parent_id']} at update {at} ({how})", step=at,
              parent=plan.get("parent", ""), parent_id=plan["parent_id"], base=base)
    if replayed:
        _check_replay(run, np.concatenate(replayed), base, at)
    if plan["changes"]:
        run.control.set_params(plan["changes"], source="fork")
    run.checkpoint("fork")


def _check_replay(run: "SingleRun", rows: np.ndarray, base: int, at: int) -> None:
    """The replayed updates against the parent's recorded ones: equal bit for bit on the
    same device and dtype; a difference is said, not hidden."""
    recorded = runs.Run(run.dir).read(start=base, stop=at)
    cols = runs.Run(run.dir).columns()
    n = min(len(recorded), len(rows))
    with np.errstate(invalid="ignore"):
        diff = np.abs(rows[:n] - recorded[:n])
    same = np.array_equal(rows[:n], recorded[:n], equal_nan=True)
    if not same:
        worst = float(np.nanmax(diff)) if np.isfinite(diff).any() else float("nan")
        where = cols[int(np.nanargmax(np.nanmax(diff, 0)))] if np.isfinite(diff).any() else "?"
        msg = (f"the replay of updates {base + 1}…{at} differs from the parent's records by up "
               f"to {worst:.3g} ({where}): another device, dtype or thread count?")
        log.warning("%s", msg)
        run.recorder.event("note", msg, step=at)
