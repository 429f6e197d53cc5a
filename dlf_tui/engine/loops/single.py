"""One run in this process: the engine that ``python -m dlf_tui.engine RUN_DIR`` runs.

It combines a Trainer (train a chunk), a Recorder (the run directory), a Control
(commands from the socket, between chunks), the control server and the
landscape Monitor.  Rank 0 of a run across several processes is a SingleRun
whose chunks ``loops/distributed.py`` plans.

A write the disk refuses never ends the run: the Recorder holds what it could
not write (``hold=True``), the run pauses itself with the reason, tells the
clients, and tries again every ``RETRY_S`` seconds and on ``resume``; once all
is written it resumes by itself (unless someone paused it meanwhile).  Asked to
stop while the disk still refuses, it ends as crashed, saying which updates were
not saved; the last checkpoint stays whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
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
from dlf_tui.engine.recorder import ChunkResult, DiskFault, Recorder, RunGone
from dlf_tui.engine.runtime import on_stop_signals
from dlf_tui.engine.trainer import LIVE_EDITS, Trainer
from dlf_tui.store import run as runs
from dlf_tui.wire import protocol
from dlf_tui.wire.server import ControlServer, NullServer

log = logging.getLogger("dlf_tui.engine")

RETRY_S = 5.0  # how often a run paused by a refused write tries again by itself


class Steering(Control):
    """The engine's Control, aware of writes the disk refused: a fault pauses the
    run from whichever loop polls (one process, or rank 0 of several), a paused
    engine retries on its own every ``RETRY_S``, and ``resume`` first writes what
    is held (refused, with the reason, while the disk still refuses)."""

    def __init__(self, server, recorder, target: "SingleRun"):
        super().__init__(server, recorder, target)
        self.run = target
        self.held_pause = False  # paused by a refused write, and by nothing else

    def poll(self) -> None:
        self.run.note_fault()
        super().poll()
        self.run.note_fault()

    def wait(self, timeout: float) -> None:
        super().wait(timeout)
        self.run.retry_if_due()

    def pause(self, reason: str = "") -> None:
        if not reason:
            self.held_pause = False  # someone's own pause: it outlasts the fault
        super().pause(reason)

    def resume(self) -> None:
        if self.run.faulted() and not self.run.retry(resume=False):
            raise SetupError(f"cannot resume: {self.run.fault_reason()}")
        self.held_pause = False
        super().resume()

    def set_params(self, values: dict[str, Any], source: str = "client") -> dict:
        if self.recorder.events_full():
            raise SetupError(f"cannot apply an edit: {self.recorder.fault}, and the events "
                             "held in memory are at their limit")
        return super().set_params(values, source)


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
        self.server = (ControlServer(self.dir / runs.SOCKET, self.hello, greeting=self.greeting)
                       if serve else NullServer())
        self.recorder = Recorder(self.dir, tr.C, cfg.diagnostics.k, server=self.server,
                                 status=self.status, config_toml=cfgmod.to_toml(cfg),
                                 loss=cfg.loss.kind, hold=True)
        self.control = Steering(self.server, self.recorder, self)
        self._noted = ""  # the fault the run is paused for ('' while everything is written)
        self._first_fault = ""  # the first reason of the fault (it may change while retrying)
        self._reason_before = ""  # the pause's reason before the fault (a divergence)
        self._next_retry = 0.0
        self._exit = 0
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

    def greeting(self) -> list[protocol.Message]:
        return self.recorder.greeting()

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
        logging.raiseExceptions = False  # a log line the full disk refuses is no error
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
            while True:
                if self.dist is not None:
                    self.dist.lead(self)  # rank 0 of several: chunks planned here, run by every rank
                else:
                    self._loop()
                if self._end():
                    break  # else a rollback while the disk refused the end: train on
        except RunGone as err:  # nothing written reaches the run: say so where it can be read
            reason = f"{err}: the engine ended at update {tr.step} (nothing more can be recorded)"
            log.error("%s", reason)
            print(f"error: {reason}", file=sys.stderr, flush=True)
            if self.dist is not None:
                self.dist.abort(reason)
            self.server.close()
            return 1
        except BaseException as err:  # noqa: BLE001 - the engine reports every failure
            line = one_line(err)
            log.error("engine crashed:\n%s", traceback.format_exc())
            if self.dist is not None:  # stop the other ranks; a dead rank is the reason
                line = self.dist.abort(line)
            lost = self._unsaved()
            rec.event("error", f"engine crashed at update {tr.step}: {line}{lost}")
            rec.write_state(states.CRASHED, line + lost)
            self.server.close()
            return 1
        self.server.close()
        return self._exit

    def _end(self) -> bool:
        """The last checkpoint, event and state.  While the disk refuses the
        checkpoint the run waits, paused and retrying; asked to stop meanwhile, it
        ends as crashed.  False: a rollback took it back before the end."""
        rec, tr, ctl = self.recorder, self.trainer, self.control
        while True:
            stopped = (ctl.stop_requested or self.dist is not None) and tr.step < tr.total
            try:
                self.checkpoint("stop" if stopped else "finished")
                break
            except DiskFault:
                rec.drop_held_checkpoint()  # asked again below, once the rest is written
                if ctl.stop_requested:
                    reason = f"stopped while {self.fault_reason(held=False)}{self._unsaved()}"
                    rec.event("error", reason)
                    rec.write_state(states.CRASHED, reason)
                    self._exit = 1
                    return True
                ctl.poll()
                ctl.wait(0.5)
                if tr.step < tr.total and not ctl.stop_requested and self.dist is None:
                    return False
        if stopped:
            rec.event("stop", f"stopped after update {tr.step}")
            rec.write_state(states.STOPPED)
        else:
            rec.event("finish", f"finished {tr.step} updates")
            rec.write_state(states.FINISHED)
        self._exit = 0
        return True

    # -- writes the disk refused ---------------------------------------------------------------
    def faulted(self) -> bool:
        return bool(self._noted or self.recorder.fault or self.recorder.holding())

    def fault_reason(self, held: bool = True) -> str:
        """The fault, and (``held``) what it holds in memory and what happens next."""
        rec = self.recorder
        text = rec.fault or self._noted or "the disk refused a write"
        if not held:
            return text
        first, last = rec.held_updates()
        kept = (f"updates {first}–{last} held in memory" if first and last > first else
                f"update {first} held in memory" if first else "nothing lost")
        return f"{text}; paused, {kept}; retrying every {RETRY_S:g} s (or on resume)"

    def _unsaved(self) -> str:
        """'' or, when the engine ends while it holds rows, which were not saved."""
        rec = self.recorder
        if not rec.holding():
            return ""
        first, last = rec.held_updates()
        try:
            where = f"the last checkpoint, {rec.latest_checkpoint().name}, resumes the run"
        except Exception:  # noqa: BLE001 - no checkpoint, or an unreadable directory
            where = "there is no checkpoint to resume from"
        lost = (f"updates {first}–{last} were not saved" if first and last > first else
                f"update {first} was not saved" if first else "its last events were not saved")
        return f"; {lost}; {where}"

    def note_fault(self) -> None:
        """A write the disk refused: pause with the reason (once per fault; again
        when the reason changes)."""
        rec, ctl = self.recorder, self.control
        if not rec.fault or rec.fault == self._noted:
            return
        first = not self._noted
        self._noted = rec.fault
        reason = self.fault_reason()
        if first:
            self._first_fault = rec.fault
            self._reason_before = rec.reason if ctl.paused else ""
            ctl.held_pause = not ctl.paused
            self._next_retry = time.monotonic() + RETRY_S
            rec.event("fault", reason)
        if ctl.paused:
            rec.write_state(states.PAUSED, reason)
        else:
            Control.pause(ctl, reason)

    def retry_if_due(self) -> None:
        if self.faulted() and time.monotonic() >= self._next_retry:
            self.retry()

    def retry(self, resume: bool = True) -> bool:
        """Write what is held.  True when everything is written; the run then
        resumes by itself (``resume``) if nothing but the fault paused it."""
        rec, ctl = self.recorder, self.control
        self._next_retry = time.monotonic() + RETRY_S
        first, last = rec.held_updates()
        if not rec.flush():
            self.note_fault()  # its reason may have changed
            return False
        if not self._noted:
            return True
        was, self._noted = self._first_fault or self._noted, ""
        held = (f"wrote updates {first}–{last} held in memory" if first and last > first else
                f"wrote update {first} held in memory" if first else "nothing was lost")
        rec.event("recovered", f"writes work again ({was}): {held}")
        if ctl.held_pause and resume:
            ctl.held_pause = False
            Control.resume(ctl)
        elif ctl.paused:
            rec.write_state(states.PAUSED, self._reason_before)
        return True

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
            if ctl.paused or self._noted:  # never trains while anything is held
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
        self.note_fault()
        every = self.cfg.run.checkpoint_every
        if every and tr.step % every == 0 and tr.step < tr.total:
            try:
                self.checkpoint("periodic")
            except DiskFault:
                self.note_fault()  # held: written once the disk takes it
        return result

    def _diverged(self, why: str) -> None:
        step = self.trainer.step
        reason = (f"diverged: update {step + 1} refused ({why}); paused with the parameters "
                  f"of update {step}. Lower lr and resume, or roll back to a checkpoint")
        self.recorder.event("diverged", reason, step=step + 1)
        self.control.pause(reason)

    def close(self) -> None:
        self.recorder.close()
