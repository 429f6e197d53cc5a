"""Forks: a new run that starts from a parent run's exact parameters at an update.

``create(parent, at, sets, steps, runs_dir)`` makes the child's directory:

- ``config.toml``: the parent's, with ``[fork] parent, at`` and the changed settings;
- the parent's updates 1…at (metrics, and the held-out and diagnostic rows up to
  ``at``) and its events up to ``at``, so the child's series continue the parent's
  update numbers and its first own update is ``at + 1``;
- the parent's newest checkpoint at or before ``at`` (none: training starts from
  the initial weights, update 0) and its saved user code;
- ``fork.json``: what the engine (``engine/loops/fork.py``) replays to reach ``at``
  exactly — the parent's live edits between the checkpoint and ``at``, at their
  updates — and the changes to apply from ``at + 1`` on.

A fork may change only what does not change the parameters' meaning: the live
parameters (A, T, lr, pace) and how the run is run (its length, checkpoints,
flushes, diagnostics, device).  No torch here.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dlf_tui.core import config, series
from dlf_tui.core.errors import ConfigError, RunError
from dlf_tui.store import code as codestore
from dlf_tui.store import run as runs

PLAN = "fork.json"
CHECKPOINT = re.compile(r"step-(\d+)\.pt$")
# --set keys a fork (or a resume) may change; the rest would change what the parameters mean
LIVE_KEYS = {"schedule.amplitude": "amplitude", "schedule.period": "period", "optim.lr": "lr",
             "run.pace": "pace"}
RUN_KEYS = ("run.steps", "run.checkpoint_every", "run.flush_every", "run.flush_seconds",
            "run.device", "run.threads", "diagnostics.")
HISTORY = ("set", "static_tail", "diverged", "eos", "edge_of_stability", "note", "code")


def checkpoint_step(path: Path) -> int | None:
    """The update a checkpoint file holds, from its name (None: not a checkpoint's name)."""
    m = CHECKPOINT.search(path.name)
    return int(m.group(1)) if m else None


def checkpoints(run: runs.Run) -> list[tuple[int, Path]]:
    """(update, path) of the run's checkpoints, oldest first."""
    out = []
    for p in (run.path / runs.CHECKPOINTS).glob("step-*.pt"):
        step = checkpoint_step(p)
        if step is not None:
            out.append((step, p))
    return sorted(out)


def live_edits(events: list[dict[str, Any]], after: int, upto: int) -> list[tuple[int, dict]]:
    """The ``set`` events taking effect at updates after+1 … upto that the run kept:
    an edit recorded before a rewind (resume from a checkpoint, rollback) to an update
    before it was undone."""
    kept: list[tuple[int, dict]] = []
    for ev in events:
        step = ev.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        back = ev.get("rewound_to")
        if isinstance(back, int) and not isinstance(back, bool):
            kept = [(s, c) for s, c in kept if s <= back]
        if ev.get("kind") == "set" and isinstance(ev.get("changes"), dict) and after < step <= upto:
            changes = {k: v for k, v in ev["changes"].items() if k in ("amplitude", "period", "lr")}
            if changes:
                kept.append((step, changes))
    return kept


def split_sets(sets: list[str], what: str) -> tuple[list[str], dict[str, Any]]:
    """(config overrides, live changes) of ``--set`` items a fork or resume accepts;
    ConfigError (one line) for one it does not."""
    overrides, live = [], {}
    for item in sets:
        key, raw = config.split_assignment(item, "--set")
        key = key.strip()
        if key in LIVE_KEYS:
            live[LIVE_KEYS[key]] = config.check_live(LIVE_KEYS[key], config.parse_scalar(raw))
        elif not any(key == k or (k.endswith(".") and key.startswith(k)) for k in RUN_KEYS):
            allowed = ", ".join([*LIVE_KEYS, *RUN_KEYS[:-1], "diagnostics.*"])
            raise ConfigError(f"--set {item}: {what} keeps the run's model, data, loss and "
                              f"optimizer; it may set {allowed}")
        overrides.append(item)
    return overrides, live


@dataclass
class Plan:
    parent: runs.Run
    at: int
    checkpoint: tuple[int, Path] | None  # the parent's newest at or before ``at``
    edits: list[tuple[int, dict]]  # the parent's edits to replay, (update, changes)
    changes: dict[str, Any]  # applied from update at+1
    cfg: config.Config  # the child's


def plan(parent: runs.Run, at: int | str, sets: list[str], steps: int | None) -> Plan:
    """What a fork of ``parent`` at ``at`` (an update, or "latest") with ``sets`` is."""
    if parent.own_loop_reason():
        raise RunError(f"{parent.id}: a run of your own training loop (dlf_tui.live) cannot "
                       f"be forked by the engine: fork it in your script")
    rows = parent.rows()
    if at == "latest":
        at = rows
    if not isinstance(at, int) or at < 0:
        raise ConfigError(f"--at {at}: needs an update number, latest or now")
    if at > rows:
        raise RunError(f"--at {at}: {parent.id} has {rows} updates on disk")
    try:
        pcfg = parent.config()
    except ConfigError as err:
        raise RunError(str(err)) from None
    if pcfg.fork.parent and at < pcfg.fork.at:  # before this fork existed: from its parent
        grand = runs.Run(Path(pcfg.fork.parent))
        if not (grand.path / runs.CONFIG).exists():
            raise RunError(f"--at {at}: {parent.id} was forked at update {pcfg.fork.at} from "
                           f"{grand.path}, which is not here")
        return plan(grand, at, sets, steps)
    overrides, changes = split_sets(sets, "a fork")
    cfg = config.apply_overrides(pcfg, overrides)
    if steps is not None:
        cfg = config.apply_overrides(cfg, [f"run.steps={steps}"], "--steps")
    if cfg.run.steps <= at:
        raise ConfigError(f"run.steps = {cfg.run.steps}: a fork at update {at} needs more "
                          f"updates (--steps N)")
    for key, name in LIVE_KEYS.items():  # the child's config says what it trains with
        if name in changes:
            section, field_ = key.split(".")
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{field_: changes[name]})})
    cfg = replace(cfg, fork=config.ForkConfig(parent=str(parent.path.resolve()), at=at))
    ckpt = next(((s, p) for s, p in reversed(checkpoints(parent)) if s <= at), None)
    if ckpt is None and pcfg.fork.parent:  # a fork's updates before its own first checkpoint
        raise RunError(f"--at {at}: {parent.id} has no checkpoint at or before update {at}")
    base = ckpt[0] if ckpt else 0
    return Plan(parent, at, ckpt, live_edits(parent.events(), base, at), changes, cfg)


