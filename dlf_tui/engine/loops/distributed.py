"""One run, several processes: data-parallel training with DistributedDataParallel.

``python -m dlf_tui.engine RUN_DIR --nproc N`` (``dlf-tui run PRESET --nproc N``)
starts rank 0, the ordinary engine: its pid is in ``state.json``, it owns the
run directory, the control socket, events and checkpoints.  Rank 0 starts ranks
1 … N−1 itself (``--rank R``, children in its process group, each logging to
``engine-rank<R>.log``); they meet through a ``torch.distributed.FileStore`` in
the run directory (no port to choose).  Backend gloo on the CPU, nccl on CUDA
(rank r on cuda:first+r).

The ranks compute what one process computes.  Each takes rows lo:hi of every
global batch (the full batch, or each mini-batch of the permutation that every
rank draws alike from the same seeded generator) with the loss
Σ Γ[y]·CE · N / (global batch size); DDP averages the N ranks' gradients, so the
update is the gradient of the global mean loss whatever the shard sizes.  The
chunk's statistic rows and held-out sums are summed over the ranks by one
all_reduce per flush (never per update).  The fused and C-kernel steps are
single-process: N > 1 always trains through autograd.  Batch norm becomes
SyncBatchNorm on CUDA (global batch statistics); on the CPU each rank normalises
with its own share (logged: not exactly the single-process result).

Γ is the same on every rank because rank 0 plans every chunk: before each
chunk it broadcasts one small JSON plan (one collective) — the chunk length,
the step, lr, the schedule's state, a checkpoint to load (rollback), stop — and
every rank applies it before its first update.  Live edits therefore reach all
ranks at the same update.  While paused, rank 0 broadcasts an empty plan every
``HEARTBEAT_S``.  Divergence is detected from the summed rows and the (identical)
parameters, so every rank replays and stops at the same update.

Under torchrun (``torchrun … -m dlf_tui run PRESET``, ``cli/cluster.py``) torchrun starts
every rank, rank 0 included, on one node or many; they meet through torchrun's own
store (``env://``), where rank 0 also tells the others the run directory it made
(``meet``).  Rank r uses cuda:LOCAL_RANK.  torchrun watches and restarts them
(``--max-restarts``); rank 0 of a restarted attempt resumes from the last checkpoint.

Failure (``loops/ranks.py``): a watchdog thread in rank 0 polls its children; when one dies the run
ends as crashed with the rank's own reason (rank 0's collective fails, or after
``GRACE_S`` the watchdog ends rank 0 itself).  The other ranks die with rank 0
(``PR_SET_PDEATHSIG`` and a parent watch) and ignore SIGTERM/SIGINT: rank 0
decides when the run stops, and tells them.  Under torchrun, a rank that fails writes its
reason into ``rank-<R>.json`` before it exits, and rank 0 reports that (``TorchrunPeers``).

Every rank writes ``rank-<R>.json`` when it ends (final step, SHA-256 of the Γ
rows it trained with — those kept since ``gamma_from``, the last resume or
rollback, and all of them — and of its parameters) so the agreement can be checked.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from dlf_tui.core import config as cfgmod
from dlf_tui.core.errors import SetupError, one_line
from dlf_tui.engine.data import Split
from dlf_tui.engine.recorder import NullRecorder
from dlf_tui.engine.runtime import load_config, resolve_device
from dlf_tui.engine.trainer import Trainer
from dlf_tui.engine.loops.ranks import RankProcesses, TorchrunPeers, follow_parent, loopback_gloo
from dlf_tui.store import run as runs
from dlf_tui.store.torchrun import TorchrunEnv

if TYPE_CHECKING:
    from dlf_tui.engine.loops.single import SingleRun

log = logging.getLogger("dlf_tui.engine")

PLAN_BYTES = 8192  # one chunk's plan, JSON, zero-padded
TIMEOUT = datetime.timedelta(minutes=30)  # a collective waiting longer than this fails
HEARTBEAT_S = 0.5  # a paused rank 0 still broadcasts (empty) plans this often
MEET_TIMEOUT = datetime.timedelta(minutes=10)  # torchrun: the other ranks wait this long for rank 0's word
KEY_RUN, KEY_PID = "dlf_tui/run", "dlf_tui/pid/{rank}"  # torchrun's store: rank 0's word, each rank's pid
FIRST_CHUNK = 16  # updates in the first planned chunk; then sized to ``flush_seconds``


def record_name(rank: int) -> str:
    return f"rank-{rank}.json"


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows lo:hi of a batch of ``n`` that rank ``rank`` of ``world`` trains on."""
    return n * rank // world, n * (rank + 1) // world


