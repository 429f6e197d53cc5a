"""Sweeps: the cross product of config axes × seeds, trained as one sweep directory.

No torch here (the CLI and the UI import it).  Layout::

    runs/<time>-sweep-<preset>/
      sweep.json        the plan: preset, base config, axes, seeds, members (written once)
      state.json        the sweep engine's state (running/finished/stopped/crashed, pid, mode)
      engine.log
      <member id>/      one ordinary run directory per member (config.toml, metrics.bin, ...)

A member is a normal run: ``dlf-tui attach``, ``export`` and ``compare`` take its
directory.  Axes come from the preset's ``[sweep] grid`` and from ``--set`` flags
(``section.key=v1,v2,...``, parsed and checked by ``config.parse_axis``; a flag replaces
the preset's axis of the same key); every cell is trained with ``seeds`` seeds: run.seed,
run.seed + 1, ...  The sweep engine is started by ``store/launch.py``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dlf_tui.core import config, series, states
from dlf_tui.core.config import Axis, parse_axis
from dlf_tui.core.errors import ConfigError, RunError, printable
from dlf_tui.store import files
from dlf_tui.store import run as runs

SWEEP = "sweep.json"
PENDING = "pending"  # a member's state before its engine first wrote state.json
MAX_MEMBERS = 4096
VERSION = 1


@dataclass(frozen=True)
class Plan:
    base: config.Config
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...]
    threshold: float
    members: tuple[tuple[str, tuple, int, config.Config], ...]  # (id, cell values, seed, config)


def slug(value: Any) -> str:
    """A short label for an axis value (file names, tables, heatmap ticks)."""
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in str(value))[:16]


def plan(base: config.Config, sets: list[str] | tuple[str, ...] = (), seeds: int | None = None,
         threshold: float | None = None) -> Plan:
    """Members of a sweep of ``base``: preset grid axes, replaced/extended by ``sets``."""
    axes: dict[str, Axis] = {}
    for item in base.sweep.grid:
        a = parse_axis(item, f"{base.name}: [sweep] grid")
        axes[a.key] = a
    for item in sets:
        a = parse_axis(item)
        axes.pop(a.key, None)
        axes[a.key] = a
    n = base.sweep.seeds if seeds is None else seeds
    if not 1 <= n <= 4096:
        raise ConfigError(f"--seeds {n}: must be between 1 and 4096")
    thr = base.sweep.threshold if threshold is None else threshold
    if not 0 < thr <= 1:
        raise ConfigError(f"--threshold {thr}: must be > 0 and <= 1")
    seed_list = tuple(base.run.seed + i for i in range(n))
    cells = list(itertools.product(*(a.values for a in axes.values())))
    if len(cells) * n > MAX_MEMBERS:
        raise ConfigError(f"{len(cells)} cells × {n} seeds = {len(cells) * n} members: "
                                 f"at most {MAX_MEMBERS}")
    members = []
    plain = replace(base, sweep=config.SweepConfig())
    for cell in cells:
        cfg = plain
        for a, v in zip(axes.values(), cell):
            section, _, name = a.key.partition(".")
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: v})})
        try:
            config.check_whole(cfg)
        except ConfigError as err:
            raise ConfigError(f"cell {cell_label(tuple(axes.values()), cell)}: {err}") from None
        tag = "-".join(f"{a.short}{slug(v)}" for a, v in zip(axes.values(), cell))
        for s in seed_list:
            mid = f"m{len(members):04d}" + (f"-{tag}" if tag else "") + f"-s{s}"
            members.append((mid[:100], tuple(cell), s,
                            replace(cfg, run=replace(cfg.run, seed=s))))
    return Plan(plain, tuple(axes.values()), seed_list, thr, tuple(members))


def cell_label(axes: tuple[Axis, ...], cell: tuple) -> str:
    return " ".join(f"{a.short}={slug(v)}" for a, v in zip(axes, cell)) or "(one cell)"



def create(p: Plan, runs_dir: Path) -> "Sweep":
    """Write the sweep directory: sweep.json and one run directory per member."""
    path = runs.new_run_dir(Path(runs_dir), f"sweep-{p.base.name}")
    try:
        for mid, _, _, cfg in p.members:
            (path / mid).mkdir(mode=0o700)
            (path / mid / runs.CONFIG).write_text(config.to_toml(cfg), encoding="utf-8")
        doc = {
            "version": VERSION, "preset": p.base.name, "created": time.time(),
            "base": config.to_dict(p.base), "threshold": p.threshold, "seeds": list(p.seeds),
            "axes": [{"key": a.key, "values": [list(v) if isinstance(v, tuple) else v
                                               for v in a.values]} for a in p.axes],
            "members": [{"id": mid, "cell": [list(v) if isinstance(v, tuple) else v for v in cell],
                         "seed": s, "steps": cfg.run.steps} for mid, cell, s, cfg in p.members],
        }
        runs.write_json_atomic(path / SWEEP, doc)
    except OSError as err:
        raise RunError(f"cannot write sweep {path}: {err.strerror}") from None
    return Sweep(path)


@dataclass(frozen=True)
class Member:
    id: str
    cell: tuple
    seed: int
    run: runs.Run
    steps: int | None = None  # planned updates (None: read from its config.toml)

    def planned(self) -> int:
        if self.steps is not None:
            return self.steps
        try:
            return int(self.run.config_doc().get("run", {}).get("steps", 0))
        except (RunError, TypeError, ValueError, AttributeError, OverflowError):
            return 0


MAX_SWEEP_FILE = 64 << 20  # sweep.json (4096 members with their cells: far less)


def _freeze(v: Any) -> Any:
    """An axis value of sweep.json as the hashable value a cell holds."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if v is None or isinstance(v, (str, int, float)):
        return v
    raise TypeError("an axis value is not a number, string or list")


