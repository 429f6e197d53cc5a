"""Hostile input (issue 4, items 5 and 6): hypothesis throws malformed cases at
preset files, ``--set`` flags, ``ctl`` arguments and the raw control socket of
one real engine.  Every case must end in exit 0 (it happened to be valid) or a
one-line ``error: ...`` (exit 2, or 1 when the engine refused), or, on the
socket, one error reply per line; never a traceback, and the engine keeps
training.  Clients that stop reading never stall training; the socket is 0600
in a 0700 run directory.

Bugs still open in the product are listed in ``OPEN_BUGS``: each has a strict
xfail test below, and the property tests skip (``reject``) the inputs that
trigger it, counting them.  Fixing a bug = deleting its entry: the xfail test
then runs as a normal test and the property tests stop skipping its inputs.
The counts of cases tried per category are printed when the module finishes.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dlf_tui.core import config
from dlf_tui.core.errors import ConfigError, ProtocolError
from dlf_tui.wire import protocol
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.cli.main import app
from dlf_tui.wire.server import MAX_BUFFERED, _guess_id

from .conftest import LiveRun, tiny_config

runner = CliRunner()

# name -> what is wrong (the xfail reason).  Delete an entry once it is fixed.
OPEN_BUGS: dict[str, str] = {}  # all ten found by this file are fixed (see git log)

# Try a fix before deleting its entry: DLF_HOSTILE_FIXED=name,name (or "all") treats those as fixed.
_fixed = {n.strip() for n in os.environ.get("DLF_HOSTILE_FIXED", "").split(",") if n.strip()}
OPEN_BUGS = {} if "all" in _fixed else {k: v for k, v in OPEN_BUGS.items() if k not in _fixed}

CASES: Counter = Counter()  # category -> cases tried
KNOWN: Counter = Counter()  # (category, bug) -> cases skipped because of an open bug

HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much,
          HealthCheck.data_too_large, HealthCheck.large_base_example]


def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=HEALTH)


def open_bug(name: str):
    return pytest.mark.xfail(name in OPEN_BUGS, reason=OPEN_BUGS.get(name, name), strict=True)


def known(category: str, bug: str) -> None:
    """Skip this example: it hits a bug that is listed (and tested) as open."""
    KNOWN[category, bug] += 1
    reject()


def classify(exc: BaseException) -> str | None:
    text = str(exc)
    if isinstance(exc, TypeError) and "not JSON serializable" in text:
        return "toml-dates"
    if isinstance(exc, OverflowError) and "too large to convert to float" in text:
        return "huge-int-float"
    if isinstance(exc, ValueError) and "integer string conversion" in text:
        return "int-digits"
    if isinstance(exc, RecursionError):
        return "toml-recursion"
    if isinstance(exc, UnicodeEncodeError) and "surrogates" in text:
        return "surrogate-output"
    return None


BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on


def has_break(s: str) -> bool:
    return any(ch in s for ch in BREAKS)


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    lines = ["", "hostile input: cases tried per category (tracebacks seen = failures = 0 if green)"]
    for cat, n in sorted(CASES.items()):
        lines.append(f"  {cat:<34} {n:>6}")
    if KNOWN:
        lines.append("  skipped because they hit an OPEN_BUGS entry:")
        for (cat, bug), n in sorted(KNOWN.items()):
            lines.append(f"    {cat:<20} {bug:<22} {n:>5}")
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print("\n".join(lines), flush=True)
    else:  # pragma: no cover
        print("\n".join(lines))


# ---------------------------------------------------------------------------
# Running the CLI and checking its one rule
# ---------------------------------------------------------------------------


def invoke(args: list[str], category: str):
    """CliRunner with catch_exceptions=False: a traceback fails the test, unless it
    is an open bug, in which case the example is skipped (and counted)."""
    CASES[category] += 1
    try:
        return runner.invoke(app, args, catch_exceptions=False)
    except Exception as exc:
        bug = classify(exc)
        if bug in OPEN_BUGS:
            known(category, bug)
        raise


def assert_one_error_line(result, codes=(2,), names: str | None = None) -> str:
    assert "Traceback" not in result.output
    assert result.exit_code in codes, (result.exit_code, result.output)
    text = result.stderr
    assert text.endswith("\n"), repr(text)
    body = text[:-1]
    assert not has_break(body), f"not one line: {text!r}"
    assert body.startswith("error: "), repr(text)
    if names is not None:
        assert names in body, (names, body)
    assert result.stdout == "", repr(result.stdout)
    return body


def check_shown_config(result, category: str) -> None:
    """exit 0 from ``presets show``: nothing on stderr, and the TOML loads back."""
    CASES[f"{category}: exit 0 (valid)"] += 1
    assert result.stderr == ""
    try:
        config.loads(result.stdout, "stdout")
    except ConfigError:
        if "\x7f" in result.stdout and "del-round-trip" in OPEN_BUGS:
            known(category, "del-round-trip")
        raise


# ---------------------------------------------------------------------------
# Strategies: text pieces shared by files, flags and ctl
# ---------------------------------------------------------------------------

KEYS_BY_SECTION = {s: [f.name for f in fields(cls)] for s, cls in config.SECTIONS.items()}
REAL_KEYS = [f"{s}.{k}" for s, ks in KEYS_BY_SECTION.items() for k in ks] + list(config.TOP_KEYS)
NEAR_KEYS = ["schedule", "schedule.", ".amplitude", "schedule..amplitude", "Schedule.amplitude",
             "schedule.amplitude.x", " run.steps", "run.steps ", "data.x", "x.y", "amplitude",
             "lr", "period", "optim", "run", "name.x", "", " ", "=", "a b.c"]
NUM_TOKENS = ["nan", "+nan", "-nan", "inf", "+inf", "-inf", "NaN", "Infinity", "-Infinity",
              "1e400", "-1e400", "1e-400", "5e-324", "1.7976931348623157e308", "0", "-0", "+0",
              "-1", "1.5", "0.0", "1_000", "0x10", "0o17", "0b101", "1__0", "01", ".5", "5.",
              "1e", "9" * 19, "-" + "9" * 19, "9" * 400, "1" * 5000, str(2**53), str(2**62),
              str(2**62 + 1), str(2**63), str(-2**63), "true", "false", "True"]
DATE_TOKENS = ["1979-05-27", "07:32:00", "1979-05-27T07:32:00Z", "1979-05-27 07:32:00.999-07:00",
               "1979-05-27T00:32:00"]
ODD_TOKENS = ["", " ", "=", "==", "[]", "[1,2]", "1,2", "[0]", "[[1]]", "[1, 2.5]", "{}", "{a=1}",
              '""', "''", '"x"', "[100,100]", "100,100", "[-1]", "[1000001]", "\x00", "\n", "a\nb",
              "\r", "\u2028", "\x7f", "\udcff", "\U0001f642", "x" * 300, "[" * 50, '"' * 3]
hostile_chars = st.one_of(st.characters(), st.sampled_from("\n\r\x00\x7f\x85\u2028\udcff=[]{}\"'.,#"),
                          st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
hostile_text = st.text(hostile_chars, max_size=30)


def nested(d: int, closed: bool = True, o: str = "[", c: str = "]") -> str:
    return o * d + (c * d if closed else "")


scalar_text = st.one_of(
    st.sampled_from(NUM_TOKENS + DATE_TOKENS + ODD_TOKENS),
    st.integers().map(str),
    st.integers(min_value=-(10**500), max_value=10**500).map(str),
    st.floats().map(repr),
    st.floats(min_value=0.5, max_value=200.0).map(repr),
    st.integers(-3, 300).map(str),
    hostile_text,
    st.builds(nested, st.integers(1, 3000), st.booleans()),
    st.lists(st.integers(), max_size=5).map(lambda xs: "[" + ",".join(map(str, xs)) + "]"),
)
key_text = st.one_of(st.sampled_from(REAL_KEYS), st.sampled_from(REAL_KEYS),
                     st.sampled_from(NEAR_KEYS), hostile_text)
set_item = st.one_of(
    hostile_text,
    st.sampled_from(["", "=", "==", "a=b=c", "=1", "schedule.amplitude", "name=", "description="]),
    st.builds(lambda k, v: f"{k}={v}", key_text, scalar_text),
    st.builds(lambda k, v: f"{k}={v}", key_text, scalar_text),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(REAL_KEYS), scalar_text),
)


# ---------------------------------------------------------------------------
# 1. Preset TOML files through `dlf-tui presets show FILE`
# ---------------------------------------------------------------------------


def toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(s: str) -> str:
    bare = s and all(c.isascii() and (c.isalnum() or c in "-_") for c in s)
    return s if bare else toml_str(s)


def toml_float(x: float) -> str:
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return repr(x)


no_surrogates = st.characters(exclude_categories=("Cs",))
toml_text = st.text(st.one_of(no_surrogates, st.sampled_from("\n\x7f\u2028\x00\"\\")), max_size=20)
toml_key_text = st.one_of(st.sampled_from([k for ks in KEYS_BY_SECTION.values() for k in ks]),
                          st.sampled_from(list(config.SECTIONS) + list(config.TOP_KEYS)),
                          toml_text.map(toml_key))
toml_scalar = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from([t for t in NUM_TOKENS if t not in ("True",)] + DATE_TOKENS),
    st.floats().map(toml_float),
    st.booleans().map(lambda b: "true" if b else "false"),
    toml_text.map(toml_str),
    st.dates().map(str),
    st.datetimes().map(lambda d: d.isoformat()),
    st.times().map(lambda t: t.isoformat()),
)
toml_value = st.recursive(
    toml_scalar,
    lambda c: st.one_of(
        st.lists(c, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(toml_key_text, c, max_size=3).map(
            lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}")),
    max_leaves=8,
)
deep_toml_value = st.one_of(
    st.integers(1, 4000).map(lambda d: "[" * d + "1" + "]" * d),
    st.integers(1, 2000).map(lambda d: "{a = " * d + "1" + "}" * d),
)


def plausible(section: str, key: str) -> st.SearchStrategy[str]:
    """Values of the right type for ``section.key``, often in range: some files are valid."""
    tp = config.type_of(section, key)
    rule = next(f for f in fields(config.SECTIONS[section]) if f.name == key).metadata["check"] or ""
    if tp is bool:
        return st.sampled_from(["true", "false", "1", '"true"'])
    if tp is int:
        return st.one_of(st.integers(-3, 10**6).map(str), st.sampled_from(["0", "1", "2.0", "1e3"]))
    if tp is float:
        return st.one_of(st.floats(-1, 1000).map(toml_float), st.integers(-3, 300).map(str),
                         st.sampled_from(["nan", "inf", "-inf", "0.5"]))
    if tp is str:
        choices = rule[len("choice:"):].split(",") if rule.startswith("choice:") else ["cpu", "auto", "cuda:0", "tpu"]
        return st.one_of(st.sampled_from(choices).map(toml_str), toml_text.map(toml_str))
    return st.lists(st.integers(-2, 2_000_000), max_size=4).map(lambda xs: "[" + ", ".join(map(str, xs)) + "]")


@st.composite
def toml_doc(draw) -> str:
    lines = []
    for key in draw(st.lists(st.sampled_from(list(config.TOP_KEYS)) | toml_key_text, max_size=2)):
        lines.append(f"{toml_key(key)} = {draw(st.one_of(toml_text.map(toml_str), toml_value))}")
    for section in draw(st.lists(st.sampled_from(list(config.SECTIONS)) | toml_key_text, max_size=4)):
        header = draw(st.sampled_from(["[{}]", "[{}]", "[{}]", "[[{}]]", "[{}.sub]", "[{}.a.b.c]"]))
        lines.append(header.format(toml_key(section)))
        known_keys = KEYS_BY_SECTION.get(section, [])
        for _ in range(draw(st.integers(0, 5))):
            if known_keys and draw(st.integers(0, 3)):
                key = draw(st.sampled_from(known_keys))
                value = draw(st.one_of(plausible(section, key), plausible(section, key), toml_value,
                                       deep_toml_value if draw(st.integers(0, 20)) == 0 else toml_value))
            else:
                key, value = draw(toml_key_text), draw(toml_value)
            lines.append(f"{toml_key(key)} = {value}")
    return "\n".join(lines) + "\n"


SHIPPED = (Path(config.__file__).resolve().parent.parent / "presets" / "spiral-fig4.toml")
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8") if SHIPPED.exists() else "[run]\nsteps = 10\n"


@st.composite
def garbled(draw, base: st.SearchStrategy[str]) -> str:
    text = draw(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "replace"]))
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        if op == "insert":
            text = text[:i] + draw(hostile_text) + text[i:]
        elif op == "delete":
            text = text[:i] + text[j:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + draw(st.sampled_from(NUM_TOKENS + DATE_TOKENS + ODD_TOKENS)) + text[j:]
    return text


def enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a surrogate -> bytes that are not UTF-8


@st.composite
def bad_utf8(draw, base: st.SearchStrategy[str]) -> bytes:
    data = enc(draw(base))
    i = draw(st.integers(0, len(data)))
    junk = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf8"]))
    return data[:i] + junk + data[i:]


preset_bytes = st.one_of(
    toml_doc().map(enc),
    toml_doc().map(enc),
    garbled(toml_doc()).map(enc),
    garbled(st.just(SHIPPED_TEXT)).map(enc),
    bad_utf8(toml_doc()),
    st.binary(max_size=300),
    hostile_text.map(enc),
    toml_doc().map(lambda t: b"\xef\xbb\xbf" + enc(t)),
)


@fuzz(210)
@given(data=preset_bytes)
@example(data=b"")
@example(data=b"a = " + b"[" * 100000 + b"\n")
@example(data=b"[" + b".".join([b"a"] * 5000) + b"]\n")
@example(data=enc(SHIPPED_TEXT))
def test_preset_files(tmp_path, data):
    path = tmp_path / "hostile.toml"
    path.write_bytes(data)
    r = invoke(["presets", "show", str(path)], "preset files")
    if r.exit_code == 0:
        check_shown_config(r, "preset files")
        return
    if r.exit_code == 2 and has_break(r.stderr[:-1]) and "unknown key" in r.stderr \
            and "newline-in-error" in OPEN_BUGS:
        known("preset files", "newline-in-error")
    body = assert_one_error_line(r, names=str(path))
    assert body.startswith(f"error: {path}: "), body


# ---------------------------------------------------------------------------
# 2. --set overrides through `dlf-tui presets show spiral-fig4 --set ...`
# ---------------------------------------------------------------------------


@fuzz(210)
@given(items=st.lists(set_item, min_size=1, max_size=3))
@example(items=["schedule.amplitude=" + "1" * 400])
@example(items=["="])
@example(items=[""])
@example(items=["model.hidden=[16, 16]", "run.steps=nan"])
def test_set_overrides(items):
    r = invoke(["presets", "show", "spiral-fig4", *[f"--set={i}" for i in items]], "--set flags")
    if r.exit_code == 0:
        check_shown_config(r, "--set flags")
        return
    if has_break(r.stderr[:-1]) and any(has_break(i) for i in items) \
            and "newline-in-error" in OPEN_BUGS:
        known("--set flags", "newline-in-error")
    assert_one_error_line(r, names="--set")


# ---------------------------------------------------------------------------
# One real engine for the ctl and socket tests
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # never finishes; a bigger run than tiny_config's, so that it trains slower and writes
    # fewer metrics to disk over the whole module
    cfg = tiny_config("run.steps=1000000000", "data.points_per_class=300", "model.hidden=[64]",
                      name="hostile")
    run = runs.create_run(cfg, tmp_path_factory.mktemp("hostile") / "runs")
    proc = launch.spawn_run_engine(run)
    live = LiveRun(run, proc)
    try:
        launch.wait_until_listening(run, proc)
        live.wait_rows(100)
        yield live
    finally:
        live.kill()


class Conn:
    """A raw socket client with its own line reader: the test sees exactly what the engine sends."""

    def __init__(self, run_dir: Path, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(Path(run_dir) / runs.SOCKET))
        self.buf = bytearray()
        hello = self.next(timeout)
        assert isinstance(hello, protocol.Hello), hello
        self.hello = hello

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, timeout: float = 10.0) -> protocol.Message | None:
        """The next message; None at end of stream; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                return protocol.decode_any(line)  # the engine itself only sends valid messages
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the engine")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                return None
            self.buf += data

    def replies(self, until, timeout: float = 10.0) -> list[protocol.Reply]:
        """Replies until ``until(replies)`` is true; also checks every log line is one line."""
        got: list[protocol.Reply] = []
        deadline = time.monotonic() + timeout
        while not until(got):
            msg = self.next(max(0.01, deadline - time.monotonic()))
            assert msg is not None, "the engine closed the connection"
            if isinstance(msg, protocol.Reply):
                got.append(msg)
            elif isinstance(msg, protocol.Log):
                assert not has_break(msg.message), msg.message
        return got

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def ensure_training(live: LiveRun) -> None:
    """Undo what valid fuzzed commands may have done (pause, odd parameters)."""
    from dlf_tui.wire import client

    client.request(live.path, "set", {"amplitude": 10.0, "period": 50, "lr": 1.0})
    client.request(live.path, "resume")
    n = live.run.rows()
    live.wait_rows(n + 200, timeout=20)


