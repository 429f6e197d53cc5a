"""Talk to a running engine over its Unix socket (no torch, no textual).

    with Client.connect(run_dir) as c:
        hello = c.hello
        c.request("set", {"amplitude": 30})      # -> Reply (raises EngineRefused)
        for msg in c.messages(timeout=1.0): ...  # metrics, eval, state, log, ...

A ``Client`` is used from one thread.  ``request`` keeps any message that
arrives before the reply, so ``messages`` still yields it afterwards.  An
engine whose hello names another ``protocol.PROTOCOL_VERSION`` is refused
(``ClientError``) before anything is sent to it.

Every wait is bounded and every failure is one line that names the engine's
pid and what to do: an engine whose server thread does not say hello within
``HELLO_TIMEOUT_S`` (stopped, deadlocked, swapping) is "not responding"; a run
with no engine says its state and the engine's own reason.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dlf_tui.core import states
from dlf_tui.core.errors import ClientError, EngineRefused, ProtocolError, printable
from dlf_tui.store import liveness
from dlf_tui.store import run as runs
from dlf_tui.wire import protocol

# An engine's server thread answers a new connection at once, whatever training does:
# no hello within this long means the process is not responding.
HELLO_TIMEOUT_S = 4.0
REPLY_TIMEOUT_S = 10.0  # a command is applied between chunks (at most flush_seconds apart)
# The server thread sends a beat every ``protocol.BEAT_S``: nothing at all for this long
# while following means the process is not running (``Client.silence``).
SILENT_S = 5.0


def _peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a connected Unix socket (Linux)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", raw)[0]
        return pid if pid > 0 else None
    except (OSError, AttributeError, struct.error):
        return None


def _recorded_pid(run_dir: Path) -> int | None:
    pid = runs.Run(run_dir).raw_state().get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def not_responding(run_dir: Path, pid: int | None, what: str) -> str:
    """One line: engine pid N is not responding (``what``), why if the kernel knows,
    and what the user can do."""
    pid = pid or _recorded_pid(run_dir)
    name = Path(run_dir).name
    who = f"engine pid {pid}" if pid else "the engine"
    why = liveness.not_responding(pid) if pid else ""
    cont = f"`kill -CONT {pid}` continues it; " if why.startswith("it is stopped") else ""
    end = (f"or end it with `kill {pid}` (`kill -9 {pid}` if that does nothing)" if pid
           else "or end the engine")
    return (f"{name}: {who} is not responding ({what}{'; ' + why if why else ''}): "
            f"{cont}wait and try again, {end}, then `dlf-tui resume {name}` continues "
            "from its last checkpoint")


def no_engine(run_dir: Path, why: str) -> str:
    """One line for a run nobody answers for: its state and the engine's own reason."""
    st = runs.Run(run_dir).state()
    state, reason = st.get("state", runs.UNKNOWN), printable(str(st.get("reason", "") or ""))
    name = Path(run_dir).name
    hint = (f"; `dlf-tui resume {name}` continues it from its last checkpoint"
            if state in (states.CRASHED, states.STOPPED) else "")
    return f"{name}: {why} (run is {state}{': ' + reason if reason else ''}){hint}"


def _ended(run_dir: Path) -> bool:
    """Does the run's state say no engine will ever listen (ended, or its engine gone)?
    (No state.json yet: an engine may still be starting.)"""
    run = runs.Run(run_dir)
    raw = run.raw_state()
    if not raw:
        return False
    return raw.get("state") in states.ENDED or bool(run.state().get("gone"))


@contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An AF_UNIX address for ``path``: the path itself, or, past the kernel's
    108-byte limit (deep run directories, sweep members), the same file reached
    through ``/proc/self/fd/<directory fd>/<name>`` (Linux), which binds and
    connects alike."""
    text = str(path)
    if len(os.fsencode(text)) < 100 or not os.path.isdir("/proc/self/fd"):
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _version_of(line: bytes) -> object:
    """The ``version`` a hello line claims, read before the line is decoded (a hello
    of another version may have fields this one does not know); None if it is not one."""
    try:
        d = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return d.get("version") if isinstance(d, dict) and d.get("type") == protocol.Hello.type else None


class Client:
    def __init__(self, sock: socket.socket, run_dir: Path, hello_timeout: float = HELLO_TIMEOUT_S):
        self.sock = sock
        self.run_dir = run_dir
        self._buf = bytearray()
        self._pending: deque[protocol.Message] = deque()
        self._ids = itertools.count(1)
        self.closed = False
        self.heard = time.monotonic()  # when the engine last sent anything (a beat included)
        self.pid = _peer_pid(sock)  # the engine's
        try:
            self.hello: protocol.Hello = self._read_hello(timeout=hello_timeout)
        except BaseException:
            self.close()
            raise

    def _read_hello(self, timeout: float) -> protocol.Hello:
        line = self._line(timeout)
        if line is None:
            if not self.closed:
                raise ClientError(not_responding(self.run_dir, self.pid,
                                                 f"no hello within {timeout:g} s"))
            raise ClientError(no_engine(self.run_dir, "the engine closed the connection "
                                        "before its hello (it is ending?)"))
        if line is not None:
            version = _version_of(line)
            if version is not None and version != protocol.PROTOCOL_VERSION:
                shown = printable(json.dumps(version, ensure_ascii=False))[:40]
                raise ClientError(
                    f"{self.run_dir.name}: engine speaks protocol {shown}, this dlf-tui speaks "
                    f"{protocol.PROTOCOL_VERSION}: attach with the dlf-tui that started it "
                    f"(or stop it and resume the run with this one)")
        msg = None if line is None else self._decode(line)
        if not isinstance(msg, protocol.Hello):
            raise ClientError(f"engine sent {getattr(msg, 'type', None)!r} instead of hello")
        return msg

    @classmethod
    def connect(cls, run_dir: str | Path, timeout: float = 5.0,
                hello_timeout: float = HELLO_TIMEOUT_S) -> "Client":
        """Connect and read the hello.  ``timeout``: how long to wait for an engine
        that is still starting (a run whose state says it ended fails at once);
        ``hello_timeout``: how long a connected engine may take to say hello."""
        with unix_address(Path(run_dir) / runs.SOCKET) as address:
            return cls._connect(Path(run_dir), address, timeout, hello_timeout)

    @classmethod
    def _connect(cls, run_dir: Path, address: str, timeout: float,
                 hello_timeout: float) -> "Client":
        path = run_dir / runs.SOCKET
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # a full accept queue (an engine that stopped accepting) blocks connect()
            sock.settimeout(max(0.1, min(hello_timeout, deadline - time.monotonic())))
            try:
                sock.connect(address)
            except (FileNotFoundError, ConnectionRefusedError) as err:
                sock.close()
                last = err
            except (socket.timeout, BlockingIOError):
                sock.close()
                raise ClientError(not_responding(run_dir, None, "it accepts no connection")) from None
            except OSError as err:
                sock.close()
                raise ClientError(f"cannot connect to {path}: {err.strerror or err}") from None
            else:
                sock.settimeout(None)
                return cls(sock, run_dir, hello_timeout)
            why = ("no engine is listening" if isinstance(last, ConnectionRefusedError)
                   else "no control socket")
            if time.monotonic() >= deadline or _ended(run_dir):
                raise ClientError(no_engine(run_dir, why))
            time.sleep(0.05)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- sending ---------------------------------------------------------------------
    def send(self, name: str, values: dict | None = None) -> int:
        """Send a command without waiting; returns its id."""
        cid = next(self._ids)
        cmd = protocol.command(name, values, id=cid)  # validates before anything is sent
        try:
            self.sock.sendall(cmd.encode())
        except OSError as err:
            raise ClientError(f"connection to the engine lost: {err.strerror or err}") from None
        return cid

    def request(self, name: str, values: dict | None = None,
                timeout: float = REPLY_TIMEOUT_S) -> protocol.Reply:
        """Send a command and wait for its reply; raises ``EngineRefused`` if refused."""
        try:
            cid = self.send(name, values)
        except ProtocolError as err:
            raise EngineRefused(str(err)) from None
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                if self.closed:
                    raise ClientError(no_engine(self.run_dir, f"the engine closed the connection "
                                                f"before answering {name}"))
                raise ClientError(self._no_reply(name, timeout))
            if isinstance(msg, protocol.Reply) and msg.id == cid:
                if not msg.ok:
                    raise EngineRefused(msg.error)
                return msg
            self._pending.append(msg)

    def _no_reply(self, name: str, timeout: float) -> str:
        what = f"no answer to {name} within {timeout:g} s"
        pid = self.pid or _recorded_pid(self.run_dir)
        if not pid or liveness.not_responding(pid):  # stopped, stuck on the disk, gone
            return not_responding(self.run_dir, pid, what)
        rid = Path(self.run_dir).name
        return (f"{rid}: engine pid {pid} said hello but did not apply {name} within "
                f"{timeout:g} s (its training loop is busy or stuck; it may still apply it): "
                f"wait and try again (ctl --timeout), or end it with `kill {pid}` "
                f"(`kill -9 {pid}` if that does nothing), then `dlf-tui resume {rid}`")

    # -- receiving --------------------------------------------------------------------
    def messages(self, timeout: float | None = None) -> Iterator[protocol.Message]:
        """Yield messages until the engine closes the connection (or ``timeout``
        seconds pass without one, if given)."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            msg = self._read(timeout)
            if msg is None:
                return
            yield msg

    def _read(self, timeout: float | None) -> protocol.Message | None:
        """One message (beats are not messages), or None on timeout / end of stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            line = self._line(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if line is None:
                return None
            msg = self._decode(line)
            if not isinstance(msg, protocol.Beat):
                return msg

    def silence(self, limit: float = SILENT_S) -> str:
        """'' while the engine is heard from; once it has sent nothing, not even a beat,
        for ``limit`` seconds, the one line saying its pid is not responding and what
        the user can do.  For clients that follow a run (``messages`` with a timeout)."""
        quiet = time.monotonic() - self.heard
        if self.closed or quiet < limit:
            return ""
        return not_responding(self.run_dir, self.pid, f"nothing heard from it for {quiet:.0f} s")

    @staticmethod
    def _decode(line: bytes) -> protocol.Message:
        try:
            return protocol.decode_any(line)
        except ProtocolError as err:
            raise ClientError(f"engine sent a bad message: {err}") from None

    def _line(self, timeout: float | None) -> bytes | None:
        """One line without its newline, or None on timeout / end of stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if self.closed:
                return None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining == 0.0 and deadline is not None and time.monotonic() >= deadline:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                return None
            except OSError:
                data = b""
            if not data:
                self.close()
                return None
            self.heard = time.monotonic()
            self._buf += data


def request(run_dir: str | Path, name: str, values: dict | None = None,
            timeout: float = REPLY_TIMEOUT_S) -> protocol.Reply:
    """Connect, send one command, wait for the reply, disconnect; every wait bounded
    (the hello's by ``HELLO_TIMEOUT_S`` or ``timeout``, whichever is shorter)."""
    with Client.connect(run_dir, timeout=min(5.0, timeout),
                        hello_timeout=min(HELLO_TIMEOUT_S, timeout)) as c:
        return c.request(name, values, timeout)
