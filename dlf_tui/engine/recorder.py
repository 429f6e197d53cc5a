"""A run directory being written: series rows, events, ``state.json`` and checkpoints.

The Recorder knows nothing of models or steppers: a driver hands it metric rows,
events and the *Stateful* parts a checkpoint gathers (anything with
``state_dict()`` / ``load_state_dict()``: a torch module, a stepper, the
schedule, the RNG), so the engine's loops and a user's own training loop write
the same run directory.  Rows and chunks go out to attached clients through the
control server it is given (a ``NullServer`` when nobody can attach).

``NullRecorder`` has the same surface and writes nothing: ranks > 0 of a run
across several processes (rank 0 owns the run directory).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch

from dlf_tui.core import series, states
from dlf_tui.core.errors import SetupError
from dlf_tui.store import run as runs
from dlf_tui.store import liveness
from dlf_tui.wire import protocol
from dlf_tui.wire.server import NullServer

log = logging.getLogger("dlf_tui.engine")

CHECKPOINT_VERSION = 2  # 2: {"parts": {name: state}}; 1: the trainer's parts as top-level keys
_V1_PARTS = ("model", "optimizer", "schedule", "rng")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class ChunkResult:
    """What a chunk of updates leaves to record."""

    rows: np.ndarray  # metrics, one row per kept update
    eval_rows: np.ndarray | None = None
    diag_rows: np.ndarray | None = None
    kept: int = 0  # updates kept (fewer than planned when one diverged)
    diverged: str = ""  # why the update after the kept ones was refused
    static_tail_from: int = 0  # the update the last-period plain-CE tail starts at


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint's contents as plain data (tensors, numbers, strings, lists and
    dicts: ``weights_only`` — nothing in the file is executed)."""
    try:
        doc = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        text = str(err).strip().splitlines()
        raise SetupError(f"{path}: not a checkpoint this engine reads "
                         f"({text[0][:160] if text else type(err).__name__})") from None
    if not isinstance(doc, dict) or doc.get("version") not in (1, CHECKPOINT_VERSION):
        version = doc.get("version") if isinstance(doc, dict) else None
        raise SetupError(f"{path}: unsupported checkpoint version {version}")
    if doc["version"] == 1:
        doc = {"version": CHECKPOINT_VERSION, "step": doc["step"], "config": doc.get("config", ""),
               "parts": {**{k: doc[k] for k in _V1_PARTS},
                         "progress": {"step": doc["step"], "lr": doc["lr"]}},
               "rows": {series.METRICS: doc["metrics_rows"], series.EVAL: doc["eval_rows"],
                        series.DIAG: doc.get("diag_rows", 0)}}
    return doc


def load_parts(doc: dict, parts: Mapping[str, Stateful], path: Path) -> None:
    """Restore every part from a checkpoint, in the order ``parts`` lists them."""
    saved = doc["parts"]
    for name, part in parts.items():
        if name not in saved:
            raise SetupError(f"{path}: the checkpoint holds no {name!r}")
        part.load_state_dict(saved[name])


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted((Path(run_dir) / runs.CHECKPOINTS).glob("step-*.pt"))
    if not ckpts:
        raise SetupError(f"{Path(run_dir).name}: no checkpoint yet")
    return ckpts[-1]