def assert_engine_healthy(live: LiveRun) -> None:
    assert live.proc.poll() is None, launch.engine_failure(live.run)
    ensure_training(live)
    c = Conn(live.path)  # a later client still connects and gets a hello
    c.send(b'{"type":"resume","id":31337}\n')
    [r] = c.replies(lambda g: any(x.id == 31337 for x in g))
    assert r.ok
    c.close()
    log = (live.path / runs.LOG).read_text(errors="replace")
    assert "Traceback" not in log and "Exception in thread" not in log, log[-3000:]


# ---------------------------------------------------------------------------
# 3. ctl arguments against the running engine
# ---------------------------------------------------------------------------


def ctl_predict(command: str, values: list[str]) -> protocol.Command:
    """What ``ctl`` does before sending (raises ConfigError/ProtocolError for bad input)."""
    parsed = {}
    for item in values:
        key, raw = config.split_assignment(item, "ctl")
        parsed[key] = config.parse_scalar(raw)
    return protocol.command(command, parsed if command == "set" else (parsed or None))


FUZZ_SAFE = (protocol.Set, protocol.Pause, protocol.Resume, protocol.Checkpoint)


def unsafe(cmd: protocol.Command) -> bool:
    """Valid commands the fuzzer must not send to the shared engine: stop (and any other
    command but set/pause/resume/checkpoint, e.g. rollback), and edits that would diverge it."""
    if type(cmd) not in FUZZ_SAFE:
        return True
    if isinstance(cmd, protocol.Set):
        v = cmd.values
        return v.get("lr", 0.0) > 1.0 or v.get("amplitude", 1.0) > 100.0
    return False


