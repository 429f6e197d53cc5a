"""A sweep's members trained elsewhere: on every device of this box, or as cluster jobs.

``python -m dlf_tui.engine SWEEP_DIR`` reads the sweep's ``executor.json``
(``store/sweep.py``); for anything but the one-process engine this process is a
*controller*: it trains nothing, starts the members' engines or jobs, watches them
and writes the sweep's ``state.json`` (its pid, so ``ctl SWEEP stop``, the sweep
view and ``attach`` work as for the one-process engine).  No torch here (only
``--devices all`` asks torch how many GPUs there are).

- ``devices`` (``--devices cuda:0,cuda:1``, ``cpu,cpu``): one member at a time on each
  device, each an ordinary ``python -m dlf_tui.engine MEMBER_DIR`` with its socket
  (attach or steer any member live); its ``run.device`` is set in its config.
- ``slurm`` (``--executor slurm``): the members are one Slurm job array through
  submitit (``--max-parallel`` → the array's ``%K``), each job runs ``member_job``:
  the member's engine in the job's process, writing into its directory on the shared
  file system (no socket: the sweep view follows it from disk).
- ``submitit-local``: the same through submitit's local executor (real processes on
  this machine, ``--max-parallel`` at once; each member serves its socket).

Stop (SIGTERM/SIGINT, ``ctl SWEEP stop``): every member's engine is told to stop
(SIGTERM; a Slurm job is cancelled: ``scancel`` sends SIGTERM first), it checkpoints,
and members not started stay pending.  A job's time limit (SIGUSR2 from submitit,
SIGTERM from Slurm) and a preemption stop a member the same way.  ``dlf-tui resume
SWEEP`` runs this again: finished members are skipped, members whose engine or job
still runs are adopted (``jobs.json``), the others continue from their last
checkpoint (or afresh, if they never made one).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dlf_tui.core import config, states
from dlf_tui.core.errors import ConfigError, RunError, SetupError, first_line, one_line
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps

log = logging.getLogger("dlf_tui.engine")

POLL_S = 0.2  # how often the controller looks at its members
TERM_AGAIN_S = 2.0  # stopping: SIGTERM again this often (an engine still importing torch misses it)
STATE_S = 1.0  # the sweep's state.json at most this often (reading thousands of members takes time)
LIVE_JOB_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
                   "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING"}
JOB_FAILED = 3  # a job that ended without saying how (its state says)


# ---------------------------------------------------------------------------
# What runs a member: a process here, a submitit job
# ---------------------------------------------------------------------------


class Handle:
    """One member being trained somewhere.  ``poll()``: None while it runs, else an
    exit status; ``story``: how it ended, when its own state.json cannot say."""

    def __init__(self, member: sweeps.Member, label: str, device: str = ""):
        self.member, self.label, self.device = member, label, device
        self.story = ""
        self.last_term = 0.0

    def poll(self) -> int | None:
        raise NotImplementedError

    def terminate(self) -> None:
        raise NotImplementedError


class ProcessHandle(Handle):
    """A member's engine process on this machine (a child, or one adopted by pid)."""

    def __init__(self, member: sweeps.Member, proc: subprocess.Popen | None, device: str = "",
                 pid: int | None = None):
        self.proc = proc
        self.pid = proc.pid if proc is not None else pid
        super().__init__(member, f"pid {self.pid}", device)

    def poll(self) -> int | None:
        if self.proc is not None:
            code = self.proc.poll()
            if code is not None and not self.story:
                self.story = _exit_words(self.pid, code)
            return code
        return None if self.member.run.is_live() else 0

    def terminate(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except OSError:
            pass


def _exit_words(pid: int, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its engine (pid {pid}) was killed by {name}"
    return f"its engine (pid {pid}) exited with status {code}"


class JobHandle(Handle):
    """A member's submitit job (Slurm, or submitit's local executor)."""

    def __init__(self, member: sweeps.Member, job: Any, local: bool):
        super().__init__(member, f"job {job.job_id}")
        self.job, self.local = job, local

    def poll(self) -> int | None:
        try:
            done = self.job.done()
        except Exception as err:  # noqa: BLE001 - sacct unreachable for a moment: ask again
            log.warning("%s: cannot read its state (%s)", self.label, one_line(err))
            return None
        if not done:
            return None
        state = str(self.job.state)
        ok = state in ("COMPLETED", "FINISHED")
        if not ok and not self.story:
            self.story = f"{self.label} ended {state}"
        return 0 if ok else JOB_FAILED

    def terminate(self) -> None:
        try:
            if self.local:  # submitit's local controller forwards SIGTERM to its task
                proc = getattr(self.job, "_process", None)
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            elif not self.last_term:  # scancel once: Slurm sends SIGTERM, then SIGKILL after KillWait
                self.job.cancel(check=False)
        except Exception as err:  # noqa: BLE001 - the job may have ended meanwhile
            log.warning("%s: cannot cancel it (%s)", self.label, one_line(err))


class Devices:
    """``--devices``: a free device for each member, one member per device at a time."""

    def __init__(self, sweep: sweeps.Sweep, ex: sweeps.Executor):
        self.sweep = sweep
        self.devices = resolve_devices(ex.devices)
        self.free = list(range(len(self.devices)))
        self.capacity = len(self.devices)
        cpu_slots = sum(d == "cpu" for d in self.devices)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.cpu_threads = max(1, cores // max(1, cpu_slots))

    def why(self) -> str:
        return f"{self.capacity} members at once, one per device: {', '.join(self.devices)}"

    def start(self, m: sweeps.Member, resume: bool) -> ProcessHandle:
        slot = self.free[0]
        dev = self.devices[slot]
        cfg = m.run.config()  # (a member that cannot start keeps the device free)
        if cfg.run.device != dev:
            cfg = config.apply_overrides(cfg, [f"run.device={dev}"])
            (m.run.path / runs.CONFIG).write_text(config.to_toml(cfg), encoding="utf-8")
        env = dict(os.environ)
        if dev == "cpu" and "OMP_NUM_THREADS" not in env and not cfg.run.threads:
            env["OMP_NUM_THREADS"] = str(self.cpu_threads)  # the CPU's cores shared by its slots
        args = [sys.executable, "-m", "dlf_tui.engine", str(m.run.path)] + (["--resume"] if resume else [])
        with open(m.run.file(runs.LOG), "ab") as logf:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    start_new_session=True, close_fds=True, env=env)
        self.free.remove(slot)
        h = ProcessHandle(m, proc, dev)
        h.slot = slot
        return h

    def ended(self, h: Handle) -> None:
        slot = getattr(h, "slot", None)
        if slot is not None:
            self.free.append(slot)
            self.free.sort()


def resolve_devices(names: tuple[str, ...]) -> list[str]:
    """``all`` → every visible CUDA device; CUDA devices listed are checked to exist."""
    names = tuple(names) or ("all",)
    if any(n != "cpu" for n in names):
        import torch  # the one thing the controller asks torch: how many GPUs

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if names == ("all",):
            if not count:
                raise SetupError("--devices all: no CUDA device is visible here "
                                 "(name the devices: --devices cpu,cpu)")
            return [f"cuda:{i}" for i in range(count)]
        for n in names:
            if n.startswith("cuda") and (not count or int(n.partition(":")[2] or 0) >= count):
                raise SetupError(f"--devices {','.join(names)}: {n} is not visible here "
                                 f"({count} CUDA device{'s' * (count != 1)})")
    return list(names)


class Submitit:
    """``--executor slurm`` / ``submitit-local``: members as submitit jobs."""

    def __init__(self, sweep: sweeps.Sweep, ex: sweeps.Executor):
        try:
            import submitit
        except ImportError:
            raise SetupError(f"--executor {ex.kind} needs submitit: pip install 'dlf-tui[slurm]'") from None
        self.submitit = submitit
        self.sweep, self.ex = sweep, ex
        self.local = ex.kind == "submitit-local"
        self.folder = sweep.path / sweeps.SUBMITIT
        self.executor = submitit.AutoExecutor(folder=str(self.folder),
                                              cluster="local" if self.local else "slurm")
        params: dict[str, Any] = {"name": f"dlf-{sweep.id}"[:64], "timeout_min": ex.timeout_min,
                                  "nodes": 1, "tasks_per_node": 1, "cpus_per_task": ex.cpus_per_member}
        if ex.gpus_per_member:
            params["gpus_per_node"] = ex.gpus_per_member
        if not self.local:
            if ex.partition:
                params["slurm_partition"] = ex.partition
            if ex.max_parallel:
                params["slurm_array_parallelism"] = ex.max_parallel
            params["slurm_signal_delay_s"] = 120  # SIGUSR2 this long before the time limit: stop
        self.executor.update_parameters(**params)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        # Slurm queues the array itself; local jobs start as slots free up here
        self.capacity = (ex.max_parallel or cores) if self.local else None
        self.array_id = ""

    def why(self) -> str:
        return self.ex.describe() + (f" (array {self.array_id})" if self.array_id else "")

    def start_many(self, todo: list[tuple[sweeps.Member, bool]]) -> list[JobHandle]:
        serve = self.local  # a Slurm node's socket cannot be reached from here: follow from disk
        jobs = self.executor.map_array(member_job, [str(m.run.path) for m, _ in todo],
                                       [self.sweep.id] * len(todo), [serve] * len(todo))
        if jobs and not self.local:
            self.array_id = str(jobs[0].job_id).split("_")[0]
        return [JobHandle(m, j, self.local) for (m, _), j in zip(todo, jobs)]

    def start(self, m: sweeps.Member, resume: bool) -> JobHandle:
        return self.start_many([(m, resume)])[0]

    def adopt(self, m: sweeps.Member, job_id: str) -> JobHandle | None:
        """A member's job from an earlier controller, if Slurm still runs or queues it."""
        if self.local:
            return None  # a local job lives and dies with its controller: adopted by pid instead
        job = self.submitit.SlurmJob(folder=str(self.folder), job_id=job_id)
        try:
            state = str(job.state)
        except Exception:  # noqa: BLE001 - unknown to sacct
            return None
        return JobHandle(m, job, False) if state.split()[0] in LIVE_JOB_STATES else None

    def ended(self, h: Handle) -> None:
        pass


def member_job(path: str, sweep_id: str, serve: bool) -> int:
    """A submitit job: train one member in this process (on the node the job got).
    A member with a checkpoint continues from it, so a requeued or resubmitted job
    picks up where the last one stopped.  Raises when the member did not end well,
    so that the job shows as failed."""
    from dlf_tui.engine.loops.sweep import run_member  # torch: on the node, not in the controller

    code = run_member(Path(path), sweep_id, serve=serve)
    if code:
        reason = launch.engine_failure(runs.Run(path)) or f"exit status {code}"
        raise RuntimeError(f"{Path(path).name}: {reason}")
    return code


# ---------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------


class Controller:
    def __init__(self, sweep: sweeps.Sweep, ex: sweeps.Executor, resume: bool = False):
        self.sweep, self.ex, self.resume = sweep, ex, resume
        self.stop_requested = False
        self.started = time.time()
        self.launcher: Devices | Submitit | None = None
        self.running: list[Handle] = []
        self.pending: list[tuple[sweeps.Member, bool]] = []
        self.ended: list[Handle] = []
        self.jobs: dict[str, str] = sweep.jobs() if resume else {}
        self.rate, self._rate0 = 0.0, None
        self._last_state = 0.0

    def _state(self, state: str, reason: str = "") -> None:
        done, total = self.sweep.progress()
        now = time.monotonic()
        if self._rate0 is None:
            self._rate0 = (now, done)
        elif now > self._rate0[0]:
            self.rate = (done - self._rate0[1]) / (now - self._rate0[0])
        why = self.launcher.why() if self.launcher is not None else self.ex.describe()
        sweeps.write_state(self.sweep, state, started=self.started, mode=self.ex.kind, why=why,
                           reason=reason, rate=round(self.rate, 1), done=done, total=total,
                           running=[h.member.id for h in self.running], host=socket.gethostname())

    def _write_jobs(self) -> None:
        try:
            runs.write_json_atomic(self.sweep.file(sweeps.JOBS), {"kind": self.ex.kind,
                                                                  "jobs": dict(self.jobs)})
        except OSError as err:
            log.warning("cannot write %s: %s", sweeps.JOBS, err.strerror)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_requested = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            self.launcher = Devices(self.sweep, self.ex) if self.ex.kind == "devices" \
                else Submitit(self.sweep, self.ex)
            self._adopt(self.sweep.todo(self.resume))
        except (SetupError, RunError, OSError, ValueError, NameError) as err:
            reason = first_line(err) or type(err).__name__
            log.error("cannot start: %s", reason)
            print(f"error: {reason}", file=sys.stderr, flush=True)
            sweeps.write_state(self.sweep, states.CRASHED, mode=self.ex.kind, reason=reason)
            return 2
        log.info("sweep %s: %d members to train, %d adopted; %s", self.sweep.id, len(self.pending),
                 len(self.running), self.launcher.why())
        try:
            self._loop()
        except BaseException as err:  # noqa: BLE001 - say why in state.json; stop what runs
            line = one_line(err)
            log.exception("sweep controller crashed")
            for h in self.running:
                h.terminate()
            self._state(states.CRASHED, line)
            return 1
        return self._finish()

    def _adopt(self, todo: list[tuple[sweeps.Member, bool]]) -> None:
        """Members whose engine (here) or job (Slurm) still runs are followed, not started again."""
        for m, res in todo:
            st = m.run.raw_state()
            if st.get("state") in states.LIVE and m.run.is_live() and isinstance(st.get("pid"), int):
                self.running.append(ProcessHandle(m, None, pid=st["pid"]))
                continue
            if isinstance(self.launcher, Submitit) and m.id in self.jobs:
                h = self.launcher.adopt(m, self.jobs[m.id])
                if h is not None:
                    self.running.append(h)
                    continue
            self.pending.append((m, res))

    def _start_pending(self) -> None:
        cap = self.launcher.capacity
        if cap is None:  # Slurm: the whole array at once (it queues them)
            batch, self.pending = self.pending, []
            handles = self.launcher.start_many(batch) if batch else []
        else:
            handles = []
            while self.pending and len(self.running) + len(handles) < cap:
                m, res = self.pending.pop(0)
                try:
                    handles.append(self.launcher.start(m, res))
                except (ConfigError, RunError, OSError) as err:  # this member only: the others train
                    self._could_not_start(m, first_line(err) or type(err).__name__)
        for h in handles:
            log.info("%s: started (%s%s)", h.member.id, h.label, f" on {h.device}" if h.device else "")
            if isinstance(h, JobHandle):
                self.jobs[h.member.id] = str(h.job.job_id)
        if handles and isinstance(self.launcher, Submitit):
            self._write_jobs()
        self.running += handles

    def _loop(self) -> None:
        stopping = False
        self._state(states.RUNNING)
        while True:
            if self.stop_requested and not stopping:
                stopping = True
                log.info("stop: %d members running are told to stop, %d pending stay pending",
                         len(self.running), len(self.pending))
                self.pending = []
            if not stopping:
                self._start_pending()
            now = time.monotonic()
            for h in list(self.running):
                code = h.poll()
                if code is None:
                    if stopping and now - h.last_term >= TERM_AGAIN_S:
                        h.terminate()
                        h.last_term = now
                    continue
                self.running.remove(h)
                self.launcher.ended(h)
                self._member_ended(h, code)
            if not self.running and not self.pending:
                return
            if now - self._last_state >= STATE_S:
                t = time.monotonic()
                self._state(states.RUNNING, "stopping" if stopping else "")
                self._last_state = time.monotonic() + 3 * (time.monotonic() - t)
            time.sleep(POLL_S)

    def _could_not_start(self, m: sweeps.Member, reason: str) -> None:
        log.error("%s: cannot start: %s", m.id, reason)
        runs.write_json_atomic(m.run.file(runs.STATE), {
            "state": states.CRASHED, "pid": os.getpid(), "reason": reason, "ended": time.time(),
            "sweep": self.sweep.id})
        self.ended.append(Handle(m, "not started"))

    def _member_ended(self, h: Handle, code: int) -> None:
        m = h.member
        st = m.run.raw_state()
        if st.get("state") in states.LIVE or not st:
            if self.stop_requested and m.run.rows() == 0:
                # stopped before it trained (a queued job cancelled, an engine still starting)
                m.run.file(runs.STATE).unlink(missing_ok=True)  # pending again
            else:
                # its engine ended without a word (killed, out of memory, a time limit): say so
                reason = h.story or f"its engine ended ({h.label}) without a word"
                runs.write_json_atomic(m.run.file(runs.STATE), {
                    **st, "state": states.CRASHED, "reason": reason, "ended": time.time()})
        self.ended.append(h)
        log.info("%s: %s (%s)", m.id, m.run.raw_state().get("state"), h.label)

    def _finish(self) -> int:
        unfinished = [m for m in self.sweep.members
                      if m.run.raw_state().get("state") != states.FINISHED]
        crashed = [h.member for h in self.ended
                   if h.member.run.raw_state().get("state") == states.CRASHED]
        if self.stop_requested and unfinished:
            self._state(states.STOPPED)
            return 0
        if crashed:
            first = crashed[0]
            why = launch.engine_failure(first.run) or "no reason recorded"
            n = len(crashed)
            reason = (f"{n} member{'s' * (n != 1)} crashed; {first.id}: {why}"
                      f" (dlf-tui resume {self.sweep.id} retries them)")
            self._state(states.CRASHED, reason)
            return 1
        if unfinished:
            ids = ", ".join(m.id for m in unfinished[:3]) + (" …" if len(unfinished) > 3 else "")
            self._state(states.STOPPED, f"{len(unfinished)} members stopped before the end ({ids}): "
                                        f"dlf-tui resume {self.sweep.id} continues them")
            return 0
        self._state(states.FINISHED)
        return 0
