"""One run in this process: the engine that ``python -m dlf_tui.engine RUN_DIR`` runs.

It combines a Trainer (train a chunk), a Recorder (the run directory), a Control
(commands from the socket, between chunks), the control server and the
landscape Monitor.  Rank 0 of a run across several processes is a SingleRun
whose chunks ``loops/distributed.py`` plans.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from dlf_tui.core import config as cfgmod
from dlf_tui.core import states
from dlf_tui.core.errors import SetupError, one_line
from dlf_tui.engine.control import Control
from dlf_tui.engine.diagnostics.monitor import Monitor
from dlf_tui.engine.loops.pace import Pace
from dlf_tui.engine.recorder import ChunkResult, Recorder
from dlf_tui.engine.runtime import on_stop_signals
from dlf_tui.engine.trainer import LIVE_EDITS, Trainer
from dlf_tui.store import run as runs
from dlf_tui.wire import protocol
from dlf_tui.wire.server import ControlServer, NullServer

log = logging.getLogger("dlf_tui.engine")


class SingleRun:
    def __init__(self, run_dir: Path, resume: bool = False, serve: bool = True, dist=None,
                 fork: bool = False, edits: dict[str, Any] | None = None):
        """``serve=False``: no control socket (a sweep member trained alone).
        ``dist``: rank 0 of a run across several processes (a ``distributed.Group``).
        ``fork``: the directory is a fork (``store/fork.py``): reach its first update.
        ``edits``: live edits applied once started or resumed (``resume --set``)."""
        self.dir = Path(run_dir)
        self.dist = dist
        self.trainer = tr = Trainer.open(self.dir, dist, resume or fork)
        self.cfg = cfg = tr.cfg
        self.rate = 0.0
        self._first_chunk, self._busy_n, self._busy_s = True, 0, 0.0  # the steady rate
        self.server = (ControlServer(self.dir / runs.SOCKET, self.hello) if serve
                       else NullServer())
        self.recorder = Recorder(self.dir, tr.C, cfg.diagnostics.k, server=self.server,
                                 status=self.status, config_toml=cfgmod.to_toml(cfg),
                                 loss=cfg.loss.kind)
        self.control = Control(self.server, self.recorder, self)
        if serve:
            self.server.on_refused = self.control.refused
        self.monitor = Monitor(cfg, tr.model, tr.data, tr.dtype, tr.device, self.recorder.event,
                               alone=dist.alone if dist is not None else contextlib.nullcontext)
        # test hook: raise inside the loop once this update is reached (crash handling tests)
        self._fault_at = int(os.environ.get("DLF_TUI_FAULT_AT_STEP", "0") or 0)
        self.pace = Pace(cfg.run.pace)
        self.edits = dict(edits or {})
        for note in tr.code.notes:  # e.g. a user's file changed since the run started
            self.recorder.event("code", note)
        if fork:
            from dlf_tui.engine.loops.fork import reach_fork_point

            reach_fork_point(self)
        elif resume:
            self.resume()
        elif self.recorder.metrics.rows:
            raise SetupError(f"{self.dir} already holds {self.recorder.metrics.rows} updates; "
                             "use resume")

    # -- facts for clients and state.json ----------------------------------------------------
    def status(self) -> dict[str, Any]:
        tr = self.trainer
        doc = {"step": tr.step, "total": tr.total, "rate": self.rate, "device": str(tr.device)}
        if self.dist is not None:
            doc["nproc"], doc["ranks"] = self.dist.world, self.dist.pids()
        return doc

    def params(self) -> dict[str, Any]:
        return {**self.trainer.params(), **self.monitor.options(), "pace": self.pace.rate}

    def hello(self) -> protocol.Hello:
        return self.recorder.hello(cfgmod.to_dict(self.cfg), self.params())

    # -- what the Control asks -------------------------------------------------------------------
    def edit(self, name: str, value: Any) -> None:
        if name == "pace":
            self.pace.set(value)
        elif name in LIVE_EDITS:
            getattr(self.trainer, LIVE_EDITS[name])(value)
        else:  # diagnostics, diagnostics_every, ntk_every
            self.monitor.configure(**{name: value})

    def checkpoint(self, reason: str) -> Path:
        return self.recorder.checkpoint(self.trainer.step, self.trainer.parts(), reason)

    def load(self, path: Path) -> None:
        """Everything a checkpoint holds; the series files are cut back to it."""
        self.recorder.load_checkpoint(path, self.trainer.parts(), self.trainer.device)
        if self.dist is not None:
            self.dist.loaded(self.trainer.step, path)

    def resume(self) -> None:
        try:
            path = self.recorder.latest_checkpoint()
        except SetupError as err:
            raise SetupError(f"cannot resume: {err}") from None
        self.load(path)
        self.recorder.event("resume", f"resumed from {path.name} at update {self.trainer.step}",
                            rewound_to=self.trainer.step)

    def rollback(self) -> dict:
        path = self.recorder.latest_checkpoint()
        rec = self.recorder
        with self.server.lock:
            self.load(path)
            self.server.publish(protocol.Rewound(step=self.trainer.step,
                                                 metrics_rows=rec.metrics.rows,
                                                 eval_rows=rec.evals.rows,
                                                 diag_rows=rec.diags.rows))
        step = self.trainer.step
        rec.event("rollback", f"rolled back to {path.name}: continuing from update {step + 1}",
                  step=step + 1, rewound_to=step)
        self.control.announce("rollback")
        return {"params": self.params(), "path": str(path)}

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        rec, tr = self.recorder, self.trainer
        on_stop_signals(self.control.request_stop)
        self.server.start()
        if self.dist is not None:
            self.dist.others.on_failure = self._rank_failed
        rec.write_state(states.RUNNING)
        where = str(tr.device) if self.dist is None else self.dist.describe()
        rec.event("start", f"started {self.cfg.name} on {where}, update {tr.step + 1}"
                  f" of {tr.total}", step=tr.step + 1)
        if self.edits:  # resume --set: from the first update this engine trains
            self.control.set_params(self.edits, source="resume")
        try:
            if self.dist is not None:
                self.dist.lead(self)  # rank 0 of several: chunks planned here, run by every rank
            else:
                self._loop()
        except BaseException as err:  # noqa: BLE001 - the engine reports every failure
            line = one_line(err)
            log.error("engine crashed:\n%s", traceback.format_exc())
            if self.dist is not None:  # stop the other ranks; a dead rank is the reason
                line = self.dist.abort(line)
            rec.event("error", f"engine crashed at update {tr.step}: {line}")
            rec.write_state(states.CRASHED, line)
            self.server.close()
            return 1
        if self.control.stop_requested and tr.step < tr.total:
            self.checkpoint("stop")
            rec.event("stop", f"stopped after update {tr.step}")
            rec.write_state(states.STOPPED)
        else:
            self.checkpoint("finished")
            rec.event("finish", f"finished {tr.step} updates")
            rec.write_state(states.FINISHED)
        self.server.close()
        return 0

    def _rank_failed(self, reason: str) -> None:
        """Another rank died while this one is stuck in a collective (called from
        the distributed watchdog thread just before it ends this process)."""
        self.recorder.event("error", f"engine crashed at update {self.trainer.step}: {reason}")
        self.recorder.write_state(states.CRASHED, reason)
        self.server.close(timeout=0.5)

    def _loop(self) -> None:
        ctl, tr, pace = self.control, self.trainer, self.pace
        while tr.step < tr.total:
            ctl.poll()
            if ctl.stop_requested:
                break
            if ctl.paused:
                pace.reset()
                ctl.wait(0.5)
                continue
            delay = pace.delay()
            if delay > 0:  # ahead of the set pace: wait (a command ends the wait)
                ctl.wait(min(delay, 0.25))
                continue
            pace.started()
            result = self.train_chunk(pace.chunk(self.chunk_len(), self.cfg.run.flush_seconds))
            pace.count(result.kept)

    def chunk_len(self) -> int:
        """Most updates the next chunk may hold: ``chunk_rows``, the end of the run,
        the next periodic checkpoint."""
        tr = self.trainer
        k = min(tr.chunk_rows, tr.total - tr.step)
        every = self.cfg.run.checkpoint_every
        if every:
            k = min(k, every - tr.step % every)
        return k

    def train_chunk(self, k: int, early: bool = True) -> ChunkResult:
        """Updates step+1 … step+k, recorded.  With ``early`` the chunk ends sooner
        when a command arrives or ``flush_seconds`` pass; the ranks of a distributed
        run do exactly the ``k`` rank 0 planned (``early=False``)."""
        tr, t0 = self.trainer, time.perf_counter()
        result = tr.train_chunk(k, self.monitor, self.control if early else None,
                                self.cfg.run.flush_seconds)
        self.recorder.record(result)
        if result.diverged:
            self._diverged(result.diverged)
        if self._fault_at and tr.step >= self._fault_at:
            raise RuntimeError(f"injected fault at update {tr.step}")
        if self._first_chunk:
            self._first_chunk = False  # it includes warm-up
        else:  # training time only: pauses do not count
            self._busy_n += result.kept
            self._busy_s += time.perf_counter() - t0
            self.rate = self._busy_n / max(self._busy_s, 1e-9)
        every = self.cfg.run.checkpoint_every
        if every and tr.step % every == 0 and tr.step < tr.total:
            self.checkpoint("periodic")
        return result

    def _diverged(self, why: str) -> None:
        step = self.trainer.step
        reason = (f"diverged: update {step + 1} refused ({why}); paused with the parameters "
                  f"of update {step}. Lower lr and resume, or roll back to a checkpoint")
        self.recorder.event("diverged", reason, step=step + 1)
        self.control.pause(reason)

    def close(self) -> None:
        self.recorder.close()