ctl_value = st.one_of(
    st.builds(lambda k, v: f"{k}={v}",
              st.sampled_from(["amplitude", "period", "lr", "amplitude", "lr", "period"]), scalar_text),
    st.builds(lambda k, v: f"{k}={v}", key_text, scalar_text),
    st.sampled_from(["", "=", "==", "amplitude", "amplitude=", "=30", "lr==1", "period=50=1"]),
    hostile_text,
)
ctl_command = st.one_of(
    st.sampled_from(["set", "set", "set", "set", "pause", "resume", "checkpoint", "Set", "SET",
                     " set", "set ", "", "=", "jump", "stop!", "pause=1", "-", "--", "-x",
                     "--help", "-h", "stop\n", "\udcff"]),
    hostile_text,
).filter(lambda c: c != "stop")


@fuzz(210)
@given(command=ctl_command, values=st.lists(ctl_value, max_size=4))
@example(command="set", values=["amplitude=30", "period=2000", "lr=0.5"])
@example(command="set", values=["amplitude=" + "9" * 400])
@example(command="pause", values=["amplitude=3"])
@example(command="checkpoint", values=[])
@example(command="resume", values=[])
def test_ctl_arguments(engine, command, values):
    try:
        predicted = "unsafe" if unsafe(ctl_predict(command, values)) else "ok"
    except (ConfigError, ProtocolError):
        predicted = "refused"
    except Exception as exc:  # the CLI below will hit the same; let it decide
        predicted = f"crash: {exc!r}"
    if predicted == "unsafe":
        KNOWN["ctl arguments", "(valid but unsafe: skipped)"] += 1
        reject()
    # `--` so that option-like words reach ctl as arguments (usage errors: see OPEN_BUGS)
    r = invoke(["ctl", "--", str(engine.path), command, *values], "ctl arguments")
    CASES[f"ctl arguments: exit {r.exit_code}"] += 1
    if r.exit_code == 0:
        assert predicted == "ok", (predicted, r.output)
        assert r.stderr == "" and r.stdout.startswith("ok: ") and r.stdout.count("\n") == 1, r.output
    else:
        assert_one_error_line(r, codes=(1, 2))
        assert predicted == "refused" and r.exit_code == 2, (predicted, r.output)


