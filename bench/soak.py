"""Soak: one long run with a TUI attached and many clients at once; prints numbers.

    python bench/soak.py --minutes 10            # the closing note's numbers
    python bench/soak.py --minutes 1 --keep      # a quick look; keep the run directory

For ``--minutes`` a real engine trains ``--preset`` (spiral-fig4 by default, never
finishing) while, at the same time:

- the real TUI (``dlf-tui attach RUN``) runs in a pseudo-terminal, its screen drained;
- ``--editors`` (8) processes each edit ``lr`` in a loop through the client library
  ``dlf-tui ctl`` uses (every edit a new connection, hello, ``set``, reply), every value
  unique, ``--edit-interval`` seconds apart;
- one thread attaches and detaches ``--attaches`` (100) times, spread over the run
  (connect, read the hello and half a second of chunks, hang up);
- one client connects and never reads (the engine drops it at its buffer limit; it
  connects again each time, until the end).

Every ``--sample`` seconds it records updates/s, the engine's and the TUI's RSS.  At the
end it stops the engine and checks, from the files: every update 1..N is in metrics.bin
exactly once, every edit the engine accepted is one ``set`` event at the update its reply
named, and the ``lr`` column of every row is the value of the last edit before it.
Exit status 0 when every check holds.  Speeds depend on the machine: 2 CPU cores here.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pty
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlf_tui.core import config  # noqa: E402
from dlf_tui.core import presets  # noqa: E402
from dlf_tui.core.errors import ClientError  # noqa: E402
from dlf_tui.store import launch  # noqa: E402
from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.wire import client as wire  # noqa: E402


def rss_mib(pid: int | None) -> float:
    if not pid:
        return float("nan")
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- the editors (separate processes, like `dlf-tui ctl` is) --------------------------------
def editor(run_dir: str, index: int, interval: float, stop_at: float, out: str) -> None:
    """Edit lr in a loop: value 0.5 + (index + 16 k) * 1e-7 is unique to edit k of editor
    ``index``; write one JSON line per edit (accepted or not) to ``out``."""
    k = 0
    with open(out, "w") as fh:
        while time.time() < stop_at:
            value = round(0.5 + (index + 16 * k) * 1e-7, 10)
            k += 1
            t0 = time.time()
            try:
                reply = wire.request(run_dir, "set", {"lr": value}, timeout=30.0)
                p = reply.data["params"]
                fh.write(json.dumps({"lr": value, "ok": True, "from": p["step"] + 1,
                                     "s": time.time() - t0}) + "\n")
            except ClientError as err:
                fh.write(json.dumps({"lr": value, "ok": False, "error": str(err)}) + "\n")
            fh.flush()
            time.sleep(interval)


# -- the TUI in a pseudo-terminal --------------------------------------------------------------
class Tui:
    def __init__(self, run: runs.Run, runs_dir: Path, cols: int = 160, rows: int = 48):
        env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        pid, fd = pty.fork()
        if pid == 0:  # the child: the real dlf-tui
            os.execve(sys.executable, [sys.executable, "-m", "dlf_tui", "attach", str(run.path),
                                       "--runs-dir", str(runs_dir)], env)
        import fcntl
        import termios

        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.pid, self.fd = pid, fd
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.fd], [], [], 0.5)
            if r:
                try:
                    data = os.read(self.fd, 1 << 16)
                except OSError:
                    return
                if not data:
                    return
                self.bytes += len(data)

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def close(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            for _ in range(50):
                if not self.alive():
                    break
                time.sleep(0.1)
            else:
                os.kill(self.pid, signal.SIGKILL)
        self._stop.set()
        try:
            os.close(self.fd)
        except OSError:
            pass


# -- attach / detach, and a client that never reads --------------------------------------------
def attacher(run_dir: Path, times: int, stop_at: float, stats: dict) -> None:
    gap = max(0.0, (stop_at - time.time() - 5) / max(times, 1))
    for _ in range(times):
        if time.time() > stop_at:
            break
        t0 = time.time()
        try:
            with wire.Client.connect(run_dir, timeout=10) as c:
                stats["hello_s"] = max(stats["hello_s"], round(time.time() - t0, 3))
                got = 0
                for _ in c.messages(timeout=0.5):  # half a second of the stream, then hang up
                    got += 1
                    if time.time() - t0 > 0.5:
                        break
            stats["attached"] += 1
            stats["messages"] += got
        except ClientError as err:
            stats["failed"] += 1
            stats["last_error"] = str(err)
        time.sleep(max(0.0, gap - (time.time() - t0)))


def never_reader(run_dir: Path, stop_at: float, stats: dict) -> None:
    while time.time() < stop_at:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            with wire.unix_address(run_dir / runs.SOCKET) as address:
                s.connect(address)
        except OSError:
            s.close()
            time.sleep(1)
            continue
        stats["connections"] += 1
        p = select.poll()
        p.register(s, select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0))
        while time.time() < stop_at:  # never reads: only notices the engine hung up
            if p.poll(1000):
                stats["dropped"] += 1
                break
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--preset", default="spiral-fig4")
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    ap.add_argument("--editors", type=int, default=8)
    ap.add_argument("--edit-interval", type=float, default=0.25)
    ap.add_argument("--attaches", type=int, default=100)
    ap.add_argument("--sample", type=float, default=10.0)
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dlf-soak-"))
    runs_dir = tmp / "runs"
    cfg = presets.find(args.preset)
    cfg = config.apply_overrides(cfg, ["run.steps=2000000000", "run.device=cpu", *args.set])
    run = runs.create_run(cfg, runs_dir)
    proc = launch.spawn_run_engine(run)
    launch.wait_until_listening(run, proc)
    print(f"soak: {run.path} ({args.preset}), {args.minutes:g} min, engine pid {proc.pid}",
          flush=True)
    t_start = time.time()
    stop_at = t_start + 60 * args.minutes

    tui = Tui(run, runs_dir)
    ctx = mp.get_context("spawn")
    outs = [tmp / f"editor-{i}.jsonl" for i in range(args.editors)]
    editors = [ctx.Process(target=editor, args=(str(run.path), i, args.edit_interval, stop_at,
                                                str(outs[i])), daemon=True)
               for i in range(args.editors)]
    for e in editors:
        e.start()
    att = {"attached": 0, "failed": 0, "messages": 0, "hello_s": 0.0, "last_error": ""}
    nev = {"connections": 0, "dropped": 0}
    threads = [threading.Thread(target=attacher, args=(run.path, args.attaches, stop_at, att),
                                daemon=True),
               threading.Thread(target=never_reader, args=(run.path, stop_at, nev), daemon=True)]
    for t in threads:
        t.start()

    samples = []
    last_t, last_rows = time.time(), run.rows()
    while time.time() < stop_at:
        time.sleep(min(args.sample, max(0.1, stop_at - time.time())))
        now, rows = time.time(), run.rows()
        samples.append({"t": round(now - t_start, 1), "updates": rows,
                        "updates_per_s": round((rows - last_rows) / max(now - last_t, 1e-9)),
                        "engine_rss_mib": round(rss_mib(proc.pid), 1),
                        "tui_rss_mib": round(rss_mib(tui.pid), 1), "tui_alive": tui.alive()})
        last_t, last_rows = now, rows
        s = samples[-1]
        print(f"  t={s['t']:>6.0f}s  updates {rows:>11,}  {s['updates_per_s']:>7,}/s  "
              f"engine {s['engine_rss_mib']:.0f} MiB  tui {s['tui_rss_mib']:.0f} MiB", flush=True)
        if proc.poll() is not None:
            print(f"engine exited: {launch.engine_failure(run)}", flush=True)
            break

    for e in editors:
        e.join(60)
    for t in threads:
        t.join(30)
    tui_ok = tui.alive()
    tui.close()
    try:
        wire.request(run.path, "stop", timeout=60)
    except ClientError as err:
        print(f"stop: {err}")
    code = proc.wait(300)

    # -- what the files say ------------------------------------------------------------------
    edits = [json.loads(line) for o in outs if o.exists() for line in o.read_text().splitlines()]
    accepted = [e for e in edits if e["ok"]]
    cols = run.columns()
    n = run.rows()
    si, li = cols.index("step"), cols.index("lr")
    steps = np.empty(n)
    lrs = np.empty(n)
    block = 1 << 20
    for a in range(0, n, block):  # a column at a time, in blocks: the file may be GBs
        m = run.read("metrics", a, min(n, a + block))
        steps[a:a + len(m)] = m[:, si]
        lrs[a:a + len(m)] = m[:, li]
    every_update_once = bool(np.array_equal(steps, np.arange(1, n + 1)))
    sets = [e for e in run.events() if e.get("kind") == "set"]
    by_lr: dict[float, list[dict]] = {}
    for e in sets:
        by_lr.setdefault(e.get("changes", {}).get("lr"), []).append(e)
    in_events = sum(1 for a in accepted if [ev["step"] for ev in by_lr.get(a["lr"], [])] == [a["from"]])
    # the lr of every update: the initial one, then the last edit at or before it
    expect = np.full(n, float(cfg.optim.lr))
    for e in sorted(sets, key=lambda e: e["step"]):  # events are in the order applied
        if "lr" in e.get("changes", {}) and e["step"] <= n:
            expect[e["step"] - 1:] = e["changes"]["lr"]
    lr_matches = bool(np.array_equal(lrs, expect))
    rss0, rss1 = samples[0] if samples else {}, samples[-1] if samples else {}
    result = {
        "minutes": args.minutes, "preset": args.preset, "updates": n,
        "edits_sent": len(edits), "edits_accepted": len(accepted),
        "edits_in_events_at_their_update": in_events,
        "edit_reply_s_max": round(max((a["s"] for a in accepted), default=0.0), 3),
        "edits_refused_or_failed": len(edits) - len(accepted),
        "attach_detach": att, "never_reader": nev,
        "every_update_once": every_update_once, "lr_column_matches_events": lr_matches,
        "engine_exit": code, "state": run.state().get("state"), "tui_alive_at_end": tui_ok,
        "engine_rss_mib": [rss0.get("engine_rss_mib"), rss1.get("engine_rss_mib")],
        "tui_rss_mib": [rss0.get("tui_rss_mib"), rss1.get("tui_rss_mib")],
        "updates_per_s": [s["updates_per_s"] for s in samples],
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    ok = (every_update_once and lr_matches and in_events == len(accepted) and code == 0
          and tui_ok and att["failed"] == 0)
    print("soak:", "every check holds" if ok else "A CHECK FAILED")
    if args.keep:
        print(f"kept {run.path}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
