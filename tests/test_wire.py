"""The client's side of the protocol, against a fake engine on a real Unix socket
(no torch, no engine process): the hello's protocol version is checked before
anything is sent."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlf_tui.cli.main import app
from dlf_tui.core.errors import ClientError
from dlf_tui.store import run as runs
from dlf_tui.wire import protocol
from dlf_tui.wire.client import Client, unix_address

from .conftest import tiny_config


class FakeEngine:
    """Listens on ``run_dir/control.sock``, sends ``first`` to one client, then
    records everything the client sends until it closes the connection."""

    def __init__(self, run_dir: Path, first: bytes):
        self.first = first
        self.received = b""
        self.closed_by_client = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with unix_address(Path(run_dir) / runs.SOCKET) as address:
            self.sock.bind(address)
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(self.first)
            while True:
                data = conn.recv(65536)
                if not data:
                    self.closed_by_client.set()
                    return
                self.received += data

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def hello_line(**fields) -> bytes:
    d = protocol.Hello(run_id="fake").to_dict()
    d.update(fields)
    return (json.dumps(d) + "\n").encode()


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return runs.create_run(tiny_config(), tmp_path / "runs").path


@pytest.fixture
def fake(run_dir):
    made: list[FakeEngine] = []

    def start(first: bytes) -> FakeEngine:
        made.append(FakeEngine(run_dir, first))
        return made[-1]

    yield start
    for f in made:
        f.close()


def test_the_same_version_connects(run_dir, fake):
    engine = fake(hello_line())
    with Client.connect(run_dir, timeout=5) as c:
        assert isinstance(c.hello, protocol.Hello)
        assert c.hello.run_id == "fake" and c.hello.version == protocol.PROTOCOL_VERSION
    assert engine.closed_by_client.wait(5)


@pytest.mark.parametrize("extra", [{}, {"a_field_of_version_99": [1, 2]}])
def test_another_version_is_refused_in_one_line(run_dir, fake, extra):
    """Refused on the version, even when that hello has fields this version does not know."""
    engine = fake(hello_line(version=99, **extra))
    with pytest.raises(ClientError) as info:
        Client.connect(run_dir, timeout=5)
    text = str(info.value)
    assert len(text.splitlines()) == 1, text
    assert f"engine speaks protocol 99, this dlf-tui speaks {protocol.PROTOCOL_VERSION}: " in text
    assert text.startswith(f"{run_dir.name}: ")
    assert engine.closed_by_client.wait(5)  # the client hung up ...
    assert engine.received == b""  # ... without sending anything


def test_an_odd_version_value_stays_one_line(run_dir, fake):
    fake(hello_line(version="2\nfake"))
    with pytest.raises(ClientError) as info:
        Client.connect(run_dir, timeout=5)
    assert len(str(info.value).splitlines()) == 1
    assert 'engine speaks protocol "2\\nfake"' in str(info.value)


def test_a_first_message_that_is_not_a_hello_is_refused(run_dir, fake):
    engine = fake(protocol.State(state="running").encode())
    with pytest.raises(ClientError, match="engine sent 'state' instead of hello"):
        Client.connect(run_dir, timeout=5)
    assert engine.closed_by_client.wait(5)


def test_ctl_against_another_version_fails_with_one_error_line(run_dir, fake):
    engine = fake(hello_line(version=protocol.PROTOCOL_VERSION + 1))
    r = CliRunner().invoke(app, ["ctl", str(run_dir), "pause"], catch_exceptions=False)
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert (f"engine speaks protocol {protocol.PROTOCOL_VERSION + 1}, "
            f"this dlf-tui speaks {protocol.PROTOCOL_VERSION}") in lines[0]
    assert r.stdout == ""
    assert engine.closed_by_client.wait(5) and engine.received == b""  # no pause was sent
