"""Talk to a running engine over its Unix socket (no torch, no textual).

    with Client.connect(run_dir) as c:
        hello = c.hello
        c.request("set", {"amplitude": 30})      # -> Reply (raises EngineRefused)
        for msg in c.messages(timeout=1.0): ...  # metrics, eval, state, log, ...

A ``Client`` is used from one thread.  ``request`` keeps any message that
arrives before the reply, so ``messages`` still yields it afterwards.  An
engine whose hello names another ``protocol.PROTOCOL_VERSION`` is refused
(``ClientError``) before anything is sent to it.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dlf_tui.core.errors import ClientError, EngineRefused, ProtocolError, printable
from dlf_tui.store import run as runs
from dlf_tui.wire import protocol


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
    def __init__(self, sock: socket.socket, run_dir: Path):
        self.sock = sock
        self.run_dir = run_dir
        self._buf = bytearray()
        self._pending: deque[protocol.Message] = deque()
        self._ids = itertools.count(1)
        self.closed = False
        try:
            self.hello: protocol.Hello = self._read_hello(timeout=10.0)
        except BaseException:
            self.close()
            raise

    def _read_hello(self, timeout: float) -> protocol.Hello:
        line = self._line(timeout)
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
    def connect(cls, run_dir: str | Path, timeout: float = 5.0) -> "Client":
        with unix_address(Path(run_dir) / runs.SOCKET) as address:
            return cls._connect(Path(run_dir), address, timeout)

    @classmethod
    def _connect(cls, run_dir: Path, address: str, timeout: float) -> "Client":
        path = run_dir / runs.SOCKET
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(address)
                return cls(sock, run_dir)
            except (FileNotFoundError, ConnectionRefusedError) as err:
                sock.close()
                last = err
            except OSError as err:
                sock.close()
                raise ClientError(f"cannot connect to {path}: {err.strerror or err}") from None
            if time.monotonic() >= deadline:
                state = runs.Run(run_dir).state().get("state", runs.UNKNOWN)
                why = "no engine is listening" if isinstance(last, ConnectionRefusedError) else "no control socket"
                raise ClientError(f"{run_dir.name}: {why} (run is {state})")
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

    def request(self, name: str, values: dict | None = None, timeout: float = 10.0) -> protocol.Reply:
        """Send a command and wait for its reply; raises ``EngineRefused`` if refused."""
        try:
            cid = self.send(name, values)
        except ProtocolError as err:
            raise EngineRefused(str(err)) from None
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise ClientError(f"no reply to {name} within {timeout:g} s")
            if isinstance(msg, protocol.Reply) and msg.id == cid:
                if not msg.ok:
                    raise EngineRefused(msg.error)
                return msg
            self._pending.append(msg)

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
        """One message, or None on timeout / end of stream."""
        line = self._line(timeout)
        return None if line is None else self._decode(line)

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
            self._buf += data


def request(run_dir: str | Path, name: str, values: dict | None = None,
            timeout: float = 10.0) -> protocol.Reply:
    """Connect, send one command, wait for the reply, disconnect."""
    with Client.connect(run_dir) as c:
        return c.request(name, values, timeout)
