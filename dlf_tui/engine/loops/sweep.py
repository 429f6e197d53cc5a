"""The sweep engine: ``python -m dlf_tui.engine SWEEP_DIR [--resume] [--mode M]``.

Trains every member of a sweep (``store/sweep.py``) in this one process.  Each
member is a ``MemberRun``: its own Trainer and Recorder without a socket (config,
model, schedule, stepper, series files, events and checkpoints), so a member
directory is an ordinary run.  Three ways to drive them:

- ``threads`` (CPU, every member on the C kernel or the fused step): members are
  independent, so each round of updates runs each member's own stepper for ``k``
  updates in a thread pool.  The C kernel releases the GIL, so the members use
  every core; each member computes exactly what its single run computes (the
  same stepper code), bit for bit.
- ``batched`` (members of one architecture and data set: the GPU case, or where
  the C kernel is missing): one hand-written step for all members with their
  parameters stacked along a member axis (``steps/stacked.BatchedMLPStep``),
  each with its own Γ row and learning rate; ``vmap`` is the same through
  ``torch.func`` (``functional_call`` + ``vmap(grad_and_value)``), for any model,
  slower.  Both equal separate runs to rounding (1e-9 in float64).
- ``sequential``: anything else (mini-batches, Adam, image models): one ordinary
  engine per member, one after another, each with its socket (attach and steer
  the member that is training).

``run_member`` trains one member in a process of its own: a cluster job
(``loops/executors.py``), resuming from the member's last checkpoint if it has one.

Members are trained in rounds, so they progress together (the live heatmap
fills evenly); a round ends every ``ROUND_SECONDS``.  SIGTERM/SIGINT stops every
member after the current round (each checkpoints).  Landscape diagnostics are not
computed for ensemble members (one run at a time: ``dlf-tui run``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from dlf_tui.core import config, series, states
from dlf_tui.core.errors import SetupError, one_line
from dlf_tui.engine.loops.single import SingleRun
from dlf_tui.engine.recorder import Recorder
from dlf_tui.engine.runtime import on_stop_signals
from dlf_tui.engine.steps import ckernel
from dlf_tui.engine.steps import select as steppers
from dlf_tui.engine import data as datamod
from dlf_tui.engine import models
from dlf_tui.engine.steps.stacked import BatchedMLPStep, VmapStep
from dlf_tui.engine.trainer import Chunk, Trainer
from dlf_tui.store import run as runs, sweep as sweeps

log = logging.getLogger("dlf_tui.engine")

ROUND_SECONDS = 1.0  # target wall time of one round of updates over all members (each
# round costs every member a table, a flush and a state check)


class MemberRun:
    """One member being trained: its Trainer and Recorder (no socket), and its
    place in the round."""

    def __init__(self, run_dir: Path, sweep_id: str, resume: bool):
        self.dir = Path(run_dir)
        self.trainer = tr = Trainer.open(self.dir, resume=resume)
        self.cfg = cfg = tr.cfg
        self.sweep_id = sweep_id
        self.rate = 0.0
        self.recorder = Recorder(self.dir, tr.C, cfg.diagnostics.k, status=self.status,
                                 config_toml=config.to_toml(cfg), loss=cfg.loss.kind)
        if resume:
            path = self.recorder.latest_checkpoint()
            self.recorder.load_checkpoint(path, tr.parts(), tr.device)
            self.recorder.event("resume", f"resumed from {path.name} at update {tr.step}",
                                rewound_to=tr.step)
        self.done = tr.step >= tr.total
        self.reason = ""
        self.chunk: Chunk | None = None
        self.k = 0

    def status(self) -> dict[str, Any]:
        tr = self.trainer
        return {"step": tr.step, "total": tr.total, "rate": self.rate, "device": str(tr.device),
                "sweep": self.sweep_id}

    def checkpoint(self, reason: str) -> Path:
        return self.recorder.checkpoint(self.trainer.step, self.trainer.parts(), reason)

    # -- one round, threads mode (runs in a worker thread) ------------------------------
    def begin(self, k: int) -> None:
        self.k = k
        self.chunk = self.trainer.plan_chunk(k)

    def train(self) -> None:
        self.trainer.start_chunk(self.chunk)
        self.trainer.run_updates(self.chunk)

    def finish_round(self, raw=None) -> None:
        """The round's rows (from the member's stepper, or ``raw`` from a stacked
        step), recorded; a divergence stops the member."""
        tr = self.trainer
        result = tr.finish_chunk(self.chunk, raw)
        self.recorder.record(result)
        if result.diverged:
            self.stop(states.STOPPED, f"diverged: update {tr.step + 1} refused "
                      f"({result.diverged}); the member stops at update {tr.step}")
            self.recorder.event("diverged", self.reason, step=tr.step + 1)
        elif tr.step >= tr.total:
            self.stop(states.FINISHED)

    def stop(self, state: str, reason: str = "") -> None:
        tr = self.trainer
        self.done, self.reason = True, reason
        self.checkpoint(state if state != states.STOPPED else "stop")
        if state == states.FINISHED:
            self.recorder.event("finish", f"finished {tr.step} updates")
        elif not reason:
            self.recorder.event("stop", f"stopped after update {tr.step}")
        self.recorder.write_state(state, reason)


def ensemble_ready(cfg) -> bool:
    """True if a member with this config can train in an ensemble (threads, batched, vmap):
    full-batch GD on an MLP over vector data: the spiral, MNIST-1D, digits (what
    ``steppers.wants_fused`` accepts); or full-batch GD on the user's own model or data
    (threads, or one vmapped step when the members share them)."""
    if models.is_user_model(cfg.model) or datamod.is_user_data(cfg.data):
        o, r = cfg.optim, cfg.run
        return (o.name == "gd" and o.weight_decay == 0 and cfg.data.batch_size == 0
                and r.amp == "off" and not r.compile)
    return (cfg.data.name in ("spiral", *datamod.VECTOR_SETS)
            and steppers.wants_fused(cfg, SimpleNamespace(image=None)))


def choose_mode(members: list[MemberRun], wanted: str = "auto") -> tuple[str, str]:
    """(mode, why) for members that are all ``ensemble_ready``."""
    ts = [m.trainer for m in members]
    cpu = all(t.device.type == "cpu" for t in ts)
    ck = cpu and all(isinstance(t.stepper, ckernel.CKernelMLPStep) for t in ts)
    same = len({(repr(t.cfg.data), repr(t.cfg.model), repr(t.cfg.loss), t.cfg.run.dtype,
                 str(t.device), t.step)
                for t in ts}) == 1
    if wanted == "threads":
        if not cpu:
            raise ValueError("--mode threads: members must train on the CPU")
        return "threads", "forced"
    mlp = all(type(t.model) is models.MLP for t in ts)  # what the batched step writes out
    if wanted in ("batched", "vmap"):
        if not same:
            raise ValueError(f"--mode {wanted}: members must share model, data, loss, dtype, device and step")
        if wanted == "batched" and not mlp:
            raise ValueError("--mode batched: needs the built-in MLP (use --mode vmap for your own model)")
        return wanted, "forced"
    if ck:
        return "threads", "C kernel per member, members in parallel threads"
    if same and not mlp:
        return "vmap", "your own model: one vmapped step (torch.func) for all members"
    if same:
        return "batched", "one batched step for all members"
    return "threads", "members differ in shape: each its own stepper, in parallel threads"


class SweepEngine:
    def __init__(self, path: Path, resume: bool = False, mode: str = "auto",
                 threads: int | None = None):
        self.sweep = sweeps.Sweep(path)
        self.resume = resume
        self.wanted = mode
        self.threads = threads or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                      else (os.cpu_count() or 1))
        self.stop_requested = False
        self.started = time.time()
        self.members: list[MemberRun] = []  # ensemble modes: the members being trained
        self.pending: list[sweeps.Member] = []  # members to train (all modes)
        self.mode, self.why = "", ""
        self.rate = 0.0

    # -- setup ------------------------------------------------------------------------
    def _todo(self) -> list[sweeps.Member]:
        """Members still to train (all, or the unfinished ones on resume; those never
        checkpointed start afresh)."""
        return [m for m, _ in self.sweep.todo(self.resume)]

    @staticmethod
    def _has_checkpoint(m: sweeps.Member) -> bool:
        return any((m.run.path / runs.CHECKPOINTS).glob("step-*.pt"))

    def setup(self) -> None:
        self.pending = self._todo()
        self.why = ""
        if not self.pending:
            self.mode, self.why = "none", "nothing left to train"
            return
        cfgs = []
        for m in self.pending:
            try:
                cfgs.append(m.run.config())
            except Exception as err:  # noqa: BLE001 - ConfigError: one line
                raise SetupError(f"{m.id}: {err}") from None
        if self.wanted == "sequential" or not all(ensemble_ready(c) for c in cfgs):
            if self.wanted in ("threads", "batched", "vmap"):
                raise SetupError(f"--mode {self.wanted}: every member must be full-batch GD on a "
                                 "spiral MLP")
            self.mode = "sequential"
            self.why = ("forced" if self.wanted == "sequential" else
                        "members need the general (autograd) path: one after another")
        else:
            for m in self.pending:
                self.members.append(MemberRun(m.run.path, self.sweep.id,
                                              resume=self.resume and self._has_checkpoint(m)))
            self.members = [m for m in self.members if not m.done]
            self.mode, self.why = choose_mode(self.members, self.wanted)
        log.info("sweep %s: %d members to train, mode %s (%s)", self.sweep.id, len(self.pending),
                 self.mode, self.why)

    def _state(self, state: str, reason: str = "") -> None:
        done, total = self.sweep.progress()
        sweeps.write_state(self.sweep, state, started=self.started, mode=self.mode, why=self.why,
                           reason=reason, rate=round(self.rate, 1), threads=self.threads,
                           done=done, total=total)

    def _install_signals(self) -> None:
        on_stop_signals(lambda: setattr(self, "stop_requested", True))

    # -- run --------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        self._state(states.RUNNING)
        try:
            if self.mode == "sequential":
                self._sequential()
            elif self.mode in ("threads", "batched", "vmap"):
                for m in self.members:
                    tr = m.trainer
                    m.recorder.write_state(states.RUNNING)
                    m.recorder.event("start", f"started {m.cfg.name} in sweep {self.sweep.id} "
                                     f"({self.mode}), update {tr.step + 1} of {tr.total}",
                                     step=tr.step + 1)
                (self._threads if self.mode == "threads" else self._stacked)()
        except BaseException as err:  # noqa: BLE001 - every failure ends up in state.json
            line = one_line(err)
            log.error("sweep engine crashed:\n%s", traceback.format_exc())
            for m in self.members:
                if not m.done:
                    m.recorder.event("error", f"sweep engine crashed at update "
                                     f"{m.trainer.step}: {line}")
                    m.recorder.write_state(states.CRASHED, line)
            self._state(states.CRASHED, line)
            return 1
        stopped = self.stop_requested and any(
            m.run.raw_state().get("state") != states.FINISHED for m in self.pending)
        for m in self.members:
            if not m.done:
                if self.mode in ("batched", "vmap"):
                    self._st.write_back(self.members.index(m))
                m.stop(states.STOPPED)
        self._state(states.STOPPED if stopped else states.FINISHED)
        return 0

    def _rounds(self, step_round) -> None:
        """Rounds of k updates per member until every member is done or a stop."""
        k, clock = 64, time.perf_counter
        busy_n, busy_s = 0, 0.0
        last_state = clock()
        while not self.stop_requested:
            live = [m for m in self.members if not m.done]
            if not live:
                return
            t0 = clock()
            n = step_round(live, k)
            dt = clock() - t0
            busy_n += n
            busy_s += dt
            self.rate = busy_n / max(busy_s, 1e-9)
            for m in live:
                m.rate = self.rate / len(live)
            # aim the next round at ROUND_SECONDS (within the steppers' chunk size)
            cap = min(m.trainer.chunk_rows for m in live)
            k = int(max(16, min(cap, k * ROUND_SECONDS / max(dt, 1e-4))))
            if clock() - last_state > 1.0:
                last_state = clock()
                self._state(states.RUNNING)

    def _threads(self) -> None:
        torch.set_num_threads(1)  # one core per member at a time: parallel over members

        def one(m: MemberRun) -> None:  # a member's whole round, recording included, in a worker
            m.begin(m.k)
            m.train()
            m.finish_round()

        # flush-to-zero is a per-thread CPU mode: set it in every worker as the single-run
        # engine does in its one thread (same numbers; subnormals are much slower)
        with ThreadPoolExecutor(self.threads, thread_name_prefix="member",
                                initializer=torch.set_flush_denormal, initargs=(True,)) as pool:
            def step_round(live: list[MemberRun], k: int) -> int:
                for m in live:
                    m.k = min(k, m.trainer.total - m.trainer.step)
                # longest first: the pool stays busy to the end of the round
                for f in [pool.submit(one, m) for m in sorted(live, key=lambda m: -m.k)]:
                    f.result()
                return sum(m.k for m in live)

            self._rounds(step_round)

    def _stacked(self) -> None:
        """Every member in one stacked step (``batched`` or ``vmap``), in lockstep."""
        ts = [m.trainer for m in self.members]
        cls = VmapStep if self.mode == "vmap" else BatchedMLPStep
        st = self._st = cls(ts, max(t.chunk_rows for t in ts))
        val = ts[0].data.val
        every = ts[0].cfg.data.eval_every
        C = st.C

        def step_round(live: list[MemberRun], k: int) -> int:
            # finished members stay in the stack with lr 0; k stops at the nearest end
            k = min([k, st.rows] + [m.trainer.total - m.trainer.step for m in live])
            tabs = []
            for m in self.members:
                if m.done:
                    tabs.append(np.ones((k, C)))
                    continue
                m.begin(k)
                tabs.append(m.chunk.gam[:k])
            st.set_lrs([0.0 if m.done else m.trainer.lr for m in self.members])
            st.begin_round(torch.as_tensor(np.stack(tabs, 1), dtype=st.dtype, device=st.device))
            snap = st.snapshot()
            step0 = live[0].trainer.step  # the members of a stacked step stay in lockstep
            for i in range(k):
                kk = step0 + i + 1
                due = [m for m in live if kk % every == 0 or kk == 1 or kk == m.trainer.total]
                if val is not None and due:
                    S = st.eval_stats(val)
                    for m in due:
                        m.chunk.evals.append((kk, S[self.members.index(m)]))
                st.step(i)
            raw = st.buf[:k].cpu().numpy().astype(np.float64)  # the one host sync per round
            ok = st.params_finite().cpu().numpy()
            for m in live:
                j = self.members.index(m)
                r = raw[:, j]
                if ok[j] and np.isfinite(r).all():
                    if m.trainer.step + k >= m.trainer.total:
                        st.write_back(j)  # its checkpoint comes next
                    m.finish_round(r)
                else:
                    self._diverged_in_stack(m, j, snap, r)
            return k * len(live)

        self._rounds(step_round)

    def _diverged_in_stack(self, m: MemberRun, j: int, snap: list, raw: np.ndarray) -> None:
        """Keep the member's finite prefix of the round, put its parameters back to the
        round's start, and stop it: one member of a stacked step cannot be replayed
        alone, so its checkpoint is the round's start (a resume redoes the prefix)."""
        good = 0
        while good < raw.shape[0] and np.isfinite(raw[good]).all():
            good += 1
        good = max(0, good - 1)  # the row before the first bad one may hold bad parameters
        self._st.restore_member(j, snap)
        self._st.write_back(j)
        tr = m.trainer
        start = tr.step
        m.recorder.record(tr.finish_chunk(m.chunk, raw[:good]))
        m.stop(states.STOPPED, f"diverged within updates {start + 1}..{start + m.k}: the member "
                               f"stops (its checkpoint holds the parameters of update {start})")
        m.recorder.event("diverged", m.reason, step=tr.step + 1)

    def _sequential(self) -> None:
        """One ordinary engine per member (with its socket), one after another."""
        for m in self.pending:
            if self.stop_requested:
                break
            run = SingleRun(m.run.path, resume=self.resume and self._has_checkpoint(m), serve=True)
            self._state(states.RUNNING, f"training {m.id}")
            try:
                run.run()  # handles SIGTERM itself from here (it checkpoints and stops)
            finally:
                run.close()
            self._install_signals()
            if run.control.stop_requested and run.trainer.step < run.trainer.total:
                self.stop_requested = True

    def close(self) -> None:
        for m in self.members:
            try:
                m.recorder.close()
            except Exception:  # noqa: BLE001 - closing files at exit
                pass


