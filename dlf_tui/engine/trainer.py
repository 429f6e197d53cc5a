"""The Trainer: a model, its stepper and the Γ schedule, trained a chunk at a time.

Per update the hot loop costs the stepper's tensor ops plus two Python checks (a
queued command? time to end the chunk?).  Statistics stay on the device; the end
of a chunk does one host sync of them (``host_stats``), turns the raw sums into
metric rows, and checks them: when an update diverged, the chunk is replayed
from its start up to the last good update (``replay_until_divergence``).

The Trainer writes nothing and listens to nobody: drivers (``engine/loops/``)
give its chunks' rows to a Recorder and apply a Control's commands between
chunks.  Its checkpoint parts are ``parts()``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from dlf_tui.core.config import Config
from dlf_tui.core.schedule import Schedule
from dlf_tui.engine import data as datamod
from dlf_tui.engine import models
from dlf_tui.engine.recorder import ChunkResult
from dlf_tui.engine.runtime import TorchRNG, dtype_of, load_config, prepare_process, resolve_device
from dlf_tui.engine.steps import select as steppers
from dlf_tui.engine import user_data
from dlf_tui.engine.user_code import UserCode

log = logging.getLogger("dlf_tui.engine")
LIVE_EDITS = {"amplitude": "set_amplitude", "period": "set_period", "lr": "set_lr"}  # → Trainer method


class Interrupts(Protocol):
    """What may end a chunk early: queued commands, a stop request (a Control)."""

    commands: Any  # a deque: non-empty when a command waits
    stop_requested: bool


@dataclass
class Chunk:
    """A chunk of updates in flight: its Γ/amplitude/period tables and what it gathered."""

    step0: int  # the update before the chunk's first
    k: int  # updates planned
    gam: np.ndarray
    amp: np.ndarray
    per: np.ndarray
    snap: dict | None = None  # the stepper before the first update (for a replay)
    n: int = 0  # updates done
    evals: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    diags: list[list[float]] = field(default_factory=list)


def _class_stats(raw: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From rows [Σ log p (C) | correct (C) | count (C) | …]: per-class Σ CE,
    correct, count, and the total count."""
    nll = -raw[:, 0:C]
    correct = raw[:, C:2 * C]
    count = raw[:, 2 * C:3 * C]
    return nll, correct, count, count.sum(1)


def _per_class_accuracy(correct: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, correct / np.maximum(count, 1), np.nan)


def metric_rows(step0: int, raw: np.ndarray, gam: np.ndarray, amp: np.ndarray,
                per: np.ndarray, lr: np.ndarray, C: int, f: np.ndarray | None = None
                ) -> np.ndarray:
    """Metric rows (``core.series.metric_columns``) of updates step0+1 … from their
    raw statistics [Σ log p | correct | count per class | ‖g‖] and the Γ, A, T, lr in
    force; F is Σ Γ·CE / N unless given (``f``: a loss computed otherwise)."""
    n = raw.shape[0]
    nll, correct, count, ntot = _class_stats(raw, C)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.column_stack([
            np.arange(step0 + 1, step0 + n + 1, dtype=np.float64),
            (gam * nll).sum(1) / ntot if f is None else f,
            nll.sum(1) / ntot,
            correct.sum(1) / ntot,
            _per_class_accuracy(correct, count),
            gam, amp, per, lr, raw[:, 3 * C],
        ])


def eval_rows(evals: list[tuple[int, torch.Tensor]], C: int) -> np.ndarray | None:
    """Eval rows (``core.series.eval_columns``) from (update, raw held-out sums) pairs:
    one host transfer for them all."""
    if not evals:
        return None
    ev = torch.stack([e for _, e in evals]).cpu().numpy().astype(np.float64)
    ev = ev.reshape(len(evals), -1)
    nll, correct, count, ntot = _class_stats(ev, C)
    return np.column_stack([np.array([s for s, _ in evals], dtype=np.float64),
                            nll.sum(1) / ntot, correct.sum(1) / ntot,
                            _per_class_accuracy(correct, count)])


class _Progress:
    """The Trainer's own checkpoint part: the update reached and the lr."""

    def __init__(self, trainer: "Trainer"):
        self.t = trainer

    def state_dict(self) -> dict:
        return {"step": self.t.step, "lr": self.t.lr}

    def load_state_dict(self, state: dict) -> None:
        t = self.t
        t.step = int(state["step"])
        t.set_lr(state["lr"])
        t.schedule.set_total(t.total)  # the run's length may have changed (resume --steps)