def create(p: Plan, runs_dir: Path) -> runs.Run:
    """The child's directory, ready for ``python -m dlf_tui.engine CHILD --fork``."""
    child = runs.create_run(p.cfg, runs_dir)
    try:
        _copy_history(p, child)
    except OSError as err:
        shutil.rmtree(child.path, ignore_errors=True)
        raise RunError(f"cannot write the fork {child.path}: {err.strerror or err}") from None
    return child


def _copy_history(p: Plan, child: runs.Run) -> None:
    parent, at = p.parent, p.at
    for name in series.SERIES:
        cols = parent.columns(name)
        if not cols:
            continue
        data = parent.read(name)
        keep = data[data[:, 0] <= at] if len(data) else data
        runs.write_json_atomic(child.file(f"{name}.json"), {"columns": cols, "dtype": "<f8"})
        child.file(f"{name}.bin").write_bytes(keep.astype("<f8").tobytes())
    with open(child.file(runs.EVENTS), "w", encoding="utf-8") as fh:
        for ev in parent.events():
            if ev.get("kind") in HISTORY and isinstance(ev.get("step"), int) and ev["step"] <= at:
                fh.write(json.dumps({**ev, "inherited": parent.id}) + "\n")
    src = parent.path / codestore.CODE
    if src.is_dir():
        shutil.copytree(src, child.path / codestore.CODE)
    ckpt_dir = child.path / runs.CHECKPOINTS
    ckpt_dir.mkdir(exist_ok=True)
    copied = None
    if p.checkpoint is not None:
        copied = ckpt_dir / p.checkpoint[1].name
        shutil.copyfile(p.checkpoint[1], copied)
    pcfg = parent.config()
    runs.write_json_atomic(child.file(PLAN), {
        "parent": str(parent.path.resolve()), "parent_id": parent.id, "at": at,
        "checkpoint": copied.name if copied else None,
        "base": p.checkpoint[0] if p.checkpoint else 0,
        "edits": [[s, c] for s, c in p.edits], "changes": p.changes,
        "parent_total": pcfg.run.steps,
        "initial": {"amplitude": pcfg.schedule.amplitude, "period": pcfg.schedule.period,
                    "lr": pcfg.optim.lr}})


def read_plan(run_dir: Path) -> dict[str, Any]:
    """The fork plan the engine follows (RunError in one line when it is malformed)."""
    from dlf_tui.store import files

    doc = files.read_json(Path(run_dir) / PLAN)
    need = {"at": int, "base": int, "edits": list, "changes": dict, "parent_total": int,
            "initial": dict, "parent_id": str}
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), t) for k, t in need.items()):
        raise RunError(f"{run_dir / PLAN}: unreadable fork plan")
    return doc


def continued(run: runs.Run, steps: int | None, sets: list[str]) -> dict[str, Any]:
    """What continuing ``run`` (``resume --steps/--set``, the TUI's extend) writes first:
    ``steps`` (a new total, more than the updates it has) and the run.*/diagnostics.*
    settings of ``sets`` into its config (what the resumed engine reads); returns the
    live changes of ``sets`` (A, T, lr, pace), to be applied from the resumed update on."""
    overrides, live = split_sets(sets, "a resume")
    overrides = [o for o in overrides if o.partition("=")[0].strip() not in LIVE_KEYS]
    if steps is not None:
        done = run.rows()
        if steps <= done:
            raise ConfigError(f"--steps {steps}: {run.id} already has {done} updates")
        overrides.append(f"run.steps={steps}")
    if overrides:
        cfg = config.apply_overrides(run.config(), overrides)
        try:
            (run.path / runs.CONFIG).write_text(config.to_toml(cfg), encoding="utf-8")
        except OSError as err:
            raise RunError(f"cannot write {run.path / runs.CONFIG}: {err.strerror}") from None
    return live
