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

How the members are trained is the sweep's ``executor.json`` (absent: ``engine``, one
process trains them all, ``engine/loops/sweep.py``).  ``devices``: one member at a time
on each listed device, each member an ordinary engine process with its socket;
``slurm``: the members are a Slurm job array (submitit), writing into this directory
on the shared file system; ``submitit-local``: the same through submitit's local
executor (real processes on this machine, no Slurm).  For those the sweep's engine
process starts and watches the members' engines or jobs (``engine/loops/executors.py``)
and keeps ``jobs.json``: which job trains which member.
"""

from __future__ import annotations

import itertools
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
EXECUTOR = "executor.json"  # how the members are trained (absent: the one-process engine)
JOBS = "jobs.json"  # a cluster executor's jobs: member id -> job id
SUBMITIT = "submitit"  # submitit's folder inside the sweep directory (job pickles and logs)
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



# ---------------------------------------------------------------------------
# Executors: how the members are trained
# ---------------------------------------------------------------------------

EXECUTORS = ("engine", "devices", "slurm", "submitit-local")
CLUSTER = ("slurm", "submitit-local")  # through submitit


@dataclass(frozen=True)
class Executor:
    kind: str = "engine"
    devices: tuple[str, ...] = ()  # devices: one member at a time on each; ("all",): every visible GPU
    partition: str = ""  # slurm: the partition ('' : the cluster's default)
    gpus_per_member: int = 0
    cpus_per_member: int = 1
    time: str = ""  # a job's time limit, HH:MM ('' : 60 minutes)
    max_parallel: int = 0  # members at once (0: no limit of ours; slurm: submitit's array default)

    @property
    def timeout_min(self) -> int:
        if not self.time:
            return 60
        h, _, m = self.time.partition(":")
        return int(h) * 60 + int(m)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "devices": list(self.devices), "partition": self.partition,
                "gpus_per_member": self.gpus_per_member, "cpus_per_member": self.cpus_per_member,
                "time": self.time, "max_parallel": self.max_parallel}

    def describe(self) -> str:
        if self.kind == "devices":
            return f"one member at a time on each of {', '.join(self.devices)}"
        if self.kind in CLUSTER:
            where = "Slurm job array" if self.kind == "slurm" else "submitit local jobs"
            bits = [f"partition {self.partition}"] if self.partition else []
            bits += [f"{self.gpus_per_member} GPU per member"] if self.gpus_per_member else []
            bits += [f"time {self.time or '01:00'}"]
            bits += [f"at most {self.max_parallel} at once"] if self.max_parallel else []
            return f"{where}: " + ", ".join(bits)
        return "one engine process for every member"


def _time_ok(text: str) -> bool:
    h, sep, m = text.partition(":")
    return bool(sep) and h.isdigit() and m.isdigit() and len(m) == 2 and int(m) < 60 \
        and 0 < int(h) * 60 + int(m) <= 366 * 24 * 60


def executor_spec(kind: str | None = None, devices: str | None = None, partition: str | None = None,
                  gpus_per_member: int | None = None, time_limit: str | None = None,
                  max_parallel: int | None = None, cpus_per_member: int | None = None) -> Executor:
    """The executor the command line asks for (``ConfigError`` in one line when the
    options do not go together).  ``devices`` alone means ``kind = devices``."""
    kind = kind or ("devices" if devices else "engine")
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor {kind}: one of {', '.join(EXECUTORS)}")
    cluster_opts = {"--partition": partition, "--gpus-per-member": gpus_per_member,
                    "--time": time_limit, "--cpus-per-member": cpus_per_member}
    if kind != "devices" and devices:
        raise ConfigError(f"--devices: only without --executor (or with --executor devices), "
                          f"not --executor {kind}" + ("; use --gpus-per-member" if kind in CLUSTER else ""))
    if kind not in CLUSTER:
        given = [k for k, v in cluster_opts.items() if v is not None]
        if given:
            raise ConfigError(f"{given[0]}: only with --executor slurm or submitit-local")
    if max_parallel is not None and kind == "engine":
        raise ConfigError("--max-parallel: only with --devices or --executor slurm/submitit-local")
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--max-parallel {max_parallel}: must be at least 1")
    if kind == "devices":
        names = tuple(d.strip() for d in (devices or "all").split(","))
        if names != ("all",):
            for d in names:
                if not _device_ok(d):
                    raise ConfigError(f"--devices {devices}: {d or '(empty)'!r} is not cpu, cuda "
                                      "or cuda:N (or use --devices all)")
        if max_parallel is not None:
            raise ConfigError("--max-parallel: with --devices the members at once are the devices "
                              "listed (cpu,cpu,cpu: three)")
        return Executor("devices", names)
    if kind == "engine":
        return Executor()
    if gpus_per_member is not None and not 0 <= gpus_per_member <= 64:
        raise ConfigError(f"--gpus-per-member {gpus_per_member}: between 0 and 64")
    if cpus_per_member is not None and not 1 <= cpus_per_member <= 1024:
        raise ConfigError(f"--cpus-per-member {cpus_per_member}: between 1 and 1024")
    if time_limit is not None and not _time_ok(time_limit):
        raise ConfigError(f"--time {time_limit}: expected HH:MM (e.g. 04:00)")
    if partition is not None and (not partition or any(c.isspace() for c in partition)):
        raise ConfigError(f"--partition {partition!r}: a Slurm partition name")
    return Executor(kind, (), partition or "", gpus_per_member or 0, cpus_per_member or 1,
                    time_limit or "", max_parallel or 0)


def _device_ok(name: str) -> bool:
    if name in ("cpu", "cuda"):
        return True
    head, _, idx = name.partition(":")
    return head == "cuda" and idx.isdigit() and len(idx) <= 3


def _executor_from(doc: Any) -> Executor:
    if not isinstance(doc, dict) or doc.get("kind") not in EXECUTORS:
        raise ValueError("not an executor")
    devices = doc.get("devices") or []
    if not isinstance(devices, list) or not all(isinstance(d, str) and _device_ok(d) or d == "all"
                                                for d in devices):
        raise ValueError("devices is not a list of devices")
    ints = {k: doc.get(k, dflt) for k, dflt in (("gpus_per_member", 0), ("cpus_per_member", 1),
                                                 ("max_parallel", 0))}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints.values()):
        raise ValueError("gpus_per_member, cpus_per_member, max_parallel are not counts")
    part, tl = doc.get("partition", ""), doc.get("time", "")
    if not isinstance(part, str) or not isinstance(tl, str) or (tl and not _time_ok(tl)):
        raise ValueError("partition or time is not text")
    if doc["kind"] == "devices" and not devices:
        raise ValueError("no devices")
    return Executor(doc["kind"], tuple(devices), part, ints["gpus_per_member"],
                    max(1, ints["cpus_per_member"]), tl, ints["max_parallel"])


def write_executor(path: Path, ex: Executor) -> None:
    try:
        runs.write_json_atomic(Path(path) / EXECUTOR, ex.to_dict())
    except OSError as err:
        raise RunError(f"cannot write {Path(path) / EXECUTOR}: {err.strerror}") from None


def create(p: Plan, runs_dir: Path, executor: Executor | None = None) -> "Sweep":
    """Write the sweep directory: sweep.json and one run directory per member
    (and ``executor.json`` for an executor other than the one-process engine)."""
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
        if executor is not None and executor.kind != "engine":
            runs.write_json_atomic(path / EXECUTOR, executor.to_dict())
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

    def executor(self) -> Executor:
        """How the members are trained (``executor.json``; absent: the one-process engine)."""
        path = self.path / EXECUTOR
        if not path.exists():
            return Executor()
        try:
            return _executor_from(files.read_json(path))
        except RunError as err:
            raise RunError(f"{self.id}: unreadable {EXECUTOR} ({printable(str(err))[-120:]})") from None
        except (ValueError, TypeError, KeyError) as err:
            raise RunError(f"{self.id}: unreadable {EXECUTOR} ({err})") from None

    def todo(self, resume: bool) -> list[tuple[Member, bool]]:
        """Members still to train and whether each resumes from a checkpoint: all of
        them, or (``resume``) the unfinished ones; a member never checkpointed starts
        afresh (its partial series are removed)."""
        out = []
        for m in self.members:
            if resume and m.run.raw_state().get("state") == states.FINISHED:
                continue
            has = any((m.run.path / runs.CHECKPOINTS).glob("step-*.pt"))
            if resume and not has:
                for name in series.SERIES:  # never checkpointed: start afresh
                    for suffix in (".bin", ".json"):
                        (m.run.path / f"{name}{suffix}").unlink(missing_ok=True)
            out.append((m, resume and has))
        return out

    def jobs(self) -> dict[str, str]:
        """A cluster executor's jobs (``jobs.json``): member id -> job id."""
        try:
            doc = files.read_json(self.path / JOBS)
        except (OSError, RunError):
            return {}
        jobs = doc.get("jobs") if isinstance(doc, dict) else None
        if not isinstance(jobs, dict):
            return {}
        return {k: v for k, v in jobs.items() if isinstance(k, str) and isinstance(v, str)}

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
