"""The engine: the hot loop, metric flushes, live commands and checkpoints.

Per update the loop costs the stepper's tensor ops plus two Python checks (a
queued command? time to flush?).  Statistics stay on the device; a flush does
one ``.cpu()`` of the chunk (plus one for held-out evaluations), turns the raw
sums into columns, appends them to the run directory and publishes them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dlf_tui.core import config as cfgmod
from dlf_tui.wire import protocol
from dlf_tui.store import run as runs
from dlf_tui.engine import data as datamod
from dlf_tui.engine import models
from dlf_tui.engine.steps import select as steppers
from dlf_tui.core.schedule import Schedule
from dlf_tui.wire.server import ControlServer, NullServer
from dlf_tui.core.errors import SetupError
from dlf_tui.core.series import diag_columns, eval_columns, metric_columns

log = logging.getLogger("dlf_tui.engine")

CHECKPOINT_VERSION = 1




def on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM/SIGINT call ``stop`` (the loop then checkpoints and ends); a hang-up
    of the terminal that started the engine is ignored."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SetupError(f"run.device = {name}: CUDA is not available on this machine (use cpu or auto)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SetupError(f"run.device = {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    return torch.device(name)


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


class Engine:
    def __init__(self, run_dir: Path, resume: bool = False, serve: bool = True, dist=None):
        """``serve=False``: no control socket (a sweep member, driven by ``ensemble.py``).
        ``dist``: this process is rank 0 of a run across several processes
        (a ``distributed.Group``; ranks > 0 are ``distributed.Worker``)."""
        self.dir = Path(run_dir)
        self.dist = dist
        self.run_info = runs.Run(self.dir)
        try:
            self.cfg = cfgmod.load(self.dir / runs.CONFIG)
        except cfgmod.ConfigError as err:
            raise SetupError(str(err)) from None
        cfg = self.cfg
        self.device = resolve_device(cfg.run.device) if dist is None else dist.device
        self.dtype = torch.float64 if cfg.run.dtype == "float64" else torch.float32
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        elif dist is not None and self.device.type == "cpu":  # the ranks share the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world))
        # Subnormal floats (e.g. exp of a very negative log-probability) are up to
        # 100× slower on x86 and change nothing measurable: flush them to zero.
        torch.set_flush_denormal(True)
        torch.manual_seed(cfg.run.seed)

        self.data = datamod.load(cfg.data, self.device, self.dtype)
        C = self.data.classes
        self.C = C
        self.model = models.build(cfg.model, self.data.in_features, C, cfg.run.seed,
                                  self.device, self.dtype)
        self._eval_split = self.data.val  # held-out rows this process evaluates
        if dist is not None:
            self.model = dist.prepare(self.model, cfg, self.data)
            self._eval_split = dist.shard_split(self.data.val)
        self.chunk_rows = steppers.chunk_rows(cfg, self.data)
        self.stepper = steppers.make(cfg, self.model, self.data, self.chunk_rows, group=dist)
        log.info("stepper: %s on %s, %s, %d threads", type(self.stepper).__name__, self.device,
                 cfg.run.dtype, torch.get_num_threads())
        s = cfg.schedule
        self.schedule = Schedule.create(s.kind, s.amplitude, s.period, C, cfg.run.steps,
                                        s.last_period_static)
        self.lr = cfg.optim.lr
        self.total = cfg.run.steps
        self.step = 0
        self.paused = False
        self.stop_requested = False
        self.state = "starting"
        self.rate = 0.0
        self.started = time.time()
        self._first_chunk, self._busy_n, self._busy_s = True, 0, 0.0  # the steady rate
        self._open_outputs()
        self.diag = None  # the Diagnostics helper, made when first enabled
        self.diag_opts = {"enabled": cfg.diagnostics.enabled, "every": cfg.diagnostics.every,
                          "ntk_every": cfg.diagnostics.ntk_every}
        self._eos_above: bool | None = None  # which side of 2/η λ_max has settled on
        self._eos_pending: list[tuple[int, float]] = []
        # test hook: raise inside the loop once this update is reached (crash handling tests)
        self._fault_at = int(os.environ.get("DLF_TUI_FAULT_AT_STEP", "0") or 0)
        (self.dir / runs.CHECKPOINTS).mkdir(exist_ok=True)
        if resume:
            self._resume()
        elif self.metrics.rows:
            raise SetupError(f"{self.dir} already holds {self.metrics.rows} updates; use resume")
        self.server = (ControlServer(self.dir / runs.SOCKET, self.hello, self._refused) if serve
                       else NullServer())

    def _open_outputs(self) -> None:
        """The run directory's series files and event log (rank 0 of a distributed
        run only: the other ranks write nothing there but their ``rank-R.json``)."""
        C, k = self.C, self.cfg.diagnostics.k
        self.metrics = runs.SeriesWriter(self.dir, "metrics", metric_columns(C))
        self.evals = runs.SeriesWriter(self.dir, "eval", eval_columns(C))
        self.diags = runs.SeriesWriter(self.dir, "diag", diag_columns(k))
        self.events = open(self.dir / runs.EVENTS, "a", encoding="utf-8")

    # -- facts for clients ---------------------------------------------------------
    def params(self) -> dict[str, Any]:
        s = self.schedule.s
        return {"amplitude": s.amplitude, "amplitude_now": self.schedule.amplitude,
                "period": s.period, "lr": self.lr, "kind": s.kind, "phase": s.t,
                "emphasized": s.c, "static_tail": s.static_tail, "step": self.step,
                "total": self.total, "device": str(self.device),
                "diagnostics": self.diag_opts["enabled"],
                "diagnostics_every": self.diag_opts["every"],
                "ntk_every": self.diag_opts["ntk_every"]}

    def hello(self) -> protocol.Hello:
        return protocol.Hello(
            run_id=self.dir.name, config=cfgmod.to_dict(self.cfg), state=self.state,
            params=self.params(), metrics_columns=self.metrics.columns,
            eval_columns=self.evals.columns, metrics_rows=self.metrics.rows,
            eval_rows=self.evals.rows, diag_columns=self.diags.columns, diag_rows=self.diags.rows)

    def event(self, kind: str, message: str, step: int | None = None, **extra: Any) -> None:
        ev = {"step": self.step if step is None else step, "time": round(time.time(), 3),
              "kind": kind, "message": message, **extra}
        self.events.write(json.dumps(ev) + "\n")
        self.events.flush()
        level = "error" if kind in ("error", "crashed") else "warning" if kind == "refused" else "info"
        log.log(logging.ERROR if level == "error" else logging.INFO, "[%s] %s", kind, message)
        if hasattr(self, "server"):
            self.server.broadcast(protocol.Log(level=level, message=message, step=ev["step"],
                                               kind=kind))

    def _refused(self, reason: str) -> None:
        # called from the server thread for commands that failed validation
        self.event("refused", f"refused command: {reason}")

    def _write_state(self, state: str, reason: str = "") -> None:
        self.state = state
        doc = {"state": state, "pid": os.getpid(), "step": self.step, "total": self.total,
               "started": self.started, "reason": reason, "rate": round(self.rate, 1),
               "device": str(self.device)}
        if self.dist is not None:
            doc["nproc"], doc["ranks"] = self.dist.world, self.dist.pids()
        if state in ("stopped", "finished", "crashed"):
            doc["ended"] = time.time()
        runs.write_json_atomic(self.dir / runs.STATE, doc)
        if hasattr(self, "server"):
            self.server.broadcast(protocol.State(state=state, step=self.step, total=self.total,
                                                 rate=self.rate, reason=reason))

    # -- commands ----------------------------------------------------------------------
    def _apply_commands(self) -> None:
        q = self.server.commands
        while q:
            cid, cmd = q.popleft()
            try:
                data = self._apply(cmd)
            except cfgmod.ConfigError as err:
                self.event("refused", f"refused {cmd.type}: {err}")
                self.server.reply(cid, protocol.Reply(id=cmd.id, ok=False, error=str(err)))
                continue
            self.server.reply(cid, protocol.Reply(id=cmd.id, ok=True, data=data or {}))

    def _apply(self, cmd: protocol.Command) -> dict | None:
        if isinstance(cmd, protocol.Set):
            return self.set_params(cmd.values, source="client")
        if isinstance(cmd, protocol.Pause):
            if not self.paused:
                self.paused = True
                self.event("pause", f"paused after update {self.step}")
                self._write_state("paused")
            return {"state": "paused"}
        if isinstance(cmd, protocol.Resume):
            if self.paused:
                self.paused = False
                self.event("resume", f"resumed at update {self.step + 1}", step=self.step + 1)
                self._write_state("running")
            return {"state": "running"}
        if isinstance(cmd, protocol.Stop):
            self.stop_requested = True
            return {"state": "stopping"}
        if isinstance(cmd, protocol.Checkpoint):
            return {"path": str(self.checkpoint("request"))}
        if isinstance(cmd, protocol.Rollback):
            return self.rollback()
        raise cfgmod.ConfigError(f"unsupported command {cmd.type!r}")  # pragma: no cover

    def set_params(self, values: dict[str, Any], source: str = "client") -> dict:
        """Apply live edits between updates; they take effect from update step+1."""
        before = self.params()
        changes = {}
        for name, value in values.items():
            value = cfgmod.check_live(name, value)
            if name == "amplitude":
                if self.schedule.s.static_tail:
                    # an explicit edit ends the automatic plain-CE tail
                    self.schedule.s.static_tail = False
                    self.schedule.s.last_period_static = False
                self.schedule.set_amplitude(value)
            elif name == "period":
                self.schedule.set_period(value)
            elif name == "lr":
                self.lr = value
                self.stepper.set_lr(value)
            else:  # diagnostics, diagnostics_every, ntk_every
                key = {"diagnostics": "enabled", "diagnostics_every": "every"}.get(name, name)
                self.diag_opts[key] = value
                if self.diag is not None:
                    self.diag.configure(**self.diag_opts)
            changes[name] = value
        after = self.params()
        text = ", ".join(f"{k} {before[k]} → {after[k]}" if isinstance(after[k], bool)
                         else f"{k} {before[k]:g} → {after[k]:g}" for k in changes)
        self.event("set", text, step=self.step + 1, changes=changes,
                   phase=after["phase"], emphasized=after["emphasized"], source=source)
        self.server.broadcast(protocol.ParamsChanged(step=self.step + 1, changes=changes,
                                                     params=after, source=source))
        return {"params": after}

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, reason: str) -> Path:
        path = self.dir / runs.CHECKPOINTS / f"step-{self.step:09d}.pt"
        state = {
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.stepper.optimizer_state(),
            "schedule": self.schedule.state_dict(),
            "lr": self.lr,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None},
            "metrics_rows": self.metrics.rows,
            "eval_rows": self.evals.rows,
            "diag_rows": self.diags.rows,
            "config": cfgmod.to_toml(self.cfg),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self.event("checkpoint", f"checkpoint at update {self.step} ({reason}): {path.name}",
                   path=str(path))
        return path

    def _latest_checkpoint(self) -> Path:
        ckpts = sorted((self.dir / runs.CHECKPOINTS).glob("step-*.pt"))
        if not ckpts:
            raise cfgmod.ConfigError(f"{self.dir.name}: no checkpoint yet")
        return ckpts[-1]

    def _load_checkpoint(self, path: Path) -> None:
        """Restore everything a checkpoint holds and cut the series files back to it."""
        st = torch.load(path, map_location=self.device, weights_only=False)
        if st.get("version") != CHECKPOINT_VERSION:
            raise SetupError(f"{path}: unsupported checkpoint version {st.get('version')}")
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(st["model"][k])  # in place: the fused stepper's views stay valid
        self.stepper.load_optimizer_state(st["optimizer"])
        self.schedule = Schedule.from_state_dict(st["schedule"])
        self.schedule.set_total(self.total)
        self.lr = st["lr"]
        self.stepper.set_lr(self.lr)
        self.step = st["step"]
        torch.set_rng_state(st["rng"]["torch"])
        if st["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(st["rng"]["cuda"])
        self.metrics.truncate(st["metrics_rows"])
        self.evals.truncate(st["eval_rows"])
        self.diags.truncate(st.get("diag_rows", 0))
        if self.dist is not None:
            self.dist.loaded(self, path)

    def _resume(self) -> None:
        try:
            path = self._latest_checkpoint()
        except cfgmod.ConfigError as err:
            raise SetupError(f"cannot resume: {err}") from None
        self._load_checkpoint(path)
        self.event("resume", f"resumed from {path.name} at update {self.step}")

    def rollback(self) -> dict:
        path = self._latest_checkpoint()
        with self.server.lock:
            self._load_checkpoint(path)
            self.server.publish(protocol.Rewound(step=self.step, metrics_rows=self.metrics.rows,
                                                 eval_rows=self.evals.rows,
                                                 diag_rows=self.diags.rows))
        self.event("rollback", f"rolled back to {path.name}: continuing from update {self.step + 1}",
                   step=self.step + 1)
        self.server.broadcast(protocol.ParamsChanged(step=self.step + 1, changes={},
                                                     params=self.params(), source="rollback"))
        return {"params": self.params(), "path": str(path)}

    # -- the loop ---------------------------------------------------------------------------
    def _install_signals(self) -> None:
        def stop() -> None:
            self.stop_requested = True
            self.server.wakeup.set()

        on_stop_signals(stop)

    def run(self) -> int:
        self._install_signals()
        self.server.start()
        if self.dist is not None:
            self.dist.on_failure = self._rank_failed
        self._write_state("running")
        where = str(self.device) if self.dist is None else self.dist.describe()
        self.event("start", f"started {self.cfg.name} on {where}, update {self.step + 1}"
                   f" of {self.total}", step=self.step + 1)
        try:
            self._loop()
        except BaseException as err:  # noqa: BLE001 - the engine reports every failure
            line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".strip()
            log.error("engine crashed:\n%s", traceback.format_exc())
            if self.dist is not None:  # stop the other ranks; a dead rank is the reason
                line = self.dist.abort(line)
            self.event("error", f"engine crashed at update {self.step}: {line}")
            self._write_state("crashed", line)
            self.server.close()
            return 1
        if self.stop_requested and self.step < self.total:
            self.checkpoint("stop")
            self.event("stop", f"stopped after update {self.step}")
            self._write_state("stopped")
        else:
            self.checkpoint("finished")
            self.event("finish", f"finished {self.step} updates")
            self._write_state("finished")
        self.server.close()
        return 0

    def _rank_failed(self, reason: str) -> None:
        """Another rank died while this one is stuck in a collective (called from
        the distributed watchdog thread just before it ends this process)."""
        self.event("error", f"engine crashed at update {self.step}: {reason}")
        self._write_state("crashed", reason)
        self.server.close(timeout=0.5)

    def _loop(self) -> None:
        if self.dist is not None:
            self.dist.lead(self)  # rank 0 of several: chunks planned here, run by every rank
            return
        while self.step < self.total:
            self._apply_commands()
            if self.stop_requested:
                break
            if self.paused:
                self.server.wakeup.wait(0.5)
                self.server.wakeup.clear()
                continue
            self._train_chunk(self._chunk_len())

    def _chunk_len(self) -> int:
        """Most updates the next chunk may hold: ``chunk_rows``, the end of the run,
        the next periodic checkpoint."""
        k = min(self.chunk_rows, self.total - self.step)
        every = self.cfg.run.checkpoint_every
        if every:
            k = min(k, every - self.step % every)
        return k

    def _train_chunk(self, k: int, early: bool = True) -> int:
        """Updates step+1 … step+k, then their flush; returns how many were kept.
        With ``early`` the chunk ends sooner when a command arrives or
        ``flush_seconds`` pass; the ranks of a distributed run do exactly the ``k``
        rank 0 planned (``early=False``)."""
        cfg = self.cfg
        stepper = self.stepper
        val = self._eval_split
        eval_every = cfg.data.eval_every
        flush_s = cfg.run.flush_seconds
        ckpt_every = cfg.run.checkpoint_every
        cmds = self.server.commands
        clock = time.perf_counter
        gam, amp, per = self.schedule.table(k)
        stepper.begin_chunk(torch.as_tensor(gam, dtype=self.dtype, device=self.device))
        snap = stepper.snapshot()  # to drop a diverging update before it is kept
        step0 = self.step
        evals: list[tuple[int, torch.Tensor]] = []
        diags: list[list[float]] = []
        d_on = self.diag_opts["enabled"]
        d_every, d_ntk = self.diag_opts["every"], (self.diag_opts["ntk_every"] if d_on else 0)
        if d_on and self.diag is None:
            self.diag = self._make_diagnostics()
        t0 = clock()
        i = 0
        while i < k:
            kk = step0 + i + 1
            if val is not None:
                if kk % eval_every == 0 or kk == 1 or kk == self.total:
                    evals.append((kk, stepper.eval_stats(val)))
            if d_on and (kk % d_every == 0 or (d_ntk and kk % d_ntk == 0)):
                diags.append(self._diagnose(kk, gam[i]))  # parameters before update kk
            stepper.step(i)
            i += 1
            if early:
                if cmds or self.stop_requested:
                    break
                if not i & 63 and clock() - t0 > flush_s:
                    break
        raw, evals = self._host_stats(stepper.buf[:i], evals)  # the one host sync
        rows = self._rows(step0, raw, gam, amp, per)
        bad = None
        if not (np.isfinite(rows[:, 1:3]).all() and np.isfinite(raw[:, 3 * self.C]).all()
                and stepper.params_finite()):
            i, bad = self._replay_until_divergence(snap, i)
            raw = self._host_stats(stepper.buf[:i], [])[0]
            rows = self._rows(step0, raw, gam, amp, per)
            evals = [(s_, e) for s_, e in evals if s_ <= step0 + i]
            diags = [d_ for d_ in diags if d_[0] <= step0 + i]
        if self.dist is not None:
            self.dist.note_rows(rows, self.C)
        self._flush(rows, evals)
        if diags:
            self._flush_diags(diags)
        if self.schedule.advance(i):
            self.event("static_tail", f"last period: amplitude 1 (plain CE) from update "
                       f"{self.step + i + 1}", step=self.step + i + 1)
        self.step += i
        if bad is not None:
            self._diverged(bad)
        if self._fault_at and self.step >= self._fault_at:
            raise RuntimeError(f"injected fault at update {self.step}")
        if self._first_chunk:
            self._first_chunk = False  # it includes warm-up
        else:  # training time only: pauses do not count
            self._busy_n += i
            self._busy_s += clock() - t0
            self.rate = self._busy_n / max(self._busy_s, 1e-9)
        if ckpt_every and self.step % ckpt_every == 0 and self.step < self.total:
            self.checkpoint("periodic")
        return i

    def _host_stats(self, rows: torch.Tensor, evals: list[tuple[int, torch.Tensor]]
                    ) -> tuple[np.ndarray, list[tuple[int, torch.Tensor]]]:
        """The chunk's statistic rows on the host: one ``.cpu()`` (one process), or
        one all_reduce of rows and held-out sums over the ranks, then the ``.cpu()``."""
        if self.dist is None:
            return rows.cpu().numpy().astype(np.float64), evals
        return self.dist.reduce_chunk(rows, evals)

    def _rows(self, step0: int, raw: np.ndarray, gam: np.ndarray, amp: np.ndarray,
              per: np.ndarray) -> np.ndarray:
        """Metric rows (one per update) from the raw device statistics."""
        C, n = self.C, raw.shape[0]
        nll, correct, count, ntot = _class_stats(raw, C)
        g = gam[:n]
        with np.errstate(invalid="ignore", over="ignore"):
            return np.column_stack([
                np.arange(step0 + 1, step0 + n + 1, dtype=np.float64),
                (g * nll).sum(1) / ntot,
                nll.sum(1) / ntot,
                correct.sum(1) / ntot,
                _per_class_accuracy(correct, count),
                g, amp[:n], per[:n], np.full(n, self.lr), raw[:, 3 * C],
            ])

    def _replay_until_divergence(self, snap: dict, n: int) -> tuple[int, str]:
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
            row = self._host_stats(st.buf[j: j + 1], [])[0][0]
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

    def _diverged(self, why: str) -> None:
        self.paused = True
        reason = (f"diverged: update {self.step + 1} refused ({why}); paused with the parameters "
                  f"of update {self.step}. Lower lr and resume, or roll back to a checkpoint")
        self.event("diverged", reason, step=self.step + 1)
        self._write_state("paused", reason)

    # -- landscape diagnostics ------------------------------------------------------------
    def _make_diagnostics(self):
        from dlf_tui.engine.diagnostics.landscape import Diagnostics

        d = self.cfg.diagnostics
        tr = self.data.train
        # the full batch for the spiral; a fixed evaluation batch (normalised) for images
        idx = slice(None) if self.data.image is None else slice(None, None, max(1, tr.n // 1000))
        x = self.data.inputs(tr.x[idx][:1000] if self.data.image else tr.x, self.dtype)
        y = tr.y[idx][:1000] if self.data.image else tr.y
        return Diagnostics(self.model, x, y, enabled=True, every=self.diag_opts["every"],
                           iters=d.iters, k=d.k, ntk_every=self.diag_opts["ntk_every"],
                           ntk_size=d.ntk_size, seed=self.cfg.run.seed)

    def _diagnose(self, step: int, gamma: np.ndarray) -> list[float]:
        """Hessian/NTK λ_max at the parameters update ``step`` is about to use, with its Γ."""
        d = self.diag
        g = torch.as_tensor(gamma, dtype=self.dtype, device=self.device)
        if self.dist is None:
            out = d.compute(g, step)
        else:  # rank 0 alone: batch norm must not wait for the other ranks
            with self.dist.alone():
                out = d.compute(g, step)
        lam = out["hessian_lambda_max"]
        row = [float(step), lam, out["ntk_lambda_max"], self.lr, float(out["hessian_iters"]),
               out["seconds"]]
        k = self.cfg.diagnostics.k
        if k > 1:
            top = list(out["hessian_top"])[:k]
            row += top + [float("nan")] * (k - len(top))
        if np.isfinite(lam):
            self._track_edge_of_stability(step, lam)
        return row

    EOS_CONFIRM = 3  # readings in a row on the new side before a crossing is logged

    def _track_edge_of_stability(self, step: int, lam: float) -> None:
        """Log when λ_max settles on the other side of 2/η.  Inside the edge-of-
        stability oscillation λ_max flips sides every reading; requiring a few
        readings in a row keeps the log to real crossings, dated at the first."""
        above = lam > 2.0 / self.lr
        if self._eos_above is None:
            self._eos_above, self._eos_pending = above, []
            return
        if above == self._eos_above:
            self._eos_pending = []
            return
        self._eos_pending.append((step, lam))
        if len(self._eos_pending) >= self.EOS_CONFIRM:
            first, lam0 = self._eos_pending[0]
            self._eos_above, self._eos_pending = above, []
            side = "above" if above else "below"
            self.event("edge_of_stability",
                       f"edge of stability crossed at update {first}: λ_max {lam0:.4g} went "
                       f"{side} 2/η = {2.0 / self.lr:.4g}", step=first, lambda_max=lam0, lr=self.lr)

    def _append(self, writer: runs.SeriesWriter, chunk: type[protocol.Chunk],
                rows: np.ndarray) -> None:
        """Append rows to a series file and publish them, under the lock that orders
        chunks against hellos (a new client's history ends where its chunks begin)."""
        srv = self.server
        with srv.lock:
            start = writer.append(rows)
            if srv.has_clients:
                srv.publish(chunk.pack(start, writer.columns, rows))

    def _flush_diags(self, diags: list[list[float]]) -> None:
        self._append(self.diags, protocol.Diag, np.array(diags, dtype=np.float64))

    def _flush(self, rows: np.ndarray, evals: list[tuple[int, torch.Tensor]]) -> None:
        C = self.C
        srv = self.server
        self._append(self.metrics, protocol.Metrics, rows)
        if evals:
            ev = torch.stack([e for _, e in evals]).cpu().numpy().astype(np.float64)
            ev = ev.reshape(len(evals), -1)
            enll, ecorrect, ecount, entot = _class_stats(ev, C)
            erows = np.column_stack([
                np.array([s for s, _ in evals], dtype=np.float64),
                enll.sum(1) / entot, ecorrect.sum(1) / entot,
                _per_class_accuracy(ecorrect, ecount)])
            self._append(self.evals, protocol.Eval, erows)
        if srv.has_clients and rows.shape[0]:
            srv.broadcast(protocol.State(state=self.state, step=int(rows[-1, 0]), total=self.total,
                                         rate=self.rate))

    def close(self) -> None:
        self.metrics.close()
        self.evals.close()
        self.diags.close()
        self.events.close()