def test_engine_healthy_after_ctl(engine):
    assert_engine_healthy(engine)


# ---------------------------------------------------------------------------
# 4. Raw socket messages
# ---------------------------------------------------------------------------


class Tok(str):
    """A raw JSON token written as is (NaN, Infinity, 1e999, huge integers ...)."""


RAW_TOKENS = [Tok(t) for t in ["NaN", "Infinity", "-Infinity", "-NaN", "1e999", "-1e999", "1e-999",
                               "-0", "0.0", "1E400", "9" * 30, "-" + "9" * 30, "9" * 400, "1" * 5000,
                               "2e308", str(2**53), str(2**53 - 1), str(2**63), str(-2**63 - 1),
                               "true", "null", "01", "1.", ".5", "+1", "0x10"]]
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(hostile_chars, max_size=12),
                      st.sampled_from(RAW_TOKENS))
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3)
                        | st.dictionaries(st.text(hostile_chars, max_size=6), c, max_size=3), max_leaves=8)
live_value = st.one_of(json_leaf, json_any, st.floats(0.01, 1.0), st.integers(-3, 200),
                       st.floats(1.0, 120.0), st.sampled_from(RAW_TOKENS))
CMD_TYPES = ["set", "set", "set", "pause", "resume", "checkpoint", "stop", "hello", "metrics", "eval",
             "state", "reply", "log", "params_changed", "rewound", "Set", "PAUSE", "", "nope", " set"]


def dump(v, ascii_only: bool = True) -> str:
    if isinstance(v, Tok):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=ascii_only) + ":" + dump(x, ascii_only)
                              for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dump(x, ascii_only) for x in v) + "]"
    return json.dumps(v, ensure_ascii=ascii_only)