def _member_id(v: Any) -> str:
    """A member's directory name: one plain path component, nothing that leaves the sweep."""
    if not isinstance(v, str) or not v or v in (".", "..") or "/" in v or "\\" in v \
            or "\0" in v or len(v) > 255:
        raise ValueError("a member id is not a directory name")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("not an integer")
    return v


def _key(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("an axis key is not a string")
    return v


def _values(v: Any) -> tuple:
    if not isinstance(v, list):
        raise TypeError("axis values / a cell are not a list")
    return tuple(_freeze(x) for x in v)


@dataclass
class Sweep:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        try:
            doc = files.read_json(self.path / SWEEP, MAX_SWEEP_FILE)
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            self.doc = doc
            if not isinstance(doc["axes"], list) or not isinstance(doc["members"], list) \
                    or not isinstance(doc["seeds"], list):
                raise TypeError("axes, members and seeds must be lists")
            if len(doc["members"]) > MAX_MEMBERS:
                raise ValueError(f"more than {MAX_MEMBERS} members")
            self.axes = tuple(Axis(_key(a["key"]), _values(a["values"])) for a in doc["axes"])
            self.seeds = tuple(_int(s) for s in doc["seeds"])
            if isinstance(doc["threshold"], bool):
                raise TypeError("threshold is not a number")
            self.threshold = float(doc["threshold"])
            if not math.isfinite(self.threshold):
                raise ValueError("threshold is not finite")
            members = []
            for m in doc["members"]:
                steps = m.get("steps")
                members.append(Member(_member_id(m["id"]), _values(m["cell"]), _int(m["seed"]),
                                      runs.Run(self.path / m["id"]),
                                      None if steps is None else _int(steps)))
            self.members = tuple(members)
        except RunError as err:
            raise RunError(f"{self.path}: not a readable sweep ({printable(str(err))[-160:]})") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
            why = files.reason(err) if not isinstance(err, KeyError) else f"no {printable(repr(err.args[0]))[:40]}"
            raise RunError(f"{self.path}: not a readable sweep ({type(err).__name__}: {why})") from None

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def preset(self) -> str:
        return str(self.doc.get("preset", "?"))

    def file(self, name: str) -> Path:
        return self.path / name

    def state(self) -> dict[str, Any]:
        """The sweep engine's state.json, ``crashed`` if its process is gone."""
        return runs.Run(self.path).state()

    def is_live(self) -> bool:
        return self.state().get("state") in states.LIVE

    def engine_pid(self) -> int | None:
        """The sweep engine's pid while it is live, else None (a live state whose
        process is gone reads "crashed")."""
        st = self.state()
        return st.get("pid") if st.get("state") in states.LIVE else None

    def stop(self, proc: Any = None) -> int | None:
        """SIGTERM to the sweep engine (every member checkpoints after the current
        round).  ``proc``: the engine just started, before it wrote its pid.
        Returns the pid signalled, or None when no live engine was found."""
        import os
        import signal

        pid = self.engine_pid()
        if pid is None and proc is not None and proc.poll() is None:
            pid = proc.pid
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return None
        except PermissionError:
            raise RunError(f"{self.id}: not allowed to signal its engine (pid {pid})") from None
        return pid

    def cells(self) -> list[tuple]:
        seen: dict[tuple, None] = {}
        for m in self.members:
            seen.setdefault(m.cell, None)
        return list(seen)

    def members_of(self, cell: tuple) -> list[Member]:
        return [m for m in self.members if m.cell == cell]

    def label(self, cell: tuple) -> str:
        return cell_label(self.axes, cell)

    def progress(self) -> tuple[int, int]:
        """(updates done, updates planned) over all members."""
        done = total = 0
        for m in self.members:
            done += m.run.rows()
            total += m.planned()
        return done, total

    def summary(self) -> list[dict[str, Any]]:
        """One row per cell: final (latest, while live) training and validation accuracy
        over its seeds, mean ± std (population, numpy's default), and the fraction of
        seeds at or above the threshold."""
        out = []
        for cell in self.cells():
            ms = self.members_of(cell)
            train, val, ended, steps = [], [], [], []
            for m in ms:
                last = m.run.last_row()
                if last:
                    train.append(last.get(series.ACCURACY, math.nan))
                    steps.append(int(last.get(series.STEP, 0)))
                ev = m.run.last_row(series.EVAL)
                if ev:
                    val.append(ev.get(series.VAL_ACCURACY, math.nan))
                ended.append(m.run.raw_state().get("state", PENDING))
            out.append({
                "cell": cell, "label": self.label(cell), "seeds": len(ms),
                "values": {a.key: v for a, v in zip(self.axes, cell)},
                "finished": sum(s == states.FINISHED for s in ended),
                "step": min(steps) if len(steps) == len(ms) else 0,
                "train": stats(train, self.threshold),
                "val": stats(val, self.threshold) if val else None,
            })
        return out


def stats(values: list[float], threshold: float) -> dict[str, Any]:
    """mean, std (population), n and the fraction ≥ threshold of the finite values."""
    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    if not v:
        return {"mean": math.nan, "std": math.nan, "n": 0, "frac": math.nan}
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / len(v))
    return {"mean": mean, "std": std, "n": len(v), "frac": sum(x >= threshold for x in v) / len(v)}