def rank_devices(name: str, world: int) -> list[torch.device]:
    """The device of each rank: the CPU for all, or cuda:first+r for rank r."""
    base = resolve_device(name)
    if base.type == "cpu":
        return [base] * world
    if base.type != "cuda":
        raise SetupError(f"--nproc {world}: run.device = {name} is not supported (cpu or cuda)")
    first, count = base.index or 0, torch.cuda.device_count()
    if first + world > count:
        raise SetupError(f"--nproc {world} on {base}: needs {world} CUDA devices from "
                         f"cuda:{first}, this machine has {count}")
    return [torch.device("cuda", first + r) for r in range(world)]


def _params_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Group:
    """This process's place in a run of ``world`` ranks, and the collectives it needs."""

    def __init__(self, run_dir: Path, rank: int, world: int, device: torch.device,
                 torchrun: TorchrunEnv | None = None):
        self.dir = Path(run_dir)
        self.rank, self.world, self.device = rank, world, device
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        self.torchrun = torchrun  # None: the ranks of ``--nproc`` (rank 0 started the others)
        # rank 0: the other ranks' processes (its children), or torchrun's (it watches them)
        self.others = RankProcesses(self.dir, world) if torchrun is None else TorchrunPeers(self.dir, world)
        self.ctl = None  # the process group plans travel on (None: the default group)
        self.solo = None  # a group of rank 0 alone (diagnostics through SyncBatchNorm)
        self._syncbn: list[nn.SyncBatchNorm] = []
        self._plan = torch.zeros(PLAN_BYTES, dtype=torch.uint8)
        self._pending_load: str | None = None
        self._gamma = hashlib.sha256()  # Γ rows of the updates kept since ``gamma_from``
        self._gamma_all = hashlib.sha256()  # Γ rows of every chunk trained, rolled back or not
        self.gamma_from = 1

    # -- start --------------------------------------------------------------------------
    def _init(self, store: tdist.Store | None = None) -> None:
        """Meet the other ranks: through ``store`` (torchrun's), else a FileStore in the run directory."""
        cuda = self.device.type == "cuda"
        if store is None:
            store = tdist.FileStore(str(self.dir / runs.RENDEZVOUS), self.world)
        extra: dict[str, Any] = {}
        if cuda:
            torch.cuda.set_device(self.device)
            extra["device_id"] = self.device
        tdist.init_process_group(self.backend, store=store, rank=self.rank,
                                 world_size=self.world, timeout=TIMEOUT, **extra)
        if cuda:  # plans are small CPU tensors; diagnostics may need rank 0 alone
            self.ctl = tdist.new_group(backend="gloo", timeout=TIMEOUT)
            self.solo = tdist.new_group([0])
        log.info("rank %d of %d on %s (%s)", self.rank, self.world, self.device, self.backend)

    def describe(self) -> str:
        t = self.torchrun
        if t is not None:
            dev = "cpu" if self.device.type == "cpu" else f"{t.local_world} CUDA devices per node"
            nodes = f" on {t.nodes} nodes" if t.nodes > 1 else ""
            again = f", restart {t.restart}" if t.restart else ""
            return f"{dev}, {self.world} ranks{nodes} ({self.backend}, torchrun{again})"
        dev = (str(self.device) if self.device.type == "cpu"
               else f"cuda:{self.device.index}-{self.device.index + self.world - 1}")
        return f"{dev}, {self.world} ranks ({self.backend})"

    def pids(self) -> list[int]:
        return self.others.pids()

    def abort(self, line: str) -> str:
        """Rank 0 failed (or a rank died): stop the other ranks; the one-line reason."""
        return self.others.abort(line)

    # -- what the engine asks of it --------------------------------------------------------
    def bounds(self, n: int) -> tuple[int, int]:
        return shard_bounds(n, self.rank, self.world)

    def shard_split(self, split: Split | None) -> Split | None:
        """This rank's rows of a held-out split (their sums are added over the ranks)."""
        if split is None:
            return None
        lo, hi = self.bounds(split.n)
        return Split(split.x[lo:hi], split.y[lo:hi])

    def prepare(self, model: nn.Module, cfg: cfgmod.Config, data) -> nn.Module:
        _check_batch(cfg, self.world, data.train.n)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self._syncbn = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
                log.info("batch norm: SyncBatchNorm (statistics of the global batch)")
            else:
                log.warning("batch norm on the CPU: each rank normalises with the statistics of "
                            "its own share of the batch (SyncBatchNorm needs CUDA), so %d ranks "
                            "do not compute exactly what one process computes", self.world)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        # buffers (batch norm's running statistics): rank 0's before every forward,
        # unless SyncBatchNorm keeps them equal on every rank already
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            forward_sync_buffers=not self._syncbn)
        return ddp

    @contextmanager
    def alone(self):
        """Rank 0 computes something by itself (diagnostics): SyncBatchNorm must not
        wait for the other ranks meanwhile."""
        if not self._syncbn:
            yield
            return
        old = [m.process_group for m in self._syncbn]
        for m in self._syncbn:
            m.process_group = self.solo
        try:
            yield
        finally:
            for m, g in zip(self._syncbn, old):
                m.process_group = g

    def reduce_chunk(self, rows: torch.Tensor, evals: list[tuple[int, torch.Tensor]]
                     ) -> tuple[np.ndarray, list[tuple[int, torch.Tensor]]]:
        """Statistic rows and held-out sums, summed over the ranks: one all_reduce
        and one ``.cpu()`` per flush.  ‖g‖ (the last column) is the same on every
        rank (the gradients are already summed) and is counted once."""
        flat = torch.cat([rows.reshape(-1)] + [e.reshape(-1) for _, e in evals])
        if self.rank:
            flat[: rows.numel()].view(rows.shape)[:, -1] = 0
        tdist.all_reduce(flat)
        host = flat.cpu().numpy().astype(np.float64)  # the one host sync
        n = rows.numel()
        raw = host[:n].reshape(tuple(rows.shape))
        out, off = [], n
        for s, e in evals:
            out.append((s, torch.from_numpy(host[off: off + e.numel()].reshape(tuple(e.shape)))))
            off += e.numel()
        return raw, out

    def note_rows(self, rows: np.ndarray, C: int) -> None:
        """Fold the chunk's Γ columns into this rank's checksums."""
        data = np.ascontiguousarray(rows[:, 4 + C: 4 + 2 * C]).tobytes()
        self._gamma.update(data)
        self._gamma_all.update(data)

    def loaded(self, step: int, path: Path) -> None:
        """A checkpoint was loaded (resume, rollback): the other ranks load it too."""
        self._pending_load = path.name
        self._gamma = hashlib.sha256()
        self.gamma_from = step + 1

    def write_record(self, tr: Trainer) -> None:
        runs.write_json_atomic(self.dir / record_name(self.rank), {
            "rank": self.rank, "world": self.world, "pid": os.getpid(), "device": str(self.device),
            "step": tr.step, "lr": tr.lr, "schedule": tr.schedule.state_dict(),
            "gamma_from": self.gamma_from, "gamma_sha256": self._gamma.hexdigest(),
            "gamma_all_sha256": self._gamma_all.hexdigest(),
            "params_sha256": _params_sha256(tr.model)})

    # -- plans --------------------------------------------------------------------------------
    def _broadcast(self, plan: dict | None) -> dict:
        buf = self._plan
        if plan is not None:
            data = json.dumps(plan).encode()
            if len(data) > PLAN_BYTES:
                raise RuntimeError(f"chunk plan too long ({len(data)} bytes)")
            buf.zero_()
            buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        tdist.broadcast(buf, src=0, group=self.ctl)
        if plan is not None:
            return plan
        return json.loads(buf.numpy().tobytes().rstrip(b"\0"))

    def lead(self, run: "SingleRun") -> None:
        """Rank 0's loop: apply the commands, plan a chunk, broadcast it, train it."""
        self._pending_load = None  # a resume was loaded by every rank at start
        ctl, tr = run.control, run.trainer
        flush_s = run.cfg.run.flush_seconds
        clock = time.perf_counter
        k_next = FIRST_CHUNK
        while True:
            ctl.poll()
            stop = ctl.stop_requested or tr.step >= tr.total
            k = 0 if stop or ctl.paused else min(k_next, run.chunk_len())
            self._broadcast({"k": k, "stop": stop, "step": tr.step, "lr": tr.lr,
                             "schedule": tr.schedule.state_dict(), "load": self._pending_load})
            self._pending_load = None
            if stop:
                break
            if not k:
                ctl.wait(HEARTBEAT_S)
                continue
            t0 = clock()
            run.train_chunk(k, early=False)
            # the next chunk lasts about flush_seconds (commands wait at most that long)
            k_next = max(1, min(tr.chunk_rows, 2 * k, int(k * flush_s / max(clock() - t0, 1e-9))))
        self.others.join(60.0)
        self.write_record(tr)
        self._close()

    def follow(self, tr: Trainer, recorder: NullRecorder) -> None:
        """A rank > 0: do what rank 0's plans say, chunk by chunk."""
        while True:
            plan = self._broadcast(None)
            if plan["load"]:
                path = self.dir / runs.CHECKPOINTS / plan["load"]
                recorder.load_checkpoint(path, tr.parts(), tr.device)
                self.loaded(tr.step, path)
            tr.schedule.load_state_dict(plan["schedule"])
            if plan["lr"] != tr.lr:
                tr.set_lr(plan["lr"])
            if plan["step"] != tr.step:
                raise RuntimeError(f"rank {self.rank} is at update {tr.step}, "
                                   f"rank 0 at {plan['step']}")
            if plan["stop"]:
                break
            if plan["k"]:
                tr.train_chunk(plan["k"])
        self.write_record(tr)
        self._close()

    def _close(self) -> None:
        try:
            tdist.destroy_process_group()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
        if self.rank == 0:
            try:
                (self.dir / runs.RENDEZVOUS).unlink()
            except OSError:
                pass

