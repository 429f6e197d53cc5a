"""The sweep engine: ``python -m dlf_tui.engine.loops.sweep SWEEP_DIR [--resume] [--mode M]``.

Trains every member of a sweep (``sweeps.py``) in this one process.  Each member
is an ``Engine`` without a socket (``serve=False``): its own config, model,
schedule, stepper, series files, events and checkpoints, so a member directory
is an ordinary run.  Three ways to drive them:

- ``threads`` (CPU, every member on the C kernel or the fused step): members are
  independent, so each round of updates runs each member's own stepper for ``k``
  updates in a thread pool.  The C kernel releases the GIL, so the members use
  every core; each member computes exactly what its single run computes (the
  same stepper code), bit for bit.
- ``batched`` (members of one architecture and data set: the GPU case, or where
  the C kernel is missing): one hand-written step for all members with their
  parameters stacked along a member axis (``ensemble_steps.BatchedMLPStep``),
  each with its own Γ row and learning rate; ``vmap`` is the same through
  ``torch.func`` (``functional_call`` + ``vmap(grad_and_value)``), for any model,
  slower.  Both equal separate runs to rounding (1e-9 in float64).
- ``sequential``: anything else (mini-batches, Adam, image models): one ordinary
  engine per member, one after another, each with its socket (attach and steer
  the member that is training).

Members are trained in rounds, so they progress together (the live heatmap
fills evenly); a round ends every ``ROUND_SECONDS``.  SIGTERM/SIGINT stops every
member after the current round (each checkpoints).  Landscape diagnostics are not
computed for ensemble members (one run at a time: ``dlf-tui run``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dlf_tui.store import run as runs, sweep as sweeps

log = logging.getLogger("dlf_tui.engine")

ROUND_SECONDS = 1.0  # target wall time of one round of updates over all members (each
# round costs every member a table, a flush and a state check: ~1.5 ms on the spiral)
MODES = ("auto", "threads", "batched", "vmap", "sequential")


def _write_sweep_state(sweep: sweeps.Sweep, state: str, **extra: Any) -> None:
    doc = {"state": state, "pid": os.getpid(), "members": len(sweep.members), **extra}
    if state in ("stopped", "finished", "crashed"):
        doc["ended"] = time.time()
    runs.write_json_atomic(sweep.file(runs.STATE), doc)


class Member:
    """One member: an Engine without a socket, plus its place in the round."""

    def __init__(self, engine, sweep_id: str):
        self.e = engine
        self.sweep_id = sweep_id
        self.done = engine.step >= engine.total
        self.reason = ""
        self.evals: list = []
        self.k = 0

    def write_state(self, state: str, reason: str = "") -> None:
        e = self.e
        doc = {"state": state, "pid": os.getpid(), "step": e.step, "total": e.total,
               "started": e.started, "reason": reason, "rate": round(e.rate, 1),
               "device": str(e.device), "sweep": self.sweep_id}
        if state in ("stopped", "finished", "crashed"):
            doc["ended"] = time.time()
        e.state = state
        runs.write_json_atomic(e.dir / runs.STATE, doc)

    # -- one round, threads mode (runs in a worker thread) ------------------------------
    def begin(self, k: int):
        import torch

        e = self.e
        self.k = k
        self.gam, self.amp, self.per = e.schedule.table(k)
        e.stepper.begin_chunk(torch.as_tensor(self.gam, dtype=e.dtype, device=e.device))
        self.snap = e.stepper.snapshot()
        self.evals = []

    def train(self) -> None:
        e, st, val = self.e, self.e.stepper, self.e.data.val
        every, total, step0 = e.cfg.data.eval_every, e.total, e.step
        for i in range(self.k):
            kk = step0 + i + 1
            if val is not None and (kk % every == 0 or kk == 1 or kk == total):
                self.evals.append((kk, st.eval_stats(val)))
            st.step(i)

    def finish_round(self, raw=None) -> None:
        """Rows from the round's statistics, divergence check, flush, schedule advance."""
        import numpy as np

        e, i = self.e, self.k
        if raw is None:
            raw = e.stepper.buf[:i].cpu().numpy().astype(np.float64)
        rows = e._rows(e.step, raw, self.gam, self.amp, self.per)
        bad = None
        if not (np.isfinite(rows[:, 1:3]).all() and np.isfinite(raw[:, 3 * e.C]).all()
                and e.stepper.params_finite()):
            i, bad = e._replay_until_divergence(self.snap, i)
            rows = rows[:i]  # the replay recomputes the same updates: keep the good ones
            self.evals = [(s, v) for s, v in self.evals if s <= e.step + i]
        e._flush(rows, self.evals)
        if e.schedule.advance(i):
            e.event("static_tail", f"last period: amplitude 1 (plain CE) from update "
                    f"{e.step + i + 1}", step=e.step + i + 1)
        e.step += i
        if bad is not None:
            self.stop("stopped", f"diverged: update {e.step + 1} refused ({bad}); "
                      f"the member stops at update {e.step}")
            e.event("diverged", self.reason, step=e.step + 1)
        elif e.step >= e.total:
            self.stop("finished")

    def stop(self, state: str, reason: str = "") -> None:
        e = self.e
        self.done, self.reason = True, reason
        e.checkpoint(state if state != "stopped" else "stop")
        if state == "finished":
            e.event("finish", f"finished {e.step} updates")
        elif not reason:
            e.event("stop", f"stopped after update {e.step}")
        self.write_state(state, reason)


