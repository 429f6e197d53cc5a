"""The engine's wire protocol: JSON lines over the run's Unix socket.

Every message is a dataclass with ``to_json``/``from_dict``; ``decode`` validates
a received line and returns the message or raises ``ProtocolError`` with a
one-line reason.  Nothing here is ever unpickled.  No torch, no textual.
The engine's ``hello`` carries ``PROTOCOL_VERSION``; a client refuses another.

Metric chunks carry their rows as base64 of little-endian float64, row-major
(``rows × len(columns)``): cheap to encode, so a client costs the engine little.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from dlf_tui.core import states
from dlf_tui.core.config import check_live
from dlf_tui.core.errors import ConfigError, ProtocolError, first_line

PROTOCOL_VERSION = 2  # change it with any change a client of another version would misread
BEAT_S = 1.0  # the engine's server thread sends a ``beat`` this often, whatever training does
MAX_LINE = 1 << 16  # bytes; a longer client line is refused

_REGISTRY: dict[str, type["Message"]] = {}


_TYPE_RULES = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63,
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
}


def _check_type(name: str, value: Any, annotation: str) -> None:
    if not _TYPE_RULES[annotation](value):
        raise ProtocolError(f"field {name!r} must be {annotation}, got {type(value).__name__}")


@dataclass
class Message:
    type: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.type:
            _REGISTRY[cls.type] = cls

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = self.type
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    def encode(self) -> bytes:
        return (self.to_json() + "\n").encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Message":
        names = {f.name: f for f in fields(cls)}  # every field has a default
        extra = set(d) - set(names) - {"type"}
        if extra:
            raise ProtocolError(f"{cls.type}: unknown field(s) {', '.join(sorted(extra))}")
        kwargs = {}
        for name, f in names.items():
            if name in d:
                _check_type(name, d[name], f.type)
                kwargs[name] = d[name]
        try:
            msg = cls(**kwargs)
        except TypeError as err:
            raise ProtocolError(f"{cls.type}: {err}") from None
        msg.validate()
        return msg

    def validate(self) -> None:
        """Extra checks beyond field types (override)."""


def _json_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not allowed")


def decode(line: str | bytes, limit: int | None = MAX_LINE) -> Message:
    """Parse and validate one JSON line into its message class.  The length
    limit guards the engine against clients; engine→client chunks are longer."""
    if limit is not None and len(line) > limit:
        raise ProtocolError(f"message too long ({len(line)} bytes, limit {limit})")
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not UTF-8") from None
    try:
        d = json.loads(line, parse_constant=_json_constant)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"invalid JSON: {first_line(err)[:80]}") from None
    if not isinstance(d, dict):
        raise ProtocolError("message must be a JSON object")
    kind = d.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message has no string 'type'")
    cls = _REGISTRY.get(kind)
    if cls is None:
        known = ", ".join(sorted(k for k, c in _REGISTRY.items() if issubclass(c, Command)))
        raise ProtocolError(f"unknown message type {kind[:40]!r} (commands: {known})")
    return cls.from_dict(d)


def decode_any(line: str | bytes) -> Message:
    """Decode a message from the engine (no length limit)."""
    return decode(line, limit=None)


# ---------------------------------------------------------------------------
# Client → engine
# ---------------------------------------------------------------------------


@dataclass
class Command(Message):
    id: int = 0

    def validate(self) -> None:
        if not 0 <= self.id < 2**53:
            raise ProtocolError("id must be between 0 and 2**53")


@dataclass
class Set(Command):
    """Change live parameters; ``values`` like ``{"amplitude": 30, "lr": 0.5}``."""

    type: ClassVar[str] = "set"
    values: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if not self.values:
            raise ProtocolError("set: no values given")
        clean = {}
        for name, value in self.values.items():
            try:
                clean[name] = check_live(name, value)
            except ConfigError as err:
                raise ProtocolError(f"set: {err}") from None
        self.values = clean


@dataclass
class Pause(Command):
    type: ClassVar[str] = "pause"


@dataclass
class Resume(Command):
    type: ClassVar[str] = "resume"


@dataclass
class Stop(Command):
    type: ClassVar[str] = "stop"


@dataclass
class Checkpoint(Command):
    type: ClassVar[str] = "checkpoint"


@dataclass
class Rollback(Command):
    """Go back to the last checkpoint (metrics after it are dropped; see ``Rewound``)."""

    type: ClassVar[str] = "rollback"


# ---------------------------------------------------------------------------
# Engine → client
# ---------------------------------------------------------------------------


@dataclass
class Hello(Message):
    """First message on every connection.  ``metrics_rows``/``eval_rows`` say how
    many rows the files held when it was sent: read those from disk, then every
    following ``metrics``/``eval`` chunk continues exactly after them."""

    type: ClassVar[str] = "hello"
    run_id: str = ""
    version: int = PROTOCOL_VERSION
    config: dict = field(default_factory=dict)
    state: str = states.STARTING
    params: dict = field(default_factory=dict)
    metrics_columns: list = field(default_factory=list)
    eval_columns: list = field(default_factory=list)
    metrics_rows: int = 0
    eval_rows: int = 0
    diag_columns: list = field(default_factory=list)
    diag_rows: int = 0


@dataclass
class Chunk(Message):
    """Rows ``start .. start+rows-1`` of a series file (see the module doc)."""

    start: int = 0
    rows: int = 0
    columns: list = field(default_factory=list)
    data: str = ""

    @classmethod
    def pack(cls, start: int, columns: list[str], array: Any) -> "Chunk":
        """``array``: a numpy float64 array of shape (rows, len(columns))."""
        a = array.astype("<f8", copy=False)
        return cls(start=start, rows=int(a.shape[0]), columns=list(columns),
                   data=base64.b64encode(a.tobytes()).decode("ascii"))

    def raw(self) -> bytes:
        return base64.b64decode(self.data)

    def array(self) -> Any:
        import numpy as np

        return np.frombuffer(self.raw(), dtype="<f8").reshape(self.rows, len(self.columns))

    def validate(self) -> None:
        if self.rows < 0 or self.start < 0:
            raise ProtocolError(f"{self.type}: negative start/rows")
        if len(self.data) != 4 * math.ceil(self.rows * len(self.columns) * 8 / 3):
            raise ProtocolError(f"{self.type}: data length does not match rows × columns")


@dataclass
class Metrics(Chunk):
    type: ClassVar[str] = "metrics"


@dataclass
class Eval(Chunk):
    type: ClassVar[str] = "eval"


@dataclass
class Diag(Chunk):
    """Landscape diagnostics rows (Hessian / NTK λ_max), see ``trainer.diag_columns``."""

    type: ClassVar[str] = "diag"


@dataclass
class State(Message):
    type: ClassVar[str] = "state"
    state: str = states.RUNNING
    step: int = 0
    total: int = 0
    rate: float = 0.0  # updates/s over the last chunks
    reason: str = ""

    def validate(self) -> None:
        if self.state not in states.ALL:
            raise ProtocolError(f"state: unknown state {self.state!r}")


@dataclass
class ParamsChanged(Message):
    type: ClassVar[str] = "params_changed"
    step: int = 0
    changes: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    source: str = ""


@dataclass
class Rewound(Message):
    """The run went back to update ``step``: the series files now hold
    ``metrics_rows``/``eval_rows`` rows; drop anything after them."""

    type: ClassVar[str] = "rewound"
    step: int = 0
    metrics_rows: int = 0
    eval_rows: int = 0
    diag_rows: int = 0


@dataclass
class Beat(Message):
    """Sent every ``BEAT_S`` by the engine's server thread: silence for several beats
    means the process is not running (stopped, deadlocked, swapping), not that
    training is slow.  Clients never see it as a message (``Client.silence``)."""

    type: ClassVar[str] = "beat"


@dataclass
class Log(Message):
    type: ClassVar[str] = "log"
    level: str = "info"  # info | warning | error
    message: str = ""
    step: int = 0
    kind: str = ""  # the events.jsonl kind: set, pause, checkpoint, diverged, refused, …


@dataclass
class Reply(Message):
    """Answer to command ``id``: ``ok`` or an ``error`` line."""

    type: ClassVar[str] = "reply"
    id: int = 0
    ok: bool = True
    error: str = ""
    data: dict = field(default_factory=dict)


COMMANDS = {c.type: c for c in (Set, Pause, Resume, Stop, Checkpoint, Rollback)}


def command(name: str, values: dict | None = None, id: int = 0) -> Command:
    """Build a validated command by name (``ctl`` and the UI use this)."""
    cls = COMMANDS.get(name)
    if cls is None:
        raise ProtocolError(f"unknown command {name!r} (commands: {', '.join(COMMANDS)})")
    d: dict[str, Any] = {"id": id}
    if cls is Set:
        d["values"] = values or {}
    elif values:
        raise ProtocolError(f"{name} takes no values")
    return cls.from_dict(d)