def rank_trainer(run_dir: Path, resume: bool, group: Group) -> tuple[Trainer, NullRecorder]:
    """Rank r > 0: the same model, data and schedule as rank 0 (at its checkpoint on
    resume), a recorder that writes nothing (its log is ``engine-rank<r>.log``)."""
    tr = Trainer.open(run_dir, group, resume)
    recorder = NullRecorder(run_dir, label=f"rank {group.rank}: ")
    if resume:
        path = recorder.latest_checkpoint()
        recorder.load_checkpoint(path, tr.parts(), tr.device)
        group.loaded(tr.step, path)
    return tr, recorder


def follow_rank(group: Group, tr: Trainer, recorder: NullRecorder) -> int:
    """Rank r > 0 trains its share of every chunk rank 0 plans; it writes nothing
    to the run directory but ``rank-<r>.json``.  0 when it ends cleanly."""
    try:
        group.follow(tr, recorder)
    except BaseException as err:  # noqa: BLE001 - report, exit non-zero: rank 0 notices
        log.error("rank %d crashed:\n%s", group.rank, traceback.format_exc())
        if group.torchrun is not None:  # rank 0 is no parent to read our log: tell it here
            group.others.note_failure(group.rank, one_line(err))
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        return 1
    return 0


# ---------------------------------------------------------------------------
# Starting a rank
# ---------------------------------------------------------------------------


