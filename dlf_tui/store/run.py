"""The run directory: its layout, and reading/writing what it holds.  No torch.

``runs/<YYYYmmdd-HHMMSS>-<preset>/`` (mode 0700) holds:

- ``config.toml``   the fully resolved config
- ``state.json``    {state, pid, step, total, started, ended, reason, rate}
- ``metrics.bin``   one row per update, float64, columns in ``metrics.json``
- ``eval.bin``      one row per held-out evaluation, columns in ``eval.json``
- ``diag.bin``      one row per landscape diagnostic (Hessian/NTK λ_max), ``diag.json``
- ``events.jsonl``  every parameter change, pause, checkpoint, error, with its step
- ``checkpoints/``, ``engine.log``, ``control.sock`` (0600, while the engine runs)
- ``.reserve``      while the engine runs: space it frees to record a full disk
- with ``--nproc N``: ``engine-rank<R>.log`` and ``rank-<R>.json`` of each rank
  (``engine/distributed.py``)

Series files are append-only fixed-size records: a reader ignores a torn last
record (a write cut by ``kill -9``), so every flushed row stays readable; a write
that fails (a full disk, a file size limit) is cut back to the last whole record
(``AppendFile``), so the next one starts aligned.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlf_tui.core import config, series, states
from dlf_tui.core.errors import RunError, printable
from dlf_tui.store import files, liveness

CONFIG = "config.toml"
STATE = "state.json"
EVENTS = "events.jsonl"
SOCKET = "control.sock"
LOG = "engine.log"
RANK_LOG = "engine-rank{rank}.log"  # ranks 1 … N−1 of a run across N processes
RENDEZVOUS = "rendezvous.store"  # where the N processes meet (a torch FileStore)
CHECKPOINTS = "checkpoints"
RESERVE = ".reserve"  # space the engine keeps, to write its state when the disk fills
OWN_LOOP = "external"  # data.name of a run that records a user's own loop (dlf_tui.live)
UNKNOWN = "unknown"  # the state of a directory whose state.json says nothing

# state.json's fields and the types a reader relies on
STATE_TYPES: dict[str, tuple[type, ...]] = {
    "state": (str,), "reason": (str,), "pid": (int,), "pid_start": (int,), "step": (int,),
    "total": (int,), "started": (int, float), "ended": (int, float), "rate": (int, float),
}


RUNS_DIR_ENV = "DLF_TUI_RUNS_DIR"


def user_runs_dir() -> Path:
    """The per-user runs directory: ``~/.local/share/dlf-tui/runs`` on Linux
    (``$XDG_DATA_HOME/dlf-tui/runs`` when set), the platform's data directory elsewhere."""
    import platformdirs  # (textual's dependency too) only when it is needed

    return platformdirs.user_data_path("dlf-tui", appauthor=False) / "runs"