@st.composite
def message(draw) -> bytes:
    d: dict = {}
    if draw(st.integers(0, 9)):
        d["type"] = draw(st.one_of(st.sampled_from(CMD_TYPES), st.sampled_from(CMD_TYPES), json_any))
    if draw(st.booleans()):
        d["id"] = draw(st.one_of(st.integers(0, 2**53 + 5), st.integers(-5, 50), json_any,
                                 st.sampled_from([0, 2**53, 2**53 - 1, -1, 2**63, Tok("1e999")])))
    if draw(st.integers(0, 2)):
        d["values"] = draw(st.one_of(
            st.dictionaries(st.sampled_from(["amplitude", "period", "lr"]), live_value, min_size=1, max_size=3),
            st.dictionaries(st.sampled_from(["amplitude", "period", "lr"]) | st.text(hostile_chars, max_size=8),
                            live_value, max_size=3),
            json_any))
    if draw(st.integers(0, 5)) == 0:
        d[draw(st.text(hostile_chars, max_size=6))] = draw(json_any)
    items = draw(st.permutations(list(d.items())))
    text = dump(dict(items), ascii_only=draw(st.integers(0, 4)) > 0)
    return enc(text)


# lines that killed the control-server thread (see the xfail tests at the end)
POISON = {
    "huge-int-float": [b'{"type":"set","id":7,"values":{"amplitude":1' + b"0" * 400 + b"}}"],
    "json-recursion-show": [b'{"type":"set","id":%d,"values":{"amplitude":%s}}' % (d, b"[" * d + b"]" * d)
                            for d in range(900, 1001)],
}


@st.composite
def deep_line(draw) -> bytes:
    d = draw(st.one_of(st.integers(1, 3000), st.integers(1, 40000), st.integers(900, 1000)))
    kind = draw(st.sampled_from(["[", "{"]))
    o, c = ("[", "]") if kind == "[" else ('{"a":', "}")
    inner = o * d + ("1" + c * d if draw(st.booleans()) else "")
    where = draw(st.sampled_from(["bare", "values", "id", "type"]))
    line = {"bare": inner, "values": '{"type":"set","values":{"amplitude":' + inner + "}}",
            "id": '{"type":"pause","id":' + inner + "}", "type": '{"type":' + inner + "}"}[where]
    return line.encode()[: protocol.MAX_LINE]


@st.composite
def truncated(draw) -> bytes:
    line = draw(message())
    return line[: draw(st.integers(0, max(0, len(line) - 1)))]


@st.composite
def with_junk(draw) -> bytes:
    line = draw(message())
    i = draw(st.integers(0, len(line)))
    return line[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\x85"])) + line[i:]


socket_line = st.one_of(
    message(), message(), message(), truncated(), with_junk(), deep_line(),
    st.binary(max_size=120), hostile_text.map(enc),
    st.sampled_from([b"", b" ", b"\t", b"\r", b" \r ", b"{}", b"[]", b"null", b"0", b'""', b"{", b"}",
                     b'{"type":', b'{"type":"set"', b"NaN", b"Infinity", b"-Infinity", b'{"type":NaN}',
                     b'{"type":"set","id":NaN}', b'{"type":"set","values":{"lr":NaN}}',
                     b'{"type":"set","values":{"lr":Infinity}}', b'{"type":"set","values":{"lr":1e999}}',
                     b'{"type":"pause","id":-1}', b'{"type":"pause","id":9007199254740992}',
                     b'{"type":"pause"}{"type":"pause"}', b'{"type":"pause","type":"stop!"}',
                     b'{"type":"set","values":{}}', b'{"type":"set","values":[]}', b"\xff\xfe",
                     b'{"type":"pause","id":1,"id":"x"}', b'\x00{"type":"pause"}']),
)


def bracket_depth(line: bytes) -> int:
    depth = best = 0
    for b in line:
        if b in b"[{":
            depth += 1
            best = max(best, depth)
        elif b in b"]}":
            depth -= 1
    return best


def predict(line: bytes) -> tuple[str, object]:
    """What the engine will answer to one complete line, computed with its own decoder
    in a fresh thread (a shallow stack, like the engine's server thread)."""
    out: list = []

    def work():
        if not line.strip():
            out.append(("blank", None))
            return
        try:
            msg = protocol.decode(line)
            if not isinstance(msg, protocol.Command):
                raise ProtocolError(f"{msg.type!r} is not a command")
            out.append(("ok", msg))
        except ProtocolError as err:
            out.append(("refused", str(err)))
        except BaseException as err:  # noqa: BLE001
            out.append(("crash", err))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return out[0]


class Shared:
    """One raw connection reused across examples (reset after a failure)."""

    conn: Conn | None = None
    engine_path: Path | None = None
    ids = iter(range(2**52, 2**53))  # sentinel ids


@pytest.fixture(scope="module")
def shared(engine):
    Shared.engine_path = engine.path
    yield Shared
    if Shared.conn is not None:
        Shared.conn.close()
        Shared.conn = None


def prepare(lines: list[bytes]) -> tuple[list[bytes], list[tuple[str, object, bool]]]:
    """The engine's view of a batch (it splits on newlines), minus lines that would hit an
    open bug, stop the run or diverge it.  Returns the kept lines and their predictions."""
    kept, preds = [], []
    for line in b"\n".join(lines).split(b"\n"):
        line = line[: protocol.MAX_LINE]
        depth = bracket_depth(line)
        if 500 <= depth < 2000 and "json-recursion-show" in OPEN_BUGS:
            KNOWN["socket lines", "json-recursion-show"] += 1
            continue
        kind, what = predict(line)
        if kind == "crash":
            bug = "huge-int-float" if classify(what) == "huge-int-float" else None
            if bug in OPEN_BUGS:
                KNOWN["socket lines", bug] += 1
                continue
            pytest.fail(f"protocol.decode raised {what!r} on {line[:200]!r}: that kills the "
                        f"engine's control-server thread")
        if kind == "refused" and has_break(what) and "newline-in-error" in OPEN_BUGS:
            KNOWN["socket lines", "newline-in-error"] += 1
            continue
        if kind == "ok" and unsafe(what):
            KNOWN["socket lines", "(valid but unsafe: skipped)"] += 1
            continue
        kept.append(line)
        preds.append((kind, what, depth < 500))
    return kept, preds


@fuzz(210)
@given(lines=st.lists(socket_line, min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 200_000), max_size=3))
@example(lines=[b"[" * 30000 + b"]" * 30000], cuts=[])
@example(lines=[b'{"type":"set","id":5,"values":{"amplitude":30,"lr":0.5,"period":80}}', b"",
                b'{"type":"checkpoint","id":6}', b"not json", b'{"type":"pause"}', b'{"type":"resume"}'],
         cuts=[3, 50])