def _check_batch(cfg: cfgmod.Config, world: int, n_train: int) -> None:
    """Every rank needs at least one sample of every batch."""
    d = cfg.data
    n = d.batch_size or n_train
    if world > n:
        what = "mini-batch (data.batch_size)" if d.batch_size else "training set"
        raise SetupError(f"--nproc {world}: more ranks than samples in the {what}: {n}")


def launch(run_dir: Path, world: int, children: dict[int, subprocess.Popen]) -> Group:
    """Rank 0: watch ranks 1 … world−1 (``children``, started by ``__main__`` while
    this process imported torch) and meet them (raises ``SetupError``)."""
    g = None
    try:
        devices = rank_devices(load_config(run_dir).run.device, world)
        g = Group(run_dir, 0, world, devices[0])
        g.others.adopt(children)
        g._init()
    except BaseException:
        others = g.others if g is not None else RankProcesses(Path(run_dir), world)
        others.children = dict(children)
        others.stop()
        raise
    return g


def join(run_dir: Path, rank: int, world: int) -> Group:
    """Rank > 0: follow the parent (rank 0) in life and death, meet the others."""
    follow_parent()
    devices = rank_devices(load_config(run_dir).run.device, world)
    g = Group(run_dir, rank, world, devices[rank])
    g._init()
    return g


