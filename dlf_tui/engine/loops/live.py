"""A live run of the user's own training loop (``dlf_tui.live.Run``).

The user's loop trains; this driver records it into an ordinary run directory
(the same series files, events and ``state.json`` as the engine's) and serves
the control socket from a background thread, so ``dlf-tui attach``, ``ctl``,
``runs``, ``compare`` and ``export`` work on it unchanged.  Commands arrive
between updates: ``step()`` applies them (A and T into the DynamicalLoss, lr
into the optimizer's param groups), blocks while paused and returns False once
a stop was asked.

Recording costs little per update: ``loss()`` keeps a detached reference to the
logits and targets, ``step()`` the update's Γ, A, T, lr and gradient norm (on
the device).  At a flush (every ``flush_every`` updates or ``flush_seconds``)
the chunk's statistics are computed in a few batched ops and moved to the host
once.  Nobody attached, a slow client or a dead one costs the loop nothing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from dlf_tui.core import config as cfgmod
from dlf_tui.core import states
from dlf_tui.core.errors import ConfigError, SetupError, one_line
from dlf_tui.engine.control import Control
from dlf_tui.engine.loops.update_log import UpdateLog
from dlf_tui.engine.recorder import Recorder
from dlf_tui.engine.runtime import TorchRNG
from dlf_tui.store import run as runs
from dlf_tui.wire import protocol
from dlf_tui.wire.server import ControlServer

log = logging.getLogger("dlf_tui.live")

LIVE_EDITS = ("amplitude", "period", "lr")
OPEN_ENDED = 1_000_000_000  # config.toml's run.steps when the loop's length is not known


class _Progress:
    """The live run's own checkpoint part: the updates done."""

    def __init__(self, run: "Run"):
        self.run = run

    def state_dict(self) -> dict:
        return {"step": self.run.steps_done}

    def load_state_dict(self, state: dict) -> None:
        self.run.steps_done = int(state["step"])


def _latest_run(runs_dir: Path, name: str) -> Path:
    """The newest run directory of ``name`` under ``runs_dir`` that has a checkpoint."""
    safe = runs.safe_name(name)
    pattern = re.compile(r"\d{8}-\d{6}-" + re.escape(safe) + r"(-\d+)?$")
    found = [r.path for r in runs.list_runs(runs_dir)
             if pattern.match(r.id) and any((r.path / runs.CHECKPOINTS).glob("step-*.pt"))]
    if not found:
        raise SetupError(f"resume='latest': no run named {name!r} with a checkpoint under {runs_dir}")
    return found[-1]


