"""A run directory being written: series rows, events, ``state.json`` and checkpoints.

The Recorder knows nothing of models or steppers: a driver hands it metric rows,
events and the *Stateful* parts a checkpoint gathers (anything with
``state_dict()`` / ``load_state_dict()``: a torch module, a stepper, the
schedule, the RNG), so the engine's loops and a user's own training loop write
the same run directory.  Rows and chunks go out to attached clients through the
control server it is given (a ``NullServer`` when nobody can attach).

``NullRecorder`` has the same surface and writes nothing: ranks > 0 of a run
across several processes (rank 0 owns the run directory).

A write that fails (disk full, quota, file size limit, read-only, permission)
damages nothing already written: a series or event write is cut back to its last
whole record, ``state.json`` and checkpoints go through a temporary file removed
on failure (a checkpoint is whole or absent).  A Recorder made with ``hold=True``
(the engine's) then *holds* what it could not write — the rows, in order, the
events, the latest state, the checkpoint asked for — sets ``fault`` to the
reason, and writes it all on ``flush()``; its driver stops training until then,
so at most one chunk of rows is held (``MAX_HELD_BYTES`` is the hard ceiling,
``MAX_HELD_EVENTS`` that of events).  It keeps ``RESERVE_BYTES`` in a
``.reserve`` file that it frees on a full disk, to record the fault itself.  A
run directory (or a series file) removed under it is ``RunGone``: nothing can
be written there any more.  Without ``hold`` a failed write raises its ``OSError``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from dlf_tui.core import series, states
from dlf_tui.core.errors import SetupError
from dlf_tui.engine.checkpoints import (CHECKPOINT_VERSION, Stateful, checkpoint_name,
                                        latest_checkpoint, load_parts, read_checkpoint)
from dlf_tui.store import run as runs
from dlf_tui.store import liveness
from dlf_tui.wire import protocol
from dlf_tui.wire.server import NullServer

log = logging.getLogger("dlf_tui.engine")

RESERVE_BYTES = 128 << 10  # freed on a full disk: room for state.json and the fault's events
MAX_HELD_BYTES = 64 << 20  # rows held in memory, all series together (in practice one chunk)
MAX_HELD_EVENTS = 10_000  # events held in memory; beyond, they are counted, not kept

_KINDS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
          errno.EFBIG: "file size limit reached", errno.EROFS: "file system is read-only",
          errno.EACCES: "permission denied", errno.EPERM: "permission denied",
          errno.EIO: "I/O error", errno.ENOENT: "missing"}
_FREES_RESERVE = (errno.ENOSPC, errno.EDQUOT)


def write_failure(err: OSError, what: str) -> str:
    """One line for a failed write: ``disk full: cannot write metrics.bin (No space left on device)``."""
    kind = _KINDS.get(err.errno or 0, "cannot write")
    text = err.strerror or str(err) or type(err).__name__
    return f"{kind}: cannot write {what} ({text})"


class DiskFault(SetupError):
    """A checkpoint (or a command that needs one) the disk refused: ``str()`` says why."""


class RunGone(RuntimeError):
    """The run directory or one of its series files was removed (or replaced)
    while the engine wrote it: nothing it writes can reach the run any more."""


@dataclass
class ChunkResult:
    """What a chunk of updates leaves to record."""

    rows: np.ndarray  # metrics, one row per kept update
    eval_rows: np.ndarray | None = None
    diag_rows: np.ndarray | None = None
    kept: int = 0  # updates kept (fewer than planned when one diverged)
    diverged: str = ""  # why the update after the kept ones was refused
    static_tail_from: int = 0  # the update the last-period plain-CE tail starts at


class Recorder:
    def __init__(self, run_dir: Path, classes: int, diag_k: int = 1,
                 server: Any = None, status: Callable[[], dict] | None = None,
                 config_toml: str = "", loss: str = "ce", hold: bool = False):
        """``loss``: the run's [loss] kind, which names its plain-loss columns.
        ``status()`` gives step, total, rate and device (and any other keys
        ``state.json`` should hold) whenever the state is written.  ``hold``: keep
        what a failing disk refused and write it on ``flush()`` (see the module doc)."""
        self.dir = Path(run_dir)
        self.server = server if server is not None else NullServer()
        self.status = status or (lambda: {})
        self.config_toml = config_toml
        self.hold = hold
        self.state = states.STARTING
        self.reason = ""
        self.started = time.time()
        self.pid_start = liveness.process_start(os.getpid())
        st = os.stat(self.dir)
        self._dir_id = (st.st_dev, st.st_ino)
        self.metrics = runs.SeriesWriter(self.dir, series.METRICS, series.metric_columns(classes, loss))
        self.evals = runs.SeriesWriter(self.dir, series.EVAL, series.eval_columns(classes, loss))
        self.diags = runs.SeriesWriter(self.dir, series.DIAG, series.diag_columns(diag_k))
        self.events = runs.AppendFile(self.dir / runs.EVENTS)
        self._end_events_line()
        (self.dir / runs.CHECKPOINTS).mkdir(exist_ok=True)
        # what a failing disk refused (hold mode), in the order it must be written
        self.fault = ""  # why the last write failed, while anything is held
        self._lock = threading.RLock()  # events and the fault: the server thread records refusals
        self._held_rows: list[tuple[runs.SeriesWriter, type[protocol.Chunk], np.ndarray]] = []
        self._held_bytes = 0
        self._held_events: list[str] = []
        self._dropped_events = 0
        self._held_state = False
        self._held_checkpoint: tuple[int, Mapping[str, Stateful], str] | None = None
        self._reserve_freed = False
        self.last_checkpoint: tuple[int, Path] | None = None
        if hold:
            self._make_reserve()

    # -- faults ----------------------------------------------------------------------------
    def _end_events_line(self) -> None:
        """A torn last event line (a kill mid-write) gets its newline, so the next
        event is a line of its own (a reader skips the torn one)."""
        if self.events.size:
            with open(self.events.path, "rb") as fh:
                fh.seek(self.events.size - 1)
                if fh.read(1) != b"\n":
                    self.events.write(b"\n")

    def _make_reserve(self) -> str:
        """Keep RESERVE_BYTES on disk for the moment it fills: '' when kept, else the
        kind of refusal (``disk full``, ``disk quota exceeded``, ...)."""
        path = self.dir / runs.RESERVE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
                except OSError as err:
                    if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    if os.fstat(fd).st_size < RESERVE_BYTES:
                        runs.write_all(fd, bytes(RESERVE_BYTES))
            finally:
                os.close(fd)
        except OSError as err:
            try:
                os.unlink(path)
            except OSError:
                pass
            log.warning("no space kept in reserve (%s)", write_failure(err, runs.RESERVE))
            return _KINDS.get(err.errno or 0, "cannot write")
        return ""

    def _free_reserve(self) -> None:
        try:
            os.unlink(self.dir / runs.RESERVE)
        except OSError:
            return
        self._reserve_freed = True

    def gone(self) -> str:
        """Why nothing written reaches the run any more ('' while it does)."""
        try:
            st = os.stat(self.dir)
        except FileNotFoundError:
            return f"the run directory {self.dir} was removed while the engine ran"
        except OSError:
            return ""
        if (st.st_dev, st.st_ino) != self._dir_id:
            return f"the run directory {self.dir} was replaced while the engine ran"
        for f in (self.metrics.file, self.evals.file, self.diags.file, self.events):
            try:
                if f.fd >= 0 and os.fstat(f.fd).st_nlink == 0:
                    return f"{f.path.name} was removed while the engine wrote it"
            except OSError:
                pass
        return ""

    def _failed(self, err: OSError, what: str) -> None:
        """A write failed: raise ``RunGone`` if the run is gone, the error itself
        without ``hold``; else note the fault (frees the reserve on a full disk)."""
        why = self.gone()
        if why:
            raise RunGone(why) from None
        if not self.hold:
            raise err
        with self._lock:
            if err.errno in _FREES_RESERVE:
                self._free_reserve()
            if not self.fault:
                self.fault = write_failure(err, what)
                log.error("%s", self.fault)

    def holding(self) -> bool:
        """Is anything the disk refused still held in memory?"""
        return bool(self._held_rows or self._held_events or self._held_state
                    or self._held_checkpoint or self._reserve_freed)

    def held_updates(self) -> tuple[int, int]:
        """The first and last update of the metric rows held in memory ((0, 0): none)."""
        held = [rows for w, _, rows in self._held_rows if w is self.metrics and len(rows)]
        if not held:
            return 0, 0
        return int(held[0][0, 0]), int(held[-1][-1, 0])

    def events_full(self) -> bool:
        return len(self._held_events) >= MAX_HELD_EVENTS

    def flush(self) -> bool:
        """Write everything held: the reserve first (a full disk stays full until it
        has room for it again), then rows (and publish them), events, the checkpoint
        asked for, ``state.json``.  True when nothing is held any more; else
        ``fault`` says why."""
        if not self.holding():
            self.fault = ""
            return True
        with self._lock:
            self.fault = ""
        if self._reserve_freed:
            refused = self._make_reserve()
            if refused:
                with self._lock:
                    self.fault = (f"{refused}: no room to keep {RESERVE_BYTES >> 10} KiB in "
                                  f"reserve ({runs.RESERVE}) before writing again")
                return False
            self._reserve_freed = False
        while self._held_rows:
            writer, chunk, rows = self._held_rows[0]
            if not self._write_rows(writer, chunk, rows):
                return False
            self._held_rows.pop(0)
            self._held_bytes -= rows.nbytes
        if not self._write_events():
            return False
        if self._held_checkpoint is not None:
            step, parts, reason = self._held_checkpoint
            if step != self.status().get("step", step):
                log.info("a held checkpoint of update %d is stale: not written", step)
                self._held_checkpoint = None
            else:
                try:
                    self._save_checkpoint(step, parts, reason)
                except DiskFault:
                    return False
        if self._held_state:
            self.write_state(self.state, self.reason)
            if self._held_state:
                return False
        with self._lock:
            if self._dropped_events:
                n, self._dropped_events = self._dropped_events, 0
                self.event("note", f"{n} event{'s' * (n != 1)} not recorded while the disk "
                           "refused writes")
        return not self.holding()

    # -- events and state ----------------------------------------------------------------
    def _write_events(self) -> bool:
        with self._lock:
            if not self._held_events:
                return True
            data = "".join(self._held_events).encode("utf-8")
            try:
                self.events.write(data)
            except OSError as err:
                self._failed(err, runs.EVENTS)
                return False
            self._held_events.clear()
            return True

    def event(self, kind: str, message: str, step: int | None = None, **extra: Any) -> None:
        ev = {"step": self.status().get("step", 0) if step is None else step,
              "time": round(time.time(), 3), "kind": kind, "message": message, **extra}
        line = json.dumps(ev) + "\n"
        with self._lock:
            if not self.hold:
                self.events.write(line.encode("utf-8"))  # raises what failed
            elif len(self._held_events) >= MAX_HELD_EVENTS:
                self._dropped_events += 1
            else:
                self._held_events.append(line)
                self._write_events()
        level = ("error" if kind in ("error", "crashed", "fault") else
                 "warning" if kind == "refused" else "info")
        log.log(logging.ERROR if level == "error" else logging.INFO, "[%s] %s", kind, message)
        self.server.broadcast(protocol.Log(level=level, message=message, step=ev["step"], kind=kind))

    def write_state(self, state: str, reason: str = "") -> None:
        self.state, self.reason = state, reason
        st = dict(self.status())
        st["rate"] = round(float(st.get("rate", 0.0)), 1)
        doc = {"state": state, "pid": os.getpid(), "pid_start": self.pid_start,
               "started": self.started, "reason": reason, **st}
        if state in states.ENDED:
            doc["ended"] = time.time()
        try:
            runs.write_json_atomic(self.dir / runs.STATE, doc)
            self._held_state = False
        except OSError as err:
            self._held_state = True
            self._failed(err, runs.STATE)
        self.server.broadcast(protocol.State(state=state, step=st.get("step", 0),
                                             total=st.get("total", 0), rate=st["rate"],
                                             reason=reason))

    def greeting(self) -> list[protocol.Message]:
        """What a new client gets after its hello: the state's reason, when there is
        one (a pause for a full disk, a divergence)."""
        if not self.reason:
            return []
        st = self.status()
        return [protocol.State(state=self.state, step=st.get("step", 0), total=st.get("total", 0),
                               rate=round(float(st.get("rate", 0.0)), 1), reason=self.reason)]

    # -- series --------------------------------------------------------------------------
    def _write_rows(self, writer: runs.SeriesWriter, chunk: type[protocol.Chunk],
                    rows: np.ndarray) -> bool:
        """Append rows to a series file and publish them, under the lock that orders
        chunks against hellos (a new client's history ends where its chunks begin)."""
        srv = self.server
        failed: OSError | None = None
        with srv.lock:
            try:
                start = writer.append(rows)
            except OSError as err:
                failed = err
            else:
                if srv.has_clients:
                    srv.publish(chunk.pack(start, writer.columns, rows))
        if failed is not None:
            self._failed(failed, writer.path.name)
            return False
        return True

    def _append(self, writer: runs.SeriesWriter, chunk: type[protocol.Chunk],
                rows: np.ndarray) -> None:
        if not self._held_rows and self._write_rows(writer, chunk, rows):
            return
        if self._held_bytes + rows.nbytes > MAX_HELD_BYTES:
            raise RuntimeError(f"{self.fault or 'cannot write'}; more than "
                               f"{MAX_HELD_BYTES >> 20} MiB of rows would be held in memory")
        rows = np.array(rows, dtype=np.float64, copy=True)
        self._held_rows.append((writer, chunk, rows))
        self._held_bytes += rows.nbytes

    def record(self, result: ChunkResult) -> None:
        """A chunk's rows (metrics, held-out evaluations, diagnostics), and the start
        of the plain-CE tail if the chunk reached it."""
        self._append(self.metrics, protocol.Metrics, result.rows)
        if result.eval_rows is not None and len(result.eval_rows):
            self._append(self.evals, protocol.Eval, result.eval_rows)
        if result.diag_rows is not None and len(result.diag_rows):
            self._append(self.diags, protocol.Diag, result.diag_rows)
        if result.static_tail_from:
            self.event("static_tail", f"last period: amplitude 1 (plain CE) from update "
                       f"{result.static_tail_from}", step=result.static_tail_from)
        srv = self.server
        if srv.has_clients and result.rows.shape[0]:
            st = self.status()
            srv.broadcast(protocol.State(state=self.state, step=int(result.rows[-1, 0]),
                                         total=st.get("total", 0), rate=st.get("rate", 0.0),
                                         reason=self.reason))

    def hello(self, config: dict, params: dict) -> protocol.Hello:
        """What a client gets first: the run, its state and parameters, and where the
        three series end (its history on disk ends there; chunks follow)."""
        return protocol.Hello(
            run_id=self.dir.name, config=config, state=self.state, params=params,
            metrics_columns=self.metrics.columns, eval_columns=self.evals.columns,
            metrics_rows=self.metrics.rows, eval_rows=self.evals.rows,
            diag_columns=self.diags.columns, diag_rows=self.diags.rows)

    def rows(self) -> dict[str, int]:
        """Rows on disk, per series (held rows come after them)."""
        return {series.METRICS: self.metrics.rows, series.EVAL: self.evals.rows,
                series.DIAG: self.diags.rows}

    def truncate(self, rows: Mapping[str, int]) -> None:
        """Cut the series back (a resume, a rollback): rows held in memory, all after
        the files' ends, and a held checkpoint go too."""
        self._held_rows.clear()
        self._held_bytes = 0
        self._held_checkpoint = None
        self.metrics.truncate(rows[series.METRICS])
        self.evals.truncate(rows[series.EVAL])
        self.diags.truncate(rows.get(series.DIAG, 0))

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, step: int, parts: Mapping[str, Stateful], reason: str) -> Path:
        """Every part's state and the series lengths at update ``step``, written whole
        (a temporary file, synced, renamed into place) or not at all.  With ``hold``,
        what is held is written first, and a checkpoint the disk refuses is held
        (``DiskFault``) until ``flush()`` writes it."""
        if self.hold:
            self._held_checkpoint = (step, parts, reason)
            if not self.flush():  # the rows it counts must be on disk first
                raise DiskFault(f"cannot checkpoint: {self.fault}")
            if self.last_checkpoint is not None and self._held_checkpoint is None:
                return self.last_checkpoint[1]  # flush() wrote it
        return self._save_checkpoint(step, parts, reason)

    def drop_held_checkpoint(self) -> None:
        self._held_checkpoint = None

    def _save_checkpoint(self, step: int, parts: Mapping[str, Stateful], reason: str) -> Path:
        path = self.dir / runs.CHECKPOINTS / checkpoint_name(step)
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(exist_ok=True)  # someone may have removed it
            for f in (self.metrics, self.evals, self.diags, self.events):
                f.sync()  # the rows it counts are on disk before it is
            doc = {"version": CHECKPOINT_VERSION, "step": step, "config": self.config_toml,
                   "parts": {name: part.state_dict() for name, part in parts.items()},
                   "rows": self.rows()}
            try:
                with open(tmp, "wb") as fh:
                    torch.save(doc, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            _sync_dir(path.parent)
        except OSError as err:
            self._failed(err, f"{runs.CHECKPOINTS}/{path.name}")  # raises without hold
            raise DiskFault(f"cannot checkpoint: {self.fault}") from None
        self._held_checkpoint = None
        self.last_checkpoint = (step, path)
        self.event("checkpoint", f"checkpoint at update {step} ({reason}): {path.name}",
                   step=step, path=str(path))
        return path

    def latest_checkpoint(self) -> Path:
        return latest_checkpoint(self.dir)

    def load_checkpoint(self, path: Path, parts: Mapping[str, Stateful],
                        device: torch.device | str = "cpu") -> int:
        """Restore the parts and cut the series files back to the checkpoint;
        returns its update."""
        doc = read_checkpoint(path, device)
        load_parts(doc, parts, path)
        self.truncate(doc["rows"])
        return int(doc["step"])

    def close(self) -> None:
        """Write what is still held when it can (events and state: the last word),
        give the reserve back, close the files."""
        if self.hold and self.holding() and not self.gone():
            self._write_events()
            if self._held_state:
                try:
                    self.write_state(self.state, self.reason)
                except RunGone:
                    pass
        if self.hold:
            try:
                os.unlink(self.dir / runs.RESERVE)
            except OSError:
                pass
        self.metrics.close()
        self.evals.close()
        self.diags.close()
        self.events.close()


def _sync_dir(path: Path) -> None:
    """fsync a directory, so a rename in it survives a power cut (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



class NullRecorder:
    """A Recorder that writes nothing but its log lines (ranks > 0 of a run)."""

    fault = ""  # it writes nothing, so nothing can fail

    def __init__(self, run_dir: Path, label: str = ""):
        self.dir = Path(run_dir)
        self.label = label
        self.state = states.STARTING

    def flush(self) -> bool:
        return True

    def holding(self) -> bool:
        return False

    def event(self, kind: str, message: str, step: int | None = None, **extra: Any) -> None:
        log.info("[%s] %s%s", kind, self.label, message)

    def write_state(self, state: str, reason: str = "") -> None:
        self.state = state

    def record(self, result: ChunkResult) -> None:
        pass

    def checkpoint(self, step: int, parts: Mapping[str, Stateful], reason: str) -> Path:
        return self.dir / runs.CHECKPOINTS / checkpoint_name(step)  # rank 0 writes it

    def latest_checkpoint(self) -> Path:
        return latest_checkpoint(self.dir)

    def load_checkpoint(self, path: Path, parts: Mapping[str, Stateful],
                        device: torch.device | str = "cpu") -> int:
        doc = read_checkpoint(path, device)
        load_parts(doc, parts, path)
        return int(doc["step"])

    def close(self) -> None:
        pass