def default_runs_dir() -> Path:
    """Where runs live unless told otherwise: ``$DLF_TUI_RUNS_DIR``, else
    ``user_runs_dir()``: the same from whichever directory dlf-tui starts in."""
    env = os.environ.get(RUNS_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else user_runs_dir()


# ---------------------------------------------------------------------------
# Creating
# ---------------------------------------------------------------------------


def safe_name(name: str) -> str:
    """``name`` as it appears in a run directory's name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)[:40] or "run"


def new_run_dir(runs_dir: Path, preset: str) -> Path:
    """Create a fresh run directory (0700) with a unique, sortable id."""
    safe = safe_name(preset)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create runs directory {runs_dir}: {err.strerror}") from None
    if not os.access(runs_dir, os.W_OK | os.X_OK):
        raise RunError(f"runs directory {runs_dir} is not writable")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        name = f"{stamp}-{safe}" if n == 0 else f"{stamp}-{safe}-{n}"
        path = runs_dir / name
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as err:
            raise RunError(f"cannot create run directory {path}: {err.strerror}") from None
        os.chmod(path, 0o700)
        return path
    raise RunError(f"too many runs named {stamp}-{safe} in {runs_dir}")  # pragma: no cover


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` whole or not at all: a temporary file, synced, renamed into place.
    A failed write (disk full, read-only, permission) removes the temporary file and
    raises the ``OSError``; the old file stays as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a write may be cut short: a full
    disk, a file size limit); raises the ``OSError`` that stopped it."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - a regular file never returns 0 for a non-empty write
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]


def check_linked(fd: int, name: str) -> None:
    """Raise ``FileNotFoundError`` when the open file ``fd`` was removed (its
    writes would go nowhere: someone deleted it, or its run directory)."""
    if os.fstat(fd).st_nlink == 0:
        raise FileNotFoundError(errno.ENOENT, f"{name} was removed while the engine wrote it")


class AppendFile:
    """An append-only file written whole records at a time: a write that fails
    (``OSError``) is cut back to the end of the last whole record, so the file
    never keeps half of one and the next write starts aligned.  ``size`` is the
    length of what was written whole."""

    def __init__(self, path: Path, record: int = 1):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        size = os.fstat(self.fd).st_size
        self.size = size - size % record
        self.dirty = size != self.size  # a torn record left by a crash: cut it first

    def write(self, data: bytes) -> None:
        if self.dirty:
            os.ftruncate(self.fd, self.size)
            self.dirty = False
        try:
            write_all(self.fd, data)
            check_linked(self.fd, self.path.name)
        except OSError:
            self.dirty = True
            try:
                os.ftruncate(self.fd, self.size)  # a full disk can always shrink a file
                self.dirty = False
            except OSError:
                pass  # cut on the next write
            raise
        self.size += len(data)

    def truncate(self, size: int) -> None:
        """Keep only the first ``size`` bytes (never extends the file)."""
        size = min(size, self.size)
        os.ftruncate(self.fd, size)
        self.size, self.dirty = size, False

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            finally:
                self.fd = -1


class SeriesWriter:
    """Appends float64 rows to ``<name>.bin``; the column list goes to ``<name>.json``.
    Rows are written whole or not at all (``AppendFile``): after a failed append
    the file holds exactly the rows it held before."""

    def __init__(self, run_dir: Path, name: str, columns: list[str]):
        self.path = run_dir / f"{name}.bin"
        self.name = name
        self.columns = list(columns)
        self.width = len(columns) * 8
        meta = run_dir / f"{name}.json"
        if meta.exists():
            old = json.loads(meta.read_text())["columns"]
            if old != self.columns:
                raise RunError(f"{meta}: columns changed ({old} → {self.columns})")
        else:
            write_json_atomic(meta, {"columns": self.columns, "dtype": "<f8"})
        self.file = AppendFile(self.path, self.width)
        if self.file.dirty:  # drop a torn record left by a crash, so appends stay aligned
            self.file.truncate(self.file.size)

    @property
    def rows(self) -> int:
        return self.file.size // self.width

    def append(self, array: Any) -> int:
        """Append a (rows × columns) float64 array; returns the row index of its first
        row.  Raises the ``OSError`` of a failed write, having written none of them."""
        start = self.rows
        self.file.write(array.astype("<f8", copy=False).tobytes())
        return start

    def truncate(self, rows: int) -> None:
        """Keep only the first ``rows`` rows (resume from a checkpoint, a rollback)."""
        self.file.truncate(rows * self.width)

    def sync(self) -> None:
        self.file.sync()

    def close(self) -> None:
        self.file.close()


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    # a series' columns never change once written (SeriesWriter refuses it): read them once
    _columns: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # -- config and state ------------------------------------------------------
    def config_doc(self) -> dict[str, Any]:
        import tomllib

        try:
            return tomllib.loads(files.read_text(self.file(CONFIG), files.MAX_CONFIG))
        except OSError as err:
            raise RunError(f"{self.path}: unreadable config.toml: "
                           f"{printable(err.strerror or type(err).__name__)}") from None
        except (ValueError, RecursionError) as err:  # TOMLDecodeError, huge ints, deep nesting
            if isinstance(err, RunError):
                raise
            raise RunError(f"{self.path}: unreadable config.toml: {files.reason(err)}") from None

    def config(self) -> config.Config:
        path = self.file(CONFIG)
        try:
            text = files.read_text(path, files.MAX_CONFIG)
        except FileNotFoundError:
            raise config.ConfigError(f"{path}: no such file") from None
        except OSError as err:
            raise config.ConfigError(f"{path}: cannot read: "
                                     f"{printable(err.strerror or type(err).__name__)}") from None
        except RunError as err:
            raise config.ConfigError(str(err)) from None
        return config.loads(text, str(path))

    def own_loop_reason(self) -> str:
        """Why the engine cannot continue this run ('' when it can): it records a
        user's own training loop (``dlf_tui.live``), whose data and model live there."""
        try:
            data = self.config_doc().get("data")
        except RunError:
            return ""
        name = data.get("name") if isinstance(data, dict) else None
        if name != OWN_LOOP:
            return ""
        return (f"{self.id} records your own training loop (dlf_tui.live): continue it from "
                "your script with Run(..., resume='latest')")

    def _read_state(self) -> tuple[dict[str, Any], str]:
        """(state.json, '') or ({}, why not): a file that is missing, not JSON, not
        an object, or whose known fields have the wrong types reads as nothing."""
        try:
            doc = files.read_json(self.file(STATE))
        except FileNotFoundError:
            return {}, "no state.json (the engine never started)"
        except (OSError, RunError):
            return {}, "unreadable state.json"
        if not isinstance(doc, dict):
            return {}, "unreadable state.json (not an object)"
        for key, types in STATE_TYPES.items():
            v = doc.get(key)
            if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
                return {}, f"unreadable state.json ({key} is not {types[0].__name__})"
        if not isinstance(doc.get("state"), str):
            return {}, "unreadable state.json (no state)"
        return doc, ""

    def raw_state(self) -> dict[str, Any]:
        return self._read_state()[0]

    def state(self) -> dict[str, Any]:
        """``state.json`` with ``state`` corrected to ``crashed`` when the engine
        that claimed to be live is gone."""
        st, why = self._read_state()
        if not st:
            st = {"state": states.CRASHED if self.file(CONFIG).exists() else UNKNOWN}
            st["reason"] = why
        host = st.get("host")
        elsewhere = isinstance(host, str) and host and host != socket.gethostname()
        if (st.get("state") in states.LIVE and not elsewhere  # a cluster job's pid is not ours to judge
                and not liveness.engine_alive(st.get("pid"), st.get("pid_start"), st.get("started"))):
            st = dict(st, state=states.CRASHED, reason=gone_reason(st), gone=True)
        return st

    def is_live(self) -> bool:
        return self.state().get("state") in states.LIVE

    # -- series ----------------------------------------------------------------
    def columns(self, name: str = series.METRICS) -> list[str]:
        cols = self._columns.get(name)
        if cols is None:
            path = self.file(f"{name}.json")
            try:
                doc = files.read_json(path)
            except OSError:
                return []  # not written yet: ask again next time
            cols = doc.get("columns") if isinstance(doc, dict) else None
            if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
                raise RunError(f"{path}: unreadable {path.name}: no list of column names")
            if len(cols) > files.MAX_COLUMNS:
                raise RunError(f"{path}: unreadable {path.name}: {len(cols):,} columns "
                               f"(at most {files.MAX_COLUMNS})")
            if cols and (cols[0] != series.STEP or len(set(cols)) != len(cols)):
                raise RunError(f"{path}: unreadable {path.name}: columns must start with "
                               f"{series.STEP!r} and be distinct")
            self._columns[name] = cols
        return list(cols)

    def rows(self, name: str = series.METRICS) -> int:
        cols = self.columns(name)
        try:
            size = self.file(f"{name}.bin").stat().st_size
        except OSError:
            return 0
        return size // (8 * len(cols)) if cols else 0

    def read(self, name: str = series.METRICS, start: int = 0, stop: int | None = None):
        """Rows ``start..stop-1`` as a numpy (rows × columns) array (torn tail ignored)."""
        import numpy as np

        cols = self.columns(name)
        if not cols:
            return np.empty((0, 0))
        total = self.rows(name)
        stop = total if stop is None else min(stop, total)
        start = max(0, min(start, stop))
        with open(self.file(f"{name}.bin"), "rb") as fh:
            fh.seek(start * 8 * len(cols))
            data = np.fromfile(fh, dtype="<f8", count=(stop - start) * len(cols))
        return data.reshape(-1, len(cols))

    def last_row(self, name: str = series.METRICS) -> dict[str, float]:
        n = self.rows(name)
        if n == 0:
            return {}
        row = self.read(name, n - 1, n)[0]
        return dict(zip(self.columns(name), (float(v) for v in row)))

    def events(self) -> list[dict[str, Any]]:
        """Every event that parses; a torn, undecodable or hostile line is skipped, and
        a line longer than ``files.MAX_EVENT_LINE`` is skipped unread (one ``note`` says so)."""
        out: list[dict[str, Any]] = []
        skipped = 0
        try:
            with open(self.file(EVENTS), "rb") as fh:
                while True:
                    line = fh.readline(files.MAX_EVENT_LINE + 1)
                    if not line:
                        break
                    if len(line) > files.MAX_EVENT_LINE and not line.endswith(b"\n"):
                        skipped += 1
                        while line and not line.endswith(b"\n"):  # the rest of it, in bounded reads
                            line = fh.readline(files.MAX_EVENT_LINE + 1)
                        continue
                    try:
                        ev = json.loads(line.decode("utf-8"))
                    except (ValueError, RecursionError):
                        continue  # a torn last line after a crash, or not an event
                    if isinstance(ev, dict):
                        out.append(ev)
        except OSError:
            pass
        if skipped:
            out.append({"kind": "note", "step": 0, "message": f"{EVENTS}: skipped {skipped} "
                        f"line{'s' * (skipped != 1)} longer than {files.MAX_EVENT_LINE:,} bytes"})
        return out

    def summary(self) -> dict[str, Any]:
        st = self.state()
        try:
            last = self.last_row()
        except RunError:
            last = {}
        try:
            doc = self.config_doc()
        except RunError:
            doc = {}
        run_doc = doc.get("run")
        steps = run_doc.get("steps") if isinstance(run_doc, dict) else None
        total = st.get("total") or (steps if isinstance(steps, int) else 0)
        step = last.get(series.STEP, 0)
        preset = doc.get("name", "?")
        fork = doc.get("fork") if isinstance(doc.get("fork"), dict) else {}
        parent, at = fork.get("parent"), fork.get("at")
        return {
            "id": self.id,
            "preset": printable(preset)[:40] if isinstance(preset, str) else "?",
            "state": st.get("state", UNKNOWN),
            "step": int(step) if math.isfinite(step) else 0,
            "total": int(total or 0),
            "accuracy": last.get(series.ACCURACY),
            "reason": st.get("reason", ""),
            "gone": bool(st.get("gone")),  # recorded as live, but its engine is gone
            "started": st.get("started"),
            # "<parent id>@<update>" for a fork (dlf-tui fork), else ""
            "fork_of": (f"{printable(Path(parent).name)[:60]}@{at}"
                        if isinstance(parent, str) and parent and isinstance(at, int) else ""),
        }


def gone_reason(st: dict[str, Any]) -> str:
    """Why a run whose ``state.json`` says live reads as crashed: its engine is gone."""
    pid = st.get("pid")
    who = f"pid {pid}" if isinstance(pid, int) and not isinstance(pid, bool) else "its process"
    was = st.get("state", "")
    before = st.get("reason", "")
    return (f"engine gone ({who} no longer runs: killed, out of memory or the machine "
            f"restarted) while {was}{': ' + before if before else ''}")


def list_runs(runs_dir: Path) -> list[Run]:
    """Runs under ``runs_dir``, oldest first."""
    if not runs_dir.is_dir():
        return []
    return sorted(
        (Run(p) for p in runs_dir.iterdir() if p.is_dir() and (p / CONFIG).exists()),
        key=lambda r: r.id,
    )


def resolve(spec: str | None, runs_dir: Path) -> Run:
    """A run from a directory path, an id (or unique id prefix) under ``runs_dir``,
    or ``None``/``latest`` for the most recent."""
    if spec in (None, "", "latest"):
        runs = list_runs(runs_dir)
        if not runs:
            raise RunError(f"no runs under {runs_dir}")
        return runs[-1]
    path = Path(spec)
    if (path / CONFIG).exists():
        return Run(path)
    cand = runs_dir / spec
    if (cand / CONFIG).exists():
        return Run(cand)
    return by_id_prefix(list_runs(runs_dir), spec, "run", runs_dir)


def by_id_prefix(found: list, spec: str, what: str, runs_dir: Path):
    """The one of ``found`` (runs or sweeps) whose id starts with ``spec``."""
    matches = [r for r in found if r.id.startswith(spec)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RunError(f"{what} {spec!r} is ambiguous: {', '.join(r.id for r in matches[:5])}")
    raise RunError(f"no {what} {spec!r} (not a {what} directory, nor an id under {runs_dir})")


def create_run(cfg: config.Config, runs_dir: Path) -> Run:
    """Make a run directory holding the fully resolved ``config.toml`` (its engine
    is started by ``launch.spawn_run_engine``)."""
    path = new_run_dir(Path(runs_dir), cfg.name)
    try:
        (path / CONFIG).write_text(config.to_toml(cfg), encoding="utf-8")
    except OSError as err:
        raise RunError(f"cannot write {path / CONFIG}: {err.strerror}") from None
    return Run(path)