def ensemble_ready(cfg) -> bool:
    """True if a member with this config can train in an ensemble (threads, batched, vmap):
    full-batch GD on an MLP over the spiral (what ``steppers.wants_fused`` accepts)."""
    from types import SimpleNamespace

    from dlf_tui.engine.steps import select as steppers

    return cfg.data.name == "spiral" and steppers.wants_fused(cfg, SimpleNamespace(image=None))


def choose_mode(members: list[Member], wanted: str = "auto") -> tuple[str, str]:
    """(mode, why) for members that are all ``ensemble_ready``."""
    from dlf_tui.engine.steps import ckernel

    es = [m.e for m in members]
    cpu = all(e.device.type == "cpu" for e in es)
    ck = cpu and all(isinstance(e.stepper, ckernel.CKernelMLPStep) for e in es)
    same = len({(repr(e.cfg.data), repr(e.cfg.model), e.cfg.run.dtype, str(e.device), e.step)
                for e in es}) == 1
    if wanted == "threads":
        if not cpu:
            raise ValueError("--mode threads: members must train on the CPU")
        return "threads", "forced"
    if wanted in ("batched", "vmap"):
        if not same:
            raise ValueError(f"--mode {wanted}: members must share model, data, dtype, device and step")
        return wanted, "forced"
    if ck:
        return "threads", "C kernel per member, members in parallel threads"
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
        self.members: list[Member] = []  # ensemble modes: the members being trained
        self.pending: list[sweeps.Member] = []  # members to train (all modes)
        self.mode, self.why = "", ""
        self.rate = 0.0

    # -- setup ------------------------------------------------------------------------
    def _todo(self) -> list[sweeps.Member]:
        """Members still to train (all, or the unfinished ones on resume)."""
        out = []
        for m in self.sweep.members:
            if self.resume and m.run.raw_state().get("state") == "finished":
                continue
            if self.resume and not self._has_checkpoint(m):
                for name in ("metrics", "eval", "diag"):  # never checkpointed: start afresh
                    for suffix in (".bin", ".json"):
                        (m.run.path / f"{name}{suffix}").unlink(missing_ok=True)
            out.append(m)
        return out

    @staticmethod
    def _has_checkpoint(m: sweeps.Member) -> bool:
        return any((m.run.path / runs.CHECKPOINTS).glob("step-*.pt"))

    def setup(self) -> None:
        from dlf_tui.engine.trainer import Engine, SetupError

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
                e = Engine(m.run.path, resume=self.resume and self._has_checkpoint(m), serve=False)
                self.members.append(Member(e, self.sweep.id))
            self.members = [m for m in self.members if not m.done]
            self.mode, self.why = choose_mode(self.members, self.wanted)
        log.info("sweep %s: %d members to train, mode %s (%s)", self.sweep.id, len(self.pending),
                 self.mode, self.why)

    def _state(self, state: str, reason: str = "") -> None:
        done, total = self.sweep.progress()
        _write_sweep_state(self.sweep, state, started=self.started, mode=self.mode, why=self.why,
                           reason=reason, rate=round(self.rate, 1), threads=self.threads,
                           done=done, total=total)

    def _install_signals(self) -> None:
        from dlf_tui.engine.trainer import on_stop_signals

        on_stop_signals(lambda: setattr(self, "stop_requested", True))

    # -- run --------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        self._state("running")
        try:
            if self.mode == "sequential":
                self._sequential()
            elif self.mode in ("threads", "batched", "vmap"):
                for m in self.members:
                    m.write_state("running")
                    m.e.event("start", f"started {m.e.cfg.name} in sweep {self.sweep.id} "
                              f"({self.mode}), update {m.e.step + 1} of {m.e.total}",
                              step=m.e.step + 1)
                (self._threads if self.mode == "threads" else self._stacked)()
        except BaseException as err:  # noqa: BLE001 - every failure ends up in state.json
            line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".strip()
            log.error("sweep engine crashed:\n%s", traceback.format_exc())
            for m in self.members:
                if not m.done:
                    m.e.event("error", f"sweep engine crashed at update {m.e.step}: {line}")
                    m.write_state("crashed", line)
            self._state("crashed", line)
            return 1
        stopped = self.stop_requested and any(
            m.run.raw_state().get("state") != "finished" for m in self.pending)
        for m in self.members:
            if not m.done:
                if self.mode in ("batched", "vmap"):
                    self._st.write_back(self.members.index(m))
                m.stop("stopped")
        self._state("stopped" if stopped else "finished")
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
                m.e.rate = self.rate / len(live)
            # aim the next round at ROUND_SECONDS (within the steppers' chunk size)
            cap = min(m.e.chunk_rows for m in live)
            k = int(max(16, min(cap, k * ROUND_SECONDS / max(dt, 1e-4))))
            if clock() - last_state > 1.0:
                last_state = clock()
                self._state("running")

    def _threads(self) -> None:
        import torch

        torch.set_num_threads(1)  # one core per member at a time: parallel over members

        def one(m: Member) -> None:  # a member's whole round, flush included, in a worker
            m.begin(m.k)
            m.train()
            m.finish_round()

        # flush-to-zero is a per-thread CPU mode: set it in every worker as the single-run
        # engine does in its one thread (same numbers; subnormals are up to 100x slower)
        with ThreadPoolExecutor(self.threads, thread_name_prefix="member",
                                initializer=torch.set_flush_denormal, initargs=(True,)) as pool:
            def step_round(live: list[Member], k: int) -> int:
                for m in live:
                    m.k = min(k, m.e.total - m.e.step)
                # longest first: the pool stays busy to the end of the round
                for f in [pool.submit(one, m) for m in sorted(live, key=lambda m: -m.k)]:
                    f.result()
                return sum(m.k for m in live)

            self._rounds(step_round)

    def _stacked(self) -> None:
        """Every member in one stacked step (``batched`` or ``vmap``), in lockstep."""
        import numpy as np
        import torch

        from dlf_tui.engine.steps.stacked import BatchedMLPStep, VmapStep

        es = [m.e for m in self.members]
        cls = VmapStep if self.mode == "vmap" else BatchedMLPStep
        st = self._st = cls(es, max(e.chunk_rows for e in es))
        val = es[0].data.val
        every = es[0].cfg.data.eval_every
        C = st.C

        def step_round(live: list[Member], k: int) -> int:
            # finished members stay in the stack with lr 0; k stops at the nearest end
            k = min([k, st.rows] + [m.e.total - m.e.step for m in live])
            tabs = []
            for m in self.members:
                if m.done:
                    tabs.append(np.ones((k, C)))
                    continue
                m.k, m.evals = k, []
                m.gam, m.amp, m.per = m.e.schedule.table(k)
                tabs.append(m.gam[:k])
            st.set_lrs([0.0 if m.done else m.e.lr for m in self.members])
            st.begin_round(torch.as_tensor(np.stack(tabs, 1), dtype=st.dtype, device=st.device))
            snap = st.snapshot()
            step0 = live[0].e.step  # the members of a stacked step stay in lockstep
            for i in range(k):
                kk = step0 + i + 1
                due = [m for m in live if kk % every == 0 or kk == 1 or kk == m.e.total]
                if val is not None and due:
                    S = st.eval_stats(val)
                    for m in due:
                        m.evals.append((kk, S[self.members.index(m)]))
                st.step(i)
            raw = st.buf[:k].cpu().numpy().astype(np.float64)  # the one host sync per round
            ok = st.params_finite().cpu().numpy()
            for m in live:
                j = self.members.index(m)
                r = raw[:, j]
                if ok[j] and np.isfinite(r).all():
                    if m.e.step + k >= m.e.total:
                        st.write_back(j)  # its checkpoint comes next
                    m.finish_round(r)
                else:
                    self._diverged_in_stack(m, j, snap, r)
            return k * len(live)

        self._rounds(step_round)

    def _diverged_in_stack(self, m: Member, j: int, snap: list, raw) -> None:
        """Keep the member's finite prefix of the round, put its parameters back to the
        round's start, and stop it: one member of a stacked step cannot be replayed
        alone, so its checkpoint is the round's start (a resume redoes the prefix)."""
        import numpy as np

        good = 0
        while good < raw.shape[0] and np.isfinite(raw[good]).all():
            good += 1
        good = max(0, good - 1)  # the row before the first bad one may hold bad parameters
        self._st.restore_member(j, snap)
        self._st.write_back(j)
        start = m.e.step
        rows = m.e._rows(start, raw[:good], m.gam, m.amp, m.per)
        m.e._flush(rows, [(s, v) for s, v in m.evals if s <= start + good])
        m.e.schedule.advance(good)
        m.e.step += good
        m.stop("stopped", f"diverged within updates {start + 1}..{start + m.k}: the member "
                          f"stops (its checkpoint holds the parameters of update {start})")
        m.e.event("diverged", m.reason, step=m.e.step + 1)

    def _sequential(self) -> None:
        """One ordinary engine per member (with its socket), one after another."""
        from dlf_tui.engine.trainer import Engine

        for m in self.pending:
            if self.stop_requested:
                break
            e = Engine(m.run.path, resume=self.resume and self._has_checkpoint(m), serve=True)
            self._state("running", f"training {m.id}")
            try:
                e.run()  # handles SIGTERM itself from here (it checkpoints and stops)
            finally:
                e.close()
            self._install_signals()
            if e.stop_requested and e.step < e.total:
                self.stop_requested = True

    def close(self) -> None:
        for m in self.members:
            try:
                m.e.close()
            except Exception:  # noqa: BLE001 - closing files at exit
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlf_tui.engine.loops.sweep")
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--resume", action="store_true", help="continue unfinished members")
    ap.add_argument("--mode", choices=MODES, default=os.environ.get("DLF_TUI_SWEEP_MODE", "auto"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    path: Path = args.sweep_dir
    if not sweeps.is_sweep(path):
        print(f"error: {path}: not a sweep directory (no {sweeps.SWEEP})", file=sys.stderr)
        return 2
    logging.basicConfig(filename=path / runs.LOG, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        sweep = sweeps.Sweep(path)
    except runs.RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _write_sweep_state(sweep, "starting", started=time.time())
    from dlf_tui.engine.trainer import SetupError  # torch is imported here, after the cheap checks

    eng = SweepEngine(path, resume=args.resume, mode=args.mode, threads=args.threads)
    try:
        eng.setup()
    except (SetupError, runs.RunError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.error("cannot start: %s", reason)
        print(f"error: {reason}", file=sys.stderr, flush=True)
        _write_sweep_state(sweep, "crashed", reason=reason)
        eng.close()
        return 2
    try:
        return eng.run()
    finally:
        eng.close()


if __name__ == "__main__":
    sys.exit(main())