def above(s: dict[str, Any]) -> str:
    """The fraction of seeds ≥ threshold of a ``stats()`` dict, as 'k/n'."""
    return f"{round(s['frac'] * s['n'])}/{s['n']}"


def is_sweep(path: Path) -> bool:
    return (Path(path) / SWEEP).is_file()


def list_sweeps(runs_dir: Path) -> list[Sweep]:
    """Sweeps under ``runs_dir``, oldest first (unreadable ones skipped)."""
    if not Path(runs_dir).is_dir():
        return []
    out = []
    for p in sorted(Path(runs_dir).iterdir()):
        if p.is_dir() and is_sweep(p):
            try:
                out.append(Sweep(p))
            except RunError:
                continue
    return out


def resolve(spec: str | None, runs_dir: Path) -> Sweep:
    """A sweep from a path, an id (or unique prefix) under ``runs_dir``, or None/latest."""
    if spec in (None, "", "latest"):
        found = list_sweeps(runs_dir)
        if not found:
            raise RunError(f"no sweeps under {runs_dir}")
        return found[-1]
    for cand in (Path(spec), Path(runs_dir) / spec):
        if is_sweep(cand):
            return Sweep(cand)
    return runs.by_id_prefix(list_sweeps(runs_dir), spec, "sweep", runs_dir)


def write_state(sweep: "Sweep", state: str, **extra: Any) -> None:
    """The sweep engine's ``state.json`` in the sweep directory."""
    doc = {"state": state, "pid": os.getpid(), "members": len(sweep.members), **extra}
    if state in states.ENDED:
        doc["ended"] = time.time()
    runs.write_json_atomic(sweep.file(runs.STATE), doc)
