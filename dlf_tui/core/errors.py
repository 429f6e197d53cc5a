"""Every error a user may see, and the one way to say one in a line.

Each class's ``str(err)`` is one line meant for the user; ``one_line(exc)``
turns any other exception into ``Type: first line of its message``, and
``printable(text)`` escapes what a user typed so that a message stays one line.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value was refused."""


class RunError(ValueError):
    """A run or sweep directory that cannot be found, created or read."""


class SetupError(RuntimeError):
    """A run cannot start (bad device, unreadable config, no checkpoint …)."""


class DataUnavailable(SetupError):
    """A data set's files are missing, unreadable or failed to download."""


class ProtocolError(ValueError):
    """A message that does not follow the wire protocol."""


class ClientError(RuntimeError):
    """Cannot reach the engine, or the connection broke."""


class EngineRefused(ClientError):
    """The engine refused a command; the message is its reason."""


class FigureError(RuntimeError):
    """A PNG export that cannot be made (no matplotlib, a bad window …)."""


class ExportError(RuntimeError):
    """An export that cannot be made (a missing optional package …)."""


def printable(text: str) -> str:
    """``text`` with newlines and other non-printable characters escaped, so an
    error about user input always stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message ('' when it has none)."""
    text = str(exc)
    return text.splitlines()[0] if text else ""


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of any exception, for logs, state.json and the user."""
    return f"{type(exc).__name__}: {first_line(exc)}".strip().rstrip(":")