class Run:
    """Record and steer a training loop; use it as a context manager."""

    def __init__(self, loss_fn, optimizer: torch.optim.Optimizer | None = None,
                 name: str = "live", state: Mapping[str, Any] | None = None,
                 runs_dir: str | Path | None = None, config: Mapping[str, Any] | None = None,
                 steps: int | None = None, resume: str | Path | None = None,
                 eval_every: int = 100, flush_every: int = 2048, flush_seconds: float = 0.5,
                 grad_norm: bool = False):
        """``loss_fn``: a ``DynamicalLoss``.  ``optimizer``: its lr is what ``lr``
        edits change.  ``state``: objects with ``state_dict()`` (the model…) that a
        checkpoint saves.  ``config``: your own settings, kept with the run
        (``live.json``).  ``steps``: the planned number of updates, if known.
        ``resume``: ``"latest"`` (the newest run of ``name`` with a checkpoint) or a
        run directory: continue it from its last checkpoint.  ``grad_norm``: record
        ‖g‖ of every update too (a norm over the optimizer's gradients per update;
        off, the column holds NaN)."""
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.state = dict(state or {})
        for key, part in self.state.items():
            if not (hasattr(part, "state_dict") and hasattr(part, "load_state_dict")):
                raise SetupError(f"state[{key!r}]: needs state_dict() and load_state_dict() "
                                 f"(a torch module or optimizer), got {type(part).__name__}")
        self.C = int(loss_fn.classes)
        self.eval_every, self.flush_every, self.flush_seconds = eval_every, flush_every, flush_seconds
        self.record_grad_norm = grad_norm
        self.steps_done = 0
        self.total = int(steps or loss_fn.schedule.s.total_steps or 0)
        self.device, self._device = "cpu", torch.device("cpu")
        runs_dir = Path(runs_dir) if runs_dir is not None else runs.default_runs_dir()
        self.cfg = self._config(name)
        if resume is None:
            self.dir = runs.create_run(self.cfg, runs_dir).path
        else:
            self.dir = _latest_run(runs_dir, name) if resume == "latest" else Path(resume)
        runs.write_json_atomic(self.dir / "live.json", {
            "config": dict(config or {}), "argv": list(sys.argv), "cwd": os.getcwd()})
        self.server = ControlServer(self.dir / runs.SOCKET, self._hello)
        self.recorder = Recorder(self.dir, self.C, server=self.server, status=self._status,
                                 config_toml=cfgmod.to_toml(self.cfg), loss=self.cfg.loss.kind)
        self.control = Control(self.server, self.recorder, self)
        self.server.on_refused = self.control.refused
        self.log = UpdateLog(self.C, loss=loss_fn.loss_kind)
        self._started = time.perf_counter()
        self._start_step = 0
        self._last_flush = time.perf_counter()
        self.rate = 0.0
        self._warned = False
        if resume is not None:
            path = self.recorder.latest_checkpoint()
            self.recorder.load_checkpoint(path, self._parts())
            self._start_step = self.steps_done
            self.log.reset(self.steps_done)
            self.recorder.event("resume", f"resumed from {path.name} at update {self.steps_done}")

    # -- the run directory's config ---------------------------------------------------------
    def _config(self, name: str) -> cfgmod.Config:
        s = self.loss_fn.schedule.s
        lr = float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 1.0
        try:
            return cfgmod.from_dict({
                "name": name, "description": "a live run of your own training loop (dlf_tui.live)",
                "data": {"name": runs.OWN_LOOP, "classes": self.C, "eval_every": self.eval_every},
                "model": {"kind": "external"},
                "schedule": {"kind": s.kind, "amplitude": s.amplitude, "period": s.period,
                             "last_period_static": s.last_period_static},
                "loss": {"kind": self.loss_fn.loss_kind},
                "optim": {"name": "external", "lr": lr},
                "run": {"steps": self.total or OPEN_ENDED, "flush_every": self.flush_every,
                        "flush_seconds": self.flush_seconds},
            }, source="dlf_tui.live.Run")
        except ConfigError as err:
            raise SetupError(str(err)) from None

    # -- Steerable: what the Control asks ---------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {**self.loss_fn.schedule.params(), "lr": self._lr(), "step": self.steps_done,
                "total": self.total, "device": self.device, "diagnostics": False,
                "diagnostics_every": 1, "ntk_every": 0}

    def edit(self, name: str, value: Any) -> None:
        if name == "amplitude":
            self.loss_fn.set_amplitude(value)
        elif name == "period":
            self.loss_fn.set_period(value)
        elif name == "lr":
            if self.optimizer is None:
                raise ConfigError("lr: this run was given no optimizer (Run(..., optimizer=opt))")
            for group in self.optimizer.param_groups:
                group["lr"] = value
        else:
            raise ConfigError(f"{name}: a live run of your own loop takes {', '.join(LIVE_EDITS)}")

    def checkpoint(self, reason: str) -> Path:
        self.flush()
        return self.recorder.checkpoint(self.steps_done, self._parts(), reason)

    def rollback(self) -> dict:
        raise ConfigError("rollback: your own loop holds its data and model; stop it and "
                          "restart the script with Run(..., resume='latest')")

    def _parts(self) -> dict[str, Any]:
        parts = dict(self.state)
        if self.optimizer is not None:
            parts["optimizer"] = self.optimizer
        parts.update(loss=self.loss_fn, progress=_Progress(self),
                     rng=TorchRNG(torch.device(self.device)))
        return parts

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0

    def _status(self) -> dict[str, Any]:
        return {"step": self.steps_done, "total": self.total, "rate": self.rate,
                "device": self.device}

    def _hello(self) -> protocol.Hello:
        return self.recorder.hello(cfgmod.to_dict(self.cfg), self.params())

    # -- the user's loop --------------------------------------------------------------------
    def __enter__(self) -> "Run":
        self.server.start()
        self.recorder.write_state(states.RUNNING)
        self.recorder.event("start", f"started {self.cfg.name} (your own loop, pid {os.getpid()}), "
                            f"update {self.steps_done + 1}", step=self.steps_done + 1)
        return self

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``loss_fn(logits, targets)``, recorded as this update's F, CE, accuracy and
        per-class accuracy (call it once per update)."""
        out = self.loss_fn(logits, targets)
        self.log.add_forward(logits, targets, self.loss_fn.last_neg_sample_loss)
        if logits.device != self._device:
            self._device, self.device = logits.device, str(logits.device)
        return out

    def step(self) -> bool:
        """One update done (after ``optimizer.step()``): advance the schedule, apply
        what the viewer asked, wait while paused.  False once a stop was asked."""
        lf, log = self.loss_fn, self.log
        if not log.end_update(lf.gamma_host, lf.amplitude, lf.period, self._lr(), self._grad_norm()):
            self._missed()
        lf.step()
        self.steps_done += 1
        if log.updates >= self.flush_every or (
                not self.steps_done & 31 and time.perf_counter() - self._last_flush > self.flush_seconds):
            self.flush()
        ctl = self.control
        if ctl.commands:
            self.flush()  # an edit applies from the next update: rows up to here first
            ctl.poll()
        while ctl.paused and not ctl.stop_requested:
            self.flush()
            ctl.wait(0.5)
            ctl.poll()
        return not ctl.stop_requested

    def should_evaluate(self) -> bool:
        """True on the updates a held-out evaluation is due (every ``eval_every``)."""
        return self.steps_done == 1 or self.steps_done % self.eval_every == 0

    def log_eval(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Held-out logits and targets of the update just done."""
        self.log.add_eval(self.steps_done, logits, targets)

    def _missed(self) -> None:
        """An update without ``run.loss``: its row cannot be made; the rows go on from
        the next update (said once in the log)."""
        self.flush()
        self.log.reset(self.steps_done + 1)
        if not self._warned:
            self._warned = True
            self.recorder.event("refused", f"update {self.steps_done + 1} was not recorded: call "
                                "run.loss(logits, targets) once in every update")

    def _grad_norm(self) -> torch.Tensor | None:
        if self.optimizer is None or not self.record_grad_norm:
            return None
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"]
                 if p.grad is not None]
        if not grads:
            return None
        with torch.no_grad():
            return torch.nn.utils.get_total_norm(grads)

    def flush(self) -> None:
        """Write the updates recorded since the last flush (one host transfer)."""
        self._last_flush = time.perf_counter()
        result = self.log.take(len(self.recorder.metrics.columns))
        if result is None:
            return
        busy = time.perf_counter() - self._started
        self.rate = (self.steps_done - self._start_step) / max(busy, 1e-9)
        self.recorder.record(result)

    def __exit__(self, kind, exc, tb) -> bool:
        rec, ctl = self.recorder, self.control
        try:
            self.flush()
            if exc is None:
                stopped = ctl.stop_requested and (not self.total or self.steps_done < self.total)
                self.checkpoint("stop" if stopped else "finished")
                if stopped:
                    rec.event("stop", f"stopped after update {self.steps_done}")
                    rec.write_state(states.STOPPED)
                else:
                    rec.event("finish", f"finished {self.steps_done} updates")
                    rec.write_state(states.FINISHED)
            elif isinstance(exc, KeyboardInterrupt):
                reason = f"interrupted (Ctrl-C) after update {self.steps_done}"
                rec.event("stop", reason)
                rec.write_state(states.STOPPED, reason)
            else:
                line = one_line(exc)
                rec.event("error", f"your loop crashed at update {self.steps_done}: {line}")
                rec.write_state(states.CRASHED, line)
        finally:
            self.server.close()
            rec.close()
        return False