# ---------------------------------------------------------------------------
# Under torchrun: torchrun started every rank; they meet through its store
# ---------------------------------------------------------------------------


def torchrun_store(env: TorchrunEnv) -> tdist.Store:
    """torchrun's store (``env://``: its agent serves it at MASTER_ADDR:MASTER_PORT),
    under a prefix of ours and of this attempt (the store may outlive a restart: a key
    of the attempt before would name ranks that are gone)."""
    if env.nodes == 1:  # every rank on this machine: gloo over loopback (as ``--nproc``)
        loopback_gloo()
    store, _, _ = next(tdist.rendezvous("env://", env.rank, env.world, timeout=MEET_TIMEOUT))
    return tdist.PrefixStore(f"dlf_tui/attempt-{env.restart}", store)


def meet(store: tdist.Store, env: TorchrunEnv, word: dict | None = None) -> dict:
    """Rank 0 tells the others ``word`` — the run directory, whether to resume, the
    live edits, or why it could not start — and every rank returns it."""
    if env.rank == 0:
        if word is None:
            raise ValueError("rank 0 must say something")
        store.set(KEY_RUN, json.dumps(word))
        return word
    try:
        return json.loads(store.get(KEY_RUN).decode())
    except Exception as err:  # noqa: BLE001 - a timeout, rank 0 gone: one line
        raise SetupError(f"rank {env.rank}: no word from rank 0 ({one_line(err)})") from None


def torchrun_device(name: str, local_rank: int, local_world: int) -> torch.device:
    """Rank r's device under torchrun: the CPU, or cuda:LOCAL_RANK (cuda:0 where the
    launcher shows each process one device)."""
    base = resolve_device(name)
    if base.type == "cpu":
        return base
    if base.type != "cuda":
        raise SetupError(f"torchrun: run.device = {name} is not supported (cpu or cuda)")
    count = torch.cuda.device_count()
    if count >= local_world:
        return torch.device("cuda", local_rank)
    if count == 1:
        return torch.device("cuda", 0)
    raise SetupError(f"torchrun: {local_world} ranks on this node, {count} CUDA devices visible")


def join_torchrun(run_dir: Path, store: tdist.Store, env: TorchrunEnv, token: str) -> Group:
    """Any rank of a torchrun job: meet the others in the run's process group and
    swap pids (rank 0 lists them in ``state.json``; a rank's failure note names it)."""
    cfg = load_config(run_dir)
    device = torchrun_device(cfg.run.device, env.local_rank, env.local_world)
    g = Group(run_dir, env.rank, env.world, device, torchrun=env)
    g.others.token = token
    g._init(tdist.PrefixStore(f"pg/{token}", store))
    store.set(KEY_PID.format(rank=env.rank), json.dumps([socket.gethostname(), os.getpid()]))
    if env.rank == 0:
        found = [json.loads(store.get(KEY_PID.format(rank=r)).decode()) for r in range(env.world)]
        g.others.adopt_pids([(str(h), int(p)) for h, p in found])
    else:  # from here on: die with torchrun's agent, and leave stopping to rank 0
        follow_parent()
    return g