@example(lines=POISON["huge-int-float"], cuts=[])
@example(lines=POISON["json-recursion-show"][40:], cuts=[])
def test_raw_socket_messages(shared, lines, cuts):
    kept, preds = prepare(lines)
    sentinel = next(Shared.ids)
    payload = b"".join(line + b"\n" for line in kept) + b'{"type":"nope","id":%d}\n' % sentinel
    CASES["socket lines"] += len(kept)
    for kind, _, _ in preds:
        CASES[f"socket lines: {kind}"] += 1
    CASES["socket batches (sends)"] += 1
    want_ok = sorted(what.id for kind, what, _ in preds if kind == "ok")
    refused = [(line, shallow) for line, (kind, _, shallow) in zip(kept, preds) if kind == "refused"]
    try:
        if Shared.conn is None:
            Shared.conn = Conn(Shared.engine_path)
        conn = Shared.conn
        bounds = sorted({min(c, len(payload)) for c in cuts} | {0, len(payload)})
        for a, b in zip(bounds, bounds[1:]):  # fragments: lines cut across sends
            conn.send(payload[a:b])
        n_want = sum(kind != "blank" for kind, _, _ in preds) + 1  # + the sentinel's
        got = conn.replies(lambda g: any(r.id == sentinel for r in g) and len(g) >= n_want)
    except BaseException:
        if Shared.conn is not None:
            Shared.conn.close()
            Shared.conn = None
        raise
    mine = [r for r in got if not (r.id == sentinel and not r.ok and "unknown message type" in r.error)]
    assert len(mine) == len(got) - 1
    for r in mine:
        if not r.ok:
            assert r.error and not has_break(r.error), repr(r.error)
    assert sorted(r.id for r in mine if r.ok) == want_ok
    bad = [r for r in mine if not r.ok]
    assert len(bad) == len(refused), ([r.error for r in bad], [line[:80] for line, _ in refused])
    # refusals come back in order, each with the id of its line when it has a readable one
    for r, (line, shallow) in zip(bad, refused):
        if shallow:
            assert r.id == _guess_id(line), (r, line[:200])


@fuzz(30)
@given(size=st.integers(protocol.MAX_LINE + 1, 4 * protocol.MAX_LINE),
       filler=st.sampled_from([b"x", b"[", b"{", b"\xff", b'"', b"9", b'{"type":"set","values":{"a":1}}']),
       newline=st.booleans(), vanish=st.booleans())