class Trainer:
    def __init__(self, cfg: Config, device: torch.device, dtype: torch.dtype, dist=None,
                 code: UserCode | None = None):
        """``dist``: this process is one rank of a run across several processes
        (a ``loops.distributed.Group``): its share of every batch, DDP gradients,
        statistics summed over the ranks.  ``code``: where the user's own model and
        data entries are loaded from and kept (``user_code.UserCode``)."""
        self.cfg, self.device, self.dtype, self.dist = cfg, device, dtype, dist
        self.code = code = code or UserCode()
        self.data = (user_data.load(cfg.data, code, device, dtype) if datamod.is_user_data(cfg.data)
                     else datamod.load(cfg.data, device, dtype))
        self.C = C = self.data.classes
        self.model = models.build(cfg.model, self.data.in_features, C, cfg.run.seed, device,
                                  dtype, code)
        if models.is_user_model(cfg.model):
            models.check_outputs(self.model, self.data.inputs(self.data.train.x, dtype), C,
                                 code.where("model", cfg.model.kind))
        self.eval_split = self.data.val  # held-out rows this process evaluates
        if dist is not None:
            self.model = dist.prepare(self.model, cfg, self.data)
            self.eval_split = dist.shard_split(self.data.val)
        self.chunk_rows = steppers.chunk_rows(cfg, self.data)
        self.stepper = steppers.make(cfg, self.model, self.data, self.chunk_rows, group=dist)
        log.info("stepper: %s on %s, %s, %d threads", type(self.stepper).__name__, device,
                 cfg.run.dtype, torch.get_num_threads())
        s = cfg.schedule
        self.schedule = Schedule.create(s.kind, s.amplitude, s.period, C, cfg.run.steps,
                                        s.last_period_static)
        self.lr = cfg.optim.lr
        self.total = cfg.run.steps
        self.step = 0

    @classmethod
    def open(cls, run_dir: Path, dist=None, resume: bool = False) -> "Trainer":
        """The Trainer of a run directory's config, after this process's set-up
        (threads, float modes, seed); ``dist`` as for the constructor.  The user's own
        entries are kept in ``run_dir`` (by rank 0), and run from there on ``resume``."""
        cfg = load_config(run_dir)
        device = resolve_device(cfg.run.device) if dist is None else dist.device
        prepare_process(cfg, device, 1 if dist is None else dist.world)
        code = UserCode(run_dir, resume, keep=dist is None or dist.rank == 0)
        return cls(cfg, device, dtype_of(cfg), dist, code)

    def parts(self) -> dict[str, Any]:
        """What a checkpoint holds, in the order a load restores it."""
        return {"model": self.model, "optimizer": self.stepper, "schedule": self.schedule,
                "progress": _Progress(self), "rng": TorchRNG(self.device)}

    # -- live edits (from update step+1) -----------------------------------------------
    def params(self) -> dict[str, Any]:
        return {**self.schedule.params(), "lr": self.lr, "step": self.step, "total": self.total,
                "device": str(self.device)}

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        self.stepper.set_lr(lr)

    def set_amplitude(self, amplitude: float) -> None:
        self.schedule.edit_amplitude(amplitude)

    def set_period(self, period: int) -> None:
        self.schedule.set_period(period)

    # -- a chunk -----------------------------------------------------------------------
    def plan_chunk(self, k: int) -> Chunk:
        """The next ``k`` updates' tables (the schedule does not move yet)."""
        gam, amp, per = self.schedule.table(k)
        return Chunk(self.step, k, gam, amp, per)

    def start_chunk(self, chunk: Chunk) -> None:
        self.stepper.begin_chunk(torch.as_tensor(chunk.gam, dtype=self.dtype, device=self.device))
        chunk.snap = self.stepper.snapshot()  # to drop a diverging update before it is kept

    def run_updates(self, chunk: Chunk, monitor=None, interrupts: Interrupts | None = None,
                    flush_seconds: float = 0.0) -> None:
        """The hot loop: updates step0+1 … step0+k, held-out evaluations when due,
        landscape diagnostics (``monitor``) when due.  With ``interrupts`` the chunk
        ends early when a command waits, a stop is asked or ``flush_seconds`` pass."""
        stepper, val, gam = self.stepper, self.eval_split, chunk.gam
        eval_every, total, step0, k = self.cfg.data.eval_every, self.total, chunk.step0, chunk.k
        evals, diags = chunk.evals, chunk.diags
        d_on = monitor is not None and monitor.enabled
        d_every, d_ntk = (monitor.every, monitor.ntk_every) if d_on else (0, 0)
        if d_on:
            monitor.ready()
        cmds = interrupts.commands if interrupts is not None else None
        clock = time.perf_counter
        t0 = clock()
        i = 0
        while i < k:
            kk = step0 + i + 1
            if val is not None:
                if kk % eval_every == 0 or kk == 1 or kk == total:
                    evals.append((kk, stepper.eval_stats(val)))
            if d_on and (kk % d_every == 0 or (d_ntk and kk % d_ntk == 0)):
                diags.append(monitor.measure(kk, gam[i], self.lr))  # parameters before update kk
            stepper.step(i)
            i += 1
            if interrupts is not None:
                if cmds or interrupts.stop_requested:
                    break
                if not i & 63 and clock() - t0 > flush_seconds:
                    break
        chunk.n = i

    def finish_chunk(self, chunk: Chunk, raw: np.ndarray | None = None) -> ChunkResult:
        """The chunk's rows from its device statistics (one host sync), or from ``raw``
        (a stacked step's share); a diverged update and those after it are dropped.
        The schedule and ``step`` move past the kept updates."""
        i = chunk.n if raw is None else raw.shape[0]
        if raw is None:
            raw, evals = self.host_stats(self.stepper.buf[:i], chunk.evals)
        else:
            evals = chunk.evals
        rows = self.rows(chunk, raw)
        bad = ""
        if not (np.isfinite(rows[:, 1:3]).all() and np.isfinite(raw[:, 3 * self.C]).all()
                and self.stepper.params_finite()):
            i, bad = self.replay_until_divergence(chunk.snap, i)
            raw = self.host_stats(self.stepper.buf[:i], [])[0]
            rows = self.rows(chunk, raw)
        last = chunk.step0 + i
        evals = [(s, e) for s, e in evals if s <= last]
        diags = [d for d in chunk.diags if d[0] <= last]
        if self.dist is not None:
            self.dist.note_rows(rows, self.C)
        tail = self.schedule.advance(i)  # the update the plain-CE tail starts at, or 0
        self.step = last
        return ChunkResult(rows=rows, eval_rows=self.eval_rows(evals),
                           diag_rows=np.array(diags, dtype=np.float64) if diags else None,
                           kept=i, diverged=bad, static_tail_from=tail)

    def train_chunk(self, k: int, monitor=None, interrupts: Interrupts | None = None,
                    flush_seconds: float = 0.0) -> ChunkResult:
        chunk = self.plan_chunk(k)
        self.start_chunk(chunk)
        self.run_updates(chunk, monitor, interrupts, flush_seconds)
        return self.finish_chunk(chunk)

    # -- rows ---------------------------------------------------------------------------
    def host_stats(self, rows: torch.Tensor, evals: list[tuple[int, torch.Tensor]]
                   ) -> tuple[np.ndarray, list[tuple[int, torch.Tensor]]]:
        """The chunk's statistic rows on the host: one ``.cpu()`` (one process), or
        one all_reduce of rows and held-out sums over the ranks, then the ``.cpu()``."""
        if self.dist is None:
            return rows.cpu().numpy().astype(np.float64), evals
        return self.dist.reduce_chunk(rows, evals)

    def rows(self, chunk: Chunk, raw: np.ndarray) -> np.ndarray:
        n = raw.shape[0]
        return metric_rows(chunk.step0, raw, chunk.gam[:n], chunk.amp[:n], chunk.per[:n],
                           np.full(n, self.lr), self.C)

    def eval_rows(self, evals: list[tuple[int, torch.Tensor]]) -> np.ndarray | None:
        return eval_rows(evals, self.C)

    def replay_until_divergence(self, snap: dict, n: int) -> tuple[int, str]:
        """Redo the chunk's updates one by one from ``snap`` and stop before the
        first bad one: an update whose gradient is not finite, or whose resulting
        parameters, or the loss at them, are not.  Returns (good updates, why)."""
        st = self.stepper
        st.restore(snap)
        C = self.C
        prev: dict | None = None  # parameters before update j-1
        for j in range(n):
            before = st.snapshot()
            st.step(j)
            row = self.host_stats(st.buf[j: j + 1], [])[0][0]
            with np.errstate(invalid="ignore", over="ignore"):
                ce = -row[0:C].sum() / row[2 * C:3 * C].sum()
            if not np.isfinite(ce):  # the parameters update j-1 produced give a bad loss
                if prev is not None:
                    st.restore(prev)
                    return j - 1, f"it makes the loss {ce}"
                st.restore(before)
                return j, f"the loss is {ce}"
            why = ""
            if not np.isfinite(row[3 * C]):
                why = f"the gradient norm is {row[3 * C]}"
            elif not st.params_finite():
                why = "it makes the parameters non-finite"
            if why:
                st.restore(before)
                return j, why
            prev = before
        return n, "a non-finite value appeared"  # pragma: no cover - not reproducible
