"""The engine's control socket: one selector thread serves every client.

Clients can never stall training: sends are non-blocking into a bounded
per-client buffer, and a client whose buffer overflows (it stopped reading) is
dropped; it can reattach and read its history from disk.  Commands are parsed
and validated here (``protocol.decode``); bad ones get an error reply at once,
good ones are queued for the trainer, which applies them between updates.
No torch here.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from dlf_tui.core.errors import ProtocolError, printable
from dlf_tui.wire import protocol
from dlf_tui.wire.client import unix_address

log = logging.getLogger("dlf_tui.engine")

MAX_BUFFERED = 32 << 20  # bytes queued to one client before it is dropped
REFUSALS_LOGGED_PER_SECOND = 20  # beyond this, refusals are answered but only counted


class _Client:
    __slots__ = ("id", "sock", "inbuf", "outbuf", "discarding")

    def __init__(self, cid: int, sock: socket.socket):
        self.id = cid
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.discarding = False  # dropping the rest of an oversized line


class ControlServer:
    def __init__(self, path: Path, hello: Callable[[], protocol.Hello],
                 on_refused: Callable[[str], None] | None = None,
                 greeting: Callable[[], list[protocol.Message]] | None = None):
        """``hello()``: a new client's first message; ``greeting()``: what follows it
        at once (the state's reason, when it has one)."""
        self.path = Path(path)
        self.hello = hello
        self.greeting = greeting or (lambda: [])
        self.on_refused = on_refused or (lambda msg: None)
        self.commands: deque[tuple[int, protocol.Command]] = deque()
        self.wakeup = threading.Event()  # set when a command arrives (the paused trainer waits on it)
        self.lock = threading.Lock()  # orders hello vs. chunk publication
        self.clients: dict[int, _Client] = {}
        self._next_id = 1
        self._sel = selectors.DefaultSelector()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._closing = False
        self._thread: threading.Thread | None = None
        self._refusal_window, self._refusals_logged, self._refusals_dropped = 0.0, 0, 0

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            with unix_address(self.path) as address:  # deep run directories too
                sock.bind(address)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, "accept")
        self._sel.register(self._r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="control-server", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued (best effort, bounded), then close everything."""
        self._closing = True
        self._wake()
        if self._thread:
            self._thread.join(timeout)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    @property
    def has_clients(self) -> bool:
        return bool(self.clients)

    # -- sending (called from the trainer thread) -------------------------------
    def publish(self, msg: protocol.Message) -> None:
        """Queue ``msg`` to every client.  Call with ``self.lock`` held when the
        message must be ordered against hellos (metric chunks)."""
        if not self.clients:
            return
        data = msg.encode()
        for c in list(self.clients.values()):
            self._queue(c, data)
        self._wake()

    def broadcast(self, msg: protocol.Message) -> None:
        with self.lock:
            self.publish(msg)

    def reply(self, client_id: int, msg: protocol.Message) -> None:
        with self.lock:
            c = self.clients.get(client_id)
            if c is not None:
                self._queue(c, msg.encode())
        self._wake()

    def _queue(self, c: _Client, data: bytes) -> None:
        if len(c.outbuf) + len(data) > MAX_BUFFERED:
            log.warning("client %d is not reading; dropped (it can reattach)", c.id)
            c.outbuf.clear()
            self.clients.pop(c.id, None)
            # the selector thread closes the socket when it sees it gone
            return
        c.outbuf += data

    def _wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- the selector thread ------------------------------------------------------
    def _serve(self) -> None:
        registered: dict[int, _Client] = {}
        beat, next_beat = protocol.Beat().encode(), time.monotonic() + protocol.BEAT_S
        while True:
            for key, events in self._sel.select(timeout=max(0.0, min(0.5, next_beat - time.monotonic()))):
                if key.data == "accept":
                    self._accept(registered)
                elif key.data == "wake":
                    try:
                        while os.read(self._r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                elif events & selectors.EVENT_READ:
                    self._readable(key.data)
            with self.lock:
                if time.monotonic() >= next_beat:  # proof of life, even while training is busy
                    next_beat = time.monotonic() + protocol.BEAT_S
                    for c in list(self.clients.values()):
                        self._queue(c, beat)
                live = dict(self.clients)
            for cid, c in list(registered.items()):
                if cid not in live:
                    self._drop(c, registered)
                    continue
                self._flush(c, registered)
            if self._closing:
                for c in list(registered.values()):
                    self._flush(c, registered, final=True)
                    self._drop(c, registered)
                self._sel.close()
                self._listener.close()
                return

    def _accept(self, registered: dict[int, _Client]) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        sock.setblocking(False)
        with self.lock:
            c = _Client(self._next_id, sock)
            self._next_id += 1
            try:
                first = [self.hello(), *self.greeting()]
            except Exception:  # noqa: BLE001 - a bug there must not kill this thread
                log.exception("cannot greet a client")
                sock.close()
                return
            self._queue(c, b"".join(m.encode() for m in first))
            self.clients[c.id] = c
        registered[c.id] = c
        self._sel.register(sock, selectors.EVENT_READ, c)

    def _readable(self, c: _Client) -> None:
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            with self.lock:
                self.clients.pop(c.id, None)
            return
        c.inbuf += data
        while True:
            nl = c.inbuf.find(b"\n")
            if c.discarding:  # the tail of a line already refused as too long
                if nl < 0:
                    c.inbuf.clear()
                    return
                del c.inbuf[: nl + 1]
                c.discarding = False
                continue
            if nl < 0:
                if len(c.inbuf) > protocol.MAX_LINE:
                    self._refuse(c, 0, f"message too long (over {protocol.MAX_LINE} bytes)")
                    c.inbuf.clear()
                    c.discarding = True
                return
            line = bytes(c.inbuf[:nl])
            del c.inbuf[: nl + 1]
            if not line.strip():
                continue
            try:
                msg = protocol.decode(line)
                if not isinstance(msg, protocol.Command):
                    raise ProtocolError(f"{msg.type!r} is not a command")
            except ProtocolError as err:
                self._refuse(c, _guess_id(line), str(err))
                continue
            except Exception as err:  # noqa: BLE001 - a validation bug must not kill this thread
                log.exception("unexpected error decoding a command")
                self._refuse(c, _guess_id(line), f"internal error: {type(err).__name__}")
                continue
            self.commands.append((c.id, msg))
            self.wakeup.set()

    def _refuse(self, c: _Client, cid: int, reason: str) -> None:
        reason = printable(reason)
        if len(reason) > 200:
            reason = reason[:197] + "..."
        # a flood of bad lines must not fill the disk or the other clients' queues
        now = time.monotonic()
        if now - self._refusal_window >= 1.0:
            if self._refusals_dropped:
                self._tell_refused(f"{self._refusals_dropped} more refusals not logged")
            self._refusal_window, self._refusals_logged, self._refusals_dropped = now, 0, 0
        if self._refusals_logged < REFUSALS_LOGGED_PER_SECOND:
            self._refusals_logged += 1
            log.warning("refused a command from client %d: %s", c.id, reason)
            self._tell_refused(reason)
        else:
            self._refusals_dropped += 1
        self.reply(c.id, protocol.Reply(id=cid, ok=False, error=reason))

    def _tell_refused(self, reason: str) -> None:
        try:
            self.on_refused(reason)
        except Exception:  # noqa: BLE001 - recording it failed (the run directory is gone): keep serving
            log.exception("cannot record a refusal")

    def _flush(self, c: _Client, registered: dict[int, _Client], final: bool = False) -> None:
        with self.lock:
            pending = bytes(c.outbuf if final else c.outbuf[: 1 << 18])
        if not pending:
            if not final and c.id in registered:
                try:
                    if self._sel.get_key(c.sock).events != selectors.EVENT_READ:
                        self._sel.modify(c.sock, selectors.EVENT_READ, c)
                except (KeyError, ValueError):
                    pass
            return
        try:
            if final:
                c.sock.settimeout(0.5)
                c.sock.sendall(pending)
                sent = len(pending)
            else:
                sent = c.sock.send(pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            with self.lock:
                self.clients.pop(c.id, None)
            return
        with self.lock:
            del c.outbuf[:sent]
            pending_left = bool(c.outbuf)
        if not final and c.id in registered:
            # wait for writability only while something is pending (no busy loop)
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending_left else 0)
            try:
                if self._sel.get_key(c.sock).events != mask:
                    self._sel.modify(c.sock, mask, c)
            except (KeyError, ValueError):
                pass

    def _drop(self, c: _Client, registered: dict[int, _Client]) -> None:
        registered.pop(c.id, None)
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()


def _guess_id(line: bytes) -> int:
    """The ``id`` of a refused command, when it can be read, so the reply matches."""
    import json

    try:
        d = json.loads(line)
        v = d.get("id") if isinstance(d, dict) else None
        return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53 else 0
    except (ValueError, RecursionError):
        return 0


class NullServer:
    """The server of an engine nobody connects to (a sweep member): same surface, no socket."""

    has_clients = False

    def __init__(self) -> None:
        self.commands: deque = deque()
        self.wakeup = threading.Event()
        self.lock = threading.Lock()

    def start(self) -> None:
        pass

    def close(self, timeout: float = 2.0) -> None:
        pass

    def publish(self, msg: protocol.Message) -> None:
        pass

    broadcast = publish

    def reply(self, client_id: int, msg: protocol.Message) -> None:
        pass