class Recorder:
    def __init__(self, run_dir: Path, classes: int, diag_k: int = 1,
                 server: Any = None, status: Callable[[], dict] | None = None,
                 config_toml: str = "", loss: str = "ce"):
        """``loss``: the run's [loss] kind, which names its plain-loss columns.
        ``status()`` gives step, total, rate and device (and any other keys
        ``state.json`` should hold) whenever the state is written."""
        self.dir = Path(run_dir)
        self.server = server if server is not None else NullServer()
        self.status = status or (lambda: {})
        self.config_toml = config_toml
        self.state = states.STARTING
        self.started = time.time()
        self.pid_start = liveness.process_start(os.getpid())
        self.metrics = runs.SeriesWriter(self.dir, series.METRICS, series.metric_columns(classes, loss))
        self.evals = runs.SeriesWriter(self.dir, series.EVAL, series.eval_columns(classes, loss))
        self.diags = runs.SeriesWriter(self.dir, series.DIAG, series.diag_columns(diag_k))
        self.events = open(self.dir / runs.EVENTS, "a", encoding="utf-8")
        (self.dir / runs.CHECKPOINTS).mkdir(exist_ok=True)

    # -- events and state ----------------------------------------------------------------
    def event(self, kind: str, message: str, step: int | None = None, **extra: Any) -> None:
        ev = {"step": self.status().get("step", 0) if step is None else step,
              "time": round(time.time(), 3), "kind": kind, "message": message, **extra}
        self.events.write(json.dumps(ev) + "\n")
        self.events.flush()
        level = "error" if kind in ("error", "crashed") else "warning" if kind == "refused" else "info"
        log.log(logging.ERROR if level == "error" else logging.INFO, "[%s] %s", kind, message)
        self.server.broadcast(protocol.Log(level=level, message=message, step=ev["step"], kind=kind))

    def write_state(self, state: str, reason: str = "") -> None:
        self.state = state
        st = dict(self.status())
        st["rate"] = round(float(st.get("rate", 0.0)), 1)
        doc = {"state": state, "pid": os.getpid(), "pid_start": self.pid_start,
               "started": self.started, "reason": reason, **st}
        if state in states.ENDED:
            doc["ended"] = time.time()
        runs.write_json_atomic(self.dir / runs.STATE, doc)
        self.server.broadcast(protocol.State(state=state, step=st.get("step", 0),
                                             total=st.get("total", 0), rate=st["rate"],
                                             reason=reason))

    # -- series --------------------------------------------------------------------------
    def _append(self, writer: runs.SeriesWriter, chunk: type[protocol.Chunk],
                rows: np.ndarray) -> None:
        """Append rows to a series file and publish them, under the lock that orders
        chunks against hellos (a new client's history ends where its chunks begin)."""
        srv = self.server
        with srv.lock:
            start = writer.append(rows)
            if srv.has_clients:
                srv.publish(chunk.pack(start, writer.columns, rows))

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
                                         total=st.get("total", 0), rate=st.get("rate", 0.0)))

    def hello(self, config: dict, params: dict) -> protocol.Hello:
        """What a client gets first: the run, its state and parameters, and where the
        three series end (its history on disk ends there; chunks follow)."""
        return protocol.Hello(
            run_id=self.dir.name, config=config, state=self.state, params=params,
            metrics_columns=self.metrics.columns, eval_columns=self.evals.columns,
            metrics_rows=self.metrics.rows, eval_rows=self.evals.rows,
            diag_columns=self.diags.columns, diag_rows=self.diags.rows)

    def rows(self) -> dict[str, int]:
        return {series.METRICS: self.metrics.rows, series.EVAL: self.evals.rows,
                series.DIAG: self.diags.rows}

    def truncate(self, rows: Mapping[str, int]) -> None:
        self.metrics.truncate(rows[series.METRICS])
        self.evals.truncate(rows[series.EVAL])
        self.diags.truncate(rows.get(series.DIAG, 0))

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, step: int, parts: Mapping[str, Stateful], reason: str) -> Path:
        """Every part's state and the series lengths at update ``step``, written whole
        (a temporary file renamed into place) or not at all."""
        path = self.dir / runs.CHECKPOINTS / checkpoint_name(step)
        doc = {"version": CHECKPOINT_VERSION, "step": step, "config": self.config_toml,
               "parts": {name: part.state_dict() for name, part in parts.items()},
               "rows": self.rows()}
        tmp = path.with_suffix(".tmp")
        torch.save(doc, tmp)
        os.replace(tmp, path)
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
        self.metrics.close()
        self.evals.close()
        self.diags.close()
        self.events.close()


class NullRecorder:
    """A Recorder that writes nothing but its log lines (ranks > 0 of a run)."""

    def __init__(self, run_dir: Path, label: str = ""):
        self.dir = Path(run_dir)
        self.label = label
        self.state = states.STARTING

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