# ---------------------------------------------------------------------------
# One member in a job of its own (``loops/executors.py``: Slurm, submitit's local executor)
# ---------------------------------------------------------------------------


class _JobMember(SingleRun):
    """A member trained by a cluster job: an ordinary engine whose ``state.json`` also
    says which sweep, host and job it belongs to (its pid means something there only)."""

    def __init__(self, run_dir: Path, resume: bool, serve: bool, sweep_id: str):
        self._where = {"sweep": sweep_id, "host": socket.gethostname(),
                       "job": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "")}
        super().__init__(run_dir, resume=resume, serve=serve)

    def status(self) -> dict[str, Any]:
        return {**super().status(), **self._where}


def run_member(path: Path, sweep_id: str, serve: bool = False) -> int:
    """Train one member in this process until it ends: from its last checkpoint when it
    has one (a resubmitted, requeued or preempted job continues), else from update 1.
    SIGTERM (Slurm's cancel, preemption, time limit) and SIGUSR2 (submitit's warning
    before the time limit) stop it with a checkpoint.  Exit status as the engine's."""
    from dlf_tui.store import liveness

    run = runs.Run(path)
    if run.raw_state().get("state") == states.FINISHED:
        return 0
    handler = logging.FileHandler(path / runs.LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    resume = any((path / runs.CHECKPOINTS).glob("step-*.pt"))
    if not resume:
        for name in series.SERIES:  # rows never checkpointed: start afresh
            for suffix in (".bin", ".json"):
                (path / f"{name}{suffix}").unlink(missing_ok=True)
    runs.write_json_atomic(path / runs.STATE, {
        "state": states.STARTING, "pid": os.getpid(), "pid_start": liveness.process_start(os.getpid()),
        "started": time.time(), "sweep": sweep_id, "host": socket.gethostname()})
    try:
        engine = _JobMember(path, resume, serve, sweep_id)
    except Exception as err:  # noqa: BLE001 - every failure ends up in state.json
        reason = one_line(err) if not isinstance(err, (SetupError, OSError)) else str(err)
        log.error("cannot start: %s", reason)
        runs.write_json_atomic(path / runs.STATE, {
            "state": states.CRASHED, "pid": os.getpid(), "reason": reason, "ended": time.time(),
            "sweep": sweep_id, "host": socket.gethostname()})
        return 2
    if hasattr(signal, "SIGUSR2"):  # submitit: the time limit is near (--signal=USR2@…)
        signal.signal(signal.SIGUSR2, lambda _s, _f: engine.control.request_stop())
    try:
        return engine.run()
    finally:
        engine.close()
        log.removeHandler(handler)
        handler.close()