@example(size=100000, filler=b"[", newline=True, vanish=False)
@example(size=100000, filler=b"[", newline=False, vanish=False)
def test_oversized_lines(engine, size, filler, newline, vanish):
    """Fresh connection each: a line over 64 KiB (with or without its newline) is refused;
    a client may also vanish in the middle of one."""
    CASES["socket oversized lines"] += 1
    c = Conn(engine.path)
    try:
        body = (filler * (size // len(filler) + 1))[:size]
        if newline:
            sentinel = next(Shared.ids)
            c.send(body + b"\n" + b'{"type":"nope","id":%d}\n' % sentinel)
            got = c.replies(lambda g: any(r.id == sentinel for r in g))
            mine = got[:-1]
            assert got[-1].id == sentinel and not got[-1].ok
            assert mine and all(not r.ok and not has_break(r.error) for r in mine), got
            assert "too long" in mine[0].error, mine[0]
        else:
            c.send(body)
            if vanish:
                return
            [r] = c.replies(lambda g: len(g) >= 1)
            assert not r.ok and "too long" in r.error and not has_break(r.error)
    finally:
        c.close()


@fuzz(60)
@given(part=st.one_of(message(), st.binary(max_size=200), deep_line()))
def test_vanishing_mid_message(engine, bare_server, tmp_path, part):
    """A client that sends part of a line and hangs up leaves nothing behind: the part
    is neither queued nor answered, and the server drops the client, closing its end.
    (The client half-closes, so it can still see what the server does; to the server
    that is the same end of stream as a vanished client.)  Against the engine, and
    against its server class alone, whose command queue and clients can be seen."""
    CASES["socket vanished mid-line"] += 1
    line = part.replace(b"\n", b" ")[: protocol.MAX_LINE]
    for where in (engine.path, tmp_path):
        got = vanish_mid_line(where, line)
        assert not [m for m in got if isinstance(m, protocol.Reply)], got
    assert not bare_server.commands and not bare_server.clients


def vanish_mid_line(run_dir: Path, line: bytes) -> list[protocol.Message]:
    """Connect, send ``line`` without its newline, end the stream; the messages the
    server sent until it closed its end (TimeoutError if it kept the client)."""
    c = Conn(run_dir)
    got: list[protocol.Message] = []
    try:
        try:
            c.send(line)
        except OSError:
            pass
        c.sock.shutdown(socket.SHUT_WR)
        while (msg := c.next(10.0)) is not None:
            got.append(msg)
    finally:
        c.close()
    return got


def test_engine_healthy_after_socket_abuse(engine, shared):
    if Shared.conn is not None:
        Shared.conn.close()
        Shared.conn = None
    assert_engine_healthy(engine)
    st_ = engine.run.state()
    assert st_["state"] == "running", st_


# ---------------------------------------------------------------------------
# 5. A client that stops reading never stalls training; it is dropped
# ---------------------------------------------------------------------------


def rows_per_second(live: LiveRun, seconds: float) -> float:
    n0, t0 = live.run.rows(), time.monotonic()
    time.sleep(seconds)
    return (live.run.rows() - n0) / (time.monotonic() - t0)


def test_client_that_stops_reading_is_dropped_not_waited_for(engine, shared):
    if Shared.conn is not None:
        Shared.conn.close()
        Shared.conn = None
    ensure_training(engine)
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # training speed with and without a client that never reads (best of 3: the box is shared)
        ratios = []
        for _ in range(3):
            base = rows_per_second(engine, 1.0)
            if slow.fileno() >= 0 and not ratios:
                slow.connect(str(engine.path / runs.SOCKET))  # ... and never reads
                time.sleep(0.2)
            with_slow = rows_per_second(engine, 1.0)
            ratios.append(with_slow / max(base, 1.0))
            if ratios[-1] >= 0.5:
                break
        assert max(ratios) >= 0.5, ratios
        CASES["slow client: rate ratio x100"] = int(100 * max(ratios))

        assert engine.run.rows() > 0
    finally:
        slow.close()
    assert_engine_healthy(engine)  # trains, and a new client is served


def test_a_client_that_stops_reading_is_dropped_at_its_buffer_limit(tmp_path, bare_server):
    """The engine's own server class: publish far more than one client's bound to a
    client that never reads; the server drops it instead of growing or blocking."""
    from dlf_tui.wire import server as server_mod

    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(str(tmp_path / runs.SOCKET))
    try:
        deadline = time.monotonic() + 5
        while len(bare_server.clients) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        chunk = protocol.Log(level="info", message="x" * 60000)
        n = server_mod.MAX_BUFFERED // 60000 + 40
        t0 = time.monotonic()
        for _ in range(n):
            bare_server.broadcast(chunk)  # never blocks, whatever the slow client does
        assert time.monotonic() - t0 < 10
        CASES["slow client: bytes pushed (MiB)"] = n * 60000 >> 20
        slow.settimeout(20)
        total = 0
        while True:  # it reads what the kernel held, then end of stream
            data = slow.recv(1 << 20)
            if not data:
                break
            total += len(data)
        assert total < server_mod.MAX_BUFFERED, total
        assert not bare_server.clients
        Conn(tmp_path, timeout=3).close()  # a new client is still served
    finally:
        slow.close()


# ---------------------------------------------------------------------------
# 6. Permissions
# ---------------------------------------------------------------------------


def test_socket_is_0600_in_a_0700_run_directory(engine):
    sock = engine.path / runs.SOCKET
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
    assert stat.S_IMODE(engine.path.stat().st_mode) == 0o700


# ---------------------------------------------------------------------------
# Open bugs, one strict xfail each (see OPEN_BUGS)
# ---------------------------------------------------------------------------


def cli(args: list[str]):
    """CliRunner; a traceback fails the test with one short line (pytest takes seconds to
    render a 1000-frame RecursionError, even for an xfail)."""
    try:
        return runner.invoke(app, args, catch_exceptions=False)
    except Exception as exc:
        raise AssertionError(f"traceback: {type(exc).__name__}: {str(exc)[:200]}") from None


def presets_show_file(tmp_path, text: str):
    path = tmp_path / "bug.toml"
    path.write_text(text, encoding="utf-8")
    return cli(["presets", "show", str(path)]), path


@pytest.fixture
def idle_run(tmp_path):
    """A run directory without an engine: ctl validates its arguments before connecting."""
    return runs.create_run(tiny_config(), tmp_path / "runs")


@open_bug("toml-dates")
@pytest.mark.parametrize("where", ["file", "file-top", "set", "ctl"])
def test_bug_toml_dates_are_refused(tmp_path, idle_run, where):
    if where == "file":
        r, path = presets_show_file(tmp_path, "[schedule]\namplitude = 1979-05-27\n")
        assert_one_error_line(r, names=f"{path}: schedule.amplitude")
    elif where == "file-top":
        r, path = presets_show_file(tmp_path, "name = 07:32:00\n")
        assert_one_error_line(r, names=str(path))
    elif where == "set":
        r = cli(["presets", "show", "spiral-fig4", "--set=schedule.amplitude=1979-05-27"])
        assert_one_error_line(r, names="--set schedule.amplitude")
    else:
        r = cli(["ctl", str(idle_run.path), "set", "amplitude=1979-05-27"])
        assert_one_error_line(r, names="amplitude")


@open_bug("huge-int-float")
@pytest.mark.parametrize("where", ["file", "set", "ctl"])
def test_bug_huge_integer_for_a_float_is_refused(tmp_path, idle_run, where):
    huge = "1" + "0" * 400
    if where == "file":
        r, path = presets_show_file(tmp_path, f"[optim]\nlr = {huge}\n")
        assert_one_error_line(r, names=f"{path}: optim.lr")
    elif where == "set":
        r = cli(["presets", "show", "spiral-fig4", f"--set=schedule.amplitude={huge}"])
        assert_one_error_line(r, names="--set schedule.amplitude")
    else:
        r = cli(["ctl", str(idle_run.path), "set", f"lr={huge}"])
        assert_one_error_line(r, names="lr")


@open_bug("int-digits")
@pytest.mark.parametrize("where", ["file", "set"])
def test_bug_integer_over_4300_digits_is_refused(tmp_path, where):
    digits = "1" * 5000
    if where == "file":
        r, path = presets_show_file(tmp_path, f"[run]\nsteps = {digits}\n")
        assert_one_error_line(r, names=str(path))
    else:
        r = cli(["presets", "show", "spiral-fig4", f"--set=run.steps={digits}"])
        assert_one_error_line(r, names="--set")


@open_bug("toml-recursion")
@pytest.mark.parametrize("where", ["file", "set", "ctl"])
def test_bug_deeply_nested_toml_is_refused(tmp_path, idle_run, where):
    deep = "[" * 3000 + "]" * 3000
    if where == "file":
        r, path = presets_show_file(tmp_path, f"[model]\nhidden = {deep}\n")
        assert_one_error_line(r, names=str(path))
    elif where == "set":
        r = cli(["presets", "show", "spiral-fig4", f"--set=model.hidden={deep}"])
        assert_one_error_line(r, names="--set")
    else:
        r = cli(["ctl", str(idle_run.path), "set", f"amplitude={deep}"])
        assert_one_error_line(r)


@pytest.fixture
def bare_server(tmp_path):
    """The engine's ControlServer alone (same code and thread as in the engine, no torch):
    a poison line that kills its thread is shown without spending an engine start."""
    from dlf_tui.wire.server import ControlServer

    srv = ControlServer(tmp_path / runs.SOCKET, hello=lambda: protocol.Hello(run_id="bare"))
    srv.start()
    yield srv
    srv.close(timeout=1.0)


@pytest.mark.parametrize("bug", [pytest.param(b, marks=open_bug(b)) for b in POISON])
def test_bug_poison_set_does_not_kill_the_control_server(tmp_path, bare_server, bug):
    c = Conn(tmp_path)
    lines = POISON[bug]
    c.send(b"".join(line + b"\n" for line in lines) + b'{"type":"nope","id":4242}\n')
    try:
        got = c.replies(lambda g: any(r.id == 4242 for r in g), timeout=2)
    finally:
        c.close()
    assert len(got) == len(lines) + 1 and not any(r.ok for r in got)
    assert bare_server._thread.is_alive()
    Conn(tmp_path, timeout=3).close()  # a new client still gets its hello


@open_bug("newline-in-error")
@pytest.mark.parametrize("where", ["file", "set", "socket"])
def test_bug_errors_stay_one_line_whatever_the_user_typed(tmp_path, engine, where):
    if where == "file":
        r, path = presets_show_file(tmp_path, '[schedule]\n"ampl\\nitude" = 3\n')
        assert_one_error_line(r, names=str(path))
    elif where == "set":
        r = cli(["presets", "show", "spiral-fig4", "--set=schedule.ampl\nitude=3"])
        assert_one_error_line(r, names="--set")
    else:
        c = Conn(engine.path)
        c.send(b'{"type":"pause","id":9,"ev\\nil":1}\n')
        [r] = c.replies(lambda g: len(g) >= 1)
        c.close()
        assert not r.ok and not has_break(r.error), repr(r.error)


@open_bug("surrogate-output")
def test_bug_non_utf8_argument_is_refused_or_escaped():
    r = cli(["presets", "show", "spiral-fig4", "--set=name=run\udcff"])
    if r.exit_code == 0:
        config.loads(r.stdout)
    else:
        assert_one_error_line(r, names="--set")


@open_bug("del-round-trip")
@pytest.mark.parametrize("where", ["set", "file"])
def test_bug_shown_config_always_loads_back(tmp_path, where):
    if where == "set":
        r = cli(["presets", "show", "spiral-fig4", "--set=name=a\x7fb"])
    else:
        r, _ = presets_show_file(tmp_path, 'description = "a\\u007fb"\n')
    if r.exit_code == 0:
        config.loads(r.stdout)
    else:
        assert_one_error_line(r)


@open_bug("oversize-tail")
def test_bug_the_tail_of_an_overlong_line_is_not_run(engine):
    c = Conn(engine.path)
    try:
        # no newline yet: refused and cleared once all MAX_LINE + 1 bytes are in (so the
        # buffer is empty when the reply comes, whatever the kernel's chunking)
        c.send(b"x" * (protocol.MAX_LINE + 1))
        [r] = c.replies(lambda g: len(g) >= 1)
        assert "too long" in r.error
        c.send(b'{"type":"checkpoint","id":4243}\n{"type":"nope","id":4244}\n')  # same line's tail
        got = c.replies(lambda g: any(x.id == 4244 for x in g))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # an accepted command is answered by the trainer, later
            try:
                msg = c.next(0.1)
            except TimeoutError:
                continue
            if isinstance(msg, protocol.Reply):
                got.append(msg)
        assert not any(x.ok for x in got), got
    finally:
        c.close()


@open_bug("usage-errors")
@pytest.mark.parametrize("args", [["ctl", "RUN", "-z"], ["presets", "show", "spiral-fig4", "--set"]])
def test_bug_usage_errors_are_one_line(tmp_path, args):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"), DLF_TUI_RUNS_DIR=str(tmp_path / "r"))
    p = subprocess.run([sys.executable, "-m", "dlf_tui", *args], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr


# ---------------------------------------------------------------------------


def test_engine_survived_everything(engine):
    assert_engine_healthy(engine)
    kinds = Counter(e["kind"] for e in runs.Run(engine.path).events())
    assert not kinds["error"] and not kinds["crashed"], kinds
    CASES["engine refusals logged (events)"] = kinds["refused"]
