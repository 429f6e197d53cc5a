"""Control: the control socket's commands, applied to a run between updates.

The server thread queues checked commands (``wire/server.py``); the driver calls
``poll()`` between chunks, so an edit applies from the next update.  A Control
steers any *Steerable* — the engine's own run, or a user's training loop — and
records every change as an event at the update it applies to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from dlf_tui.core import config as cfgmod
from dlf_tui.core import states
from dlf_tui.core.errors import ConfigError, SetupError
from dlf_tui.wire import protocol


class Steerable(Protocol):
    def params(self) -> dict[str, Any]:
        """The live parameters, ``step`` (updates done) among them."""

    def edit(self, name: str, value: Any) -> None:
        """Apply one checked live value (``config.check_live``) from update step+1."""

    def checkpoint(self, reason: str) -> Path: ...

    def rollback(self) -> dict: ...


class Control:
    def __init__(self, server, recorder, target: Steerable):
        self.server, self.recorder, self.target = server, recorder, target
        self.commands = server.commands  # non-empty: a command waits (ends a chunk early)
        self.paused = False
        self.stop_requested = False

    def request_stop(self) -> None:
        """Stop after the current update (a signal handler may call this)."""
        self.stop_requested = True
        self.server.wakeup.set()

    def wait(self, timeout: float) -> None:
        """While paused: sleep until a command arrives or ``timeout`` passes."""
        self.server.wakeup.wait(timeout)
        self.server.wakeup.clear()

    def refused(self, reason: str) -> None:
        """A command that failed validation (called from the server thread)."""
        self.recorder.event("refused", f"refused command: {reason}")

    def poll(self) -> None:
        """Apply every queued command and answer each."""
        q = self.commands
        while q:
            cid, cmd = q.popleft()
            try:
                data = self._apply(cmd)
            except (ConfigError, SetupError) as err:
                self.recorder.event("refused", f"refused {cmd.type}: {err}")
                self.server.reply(cid, protocol.Reply(id=cmd.id, ok=False, error=str(err)))
                continue
            self.server.reply(cid, protocol.Reply(id=cmd.id, ok=True, data=data or {}))

    def _apply(self, cmd: protocol.Command) -> dict | None:
        if isinstance(cmd, protocol.Set):
            return self.set_params(cmd.values, source="client")
        if isinstance(cmd, protocol.Pause):
            self.pause()
            return {"state": states.PAUSED}
        if isinstance(cmd, protocol.Resume):
            self.resume()
            return {"state": states.RUNNING}
        if isinstance(cmd, protocol.Stop):
            self.stop_requested = True
            return {"state": states.STOPPING}
        if isinstance(cmd, protocol.Checkpoint):
            return {"path": str(self.target.checkpoint("request"))}
        if isinstance(cmd, protocol.Rollback):
            return self.target.rollback()
        raise ConfigError(f"unsupported command {cmd.type!r}")  # pragma: no cover

    def pause(self, reason: str = "") -> None:
        """Pause after the update done; ``reason`` (a divergence) is its own event."""
        if self.paused and not reason:
            return
        self.paused = True
        step = self.target.params()["step"]
        if not reason:
            self.recorder.event("pause", f"paused after update {step}")
        self.recorder.write_state(states.PAUSED, reason)

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            step = self.target.params()["step"]
            self.recorder.event("resume", f"resumed at update {step + 1}", step=step + 1)
            self.recorder.write_state(states.RUNNING)

    def set_params(self, values: dict[str, Any], source: str = "client") -> dict:
        """Apply live edits between updates; they take effect from update step+1."""
        before = self.target.params()
        changes = {}
        for name, value in values.items():
            value = cfgmod.check_live(name, value)
            self.target.edit(name, value)
            changes[name] = value
        after = self.target.params()
        text = ", ".join(f"{k} {before[k]} → {after[k]}" if isinstance(after[k], bool)
                         else f"{k} {before[k]:g} → {after[k]:g}" for k in changes)
        step = after["step"] + 1
        self.recorder.event("set", text, step=step, changes=changes, phase=after["phase"],
                            emphasized=after["emphasized"], source=source)
        self.server.broadcast(protocol.ParamsChanged(step=step, changes=changes, params=after,
                                                     source=source))
        return {"params": after}

    def announce(self, source: str) -> None:
        """Tell clients the parameters changed without an edit (a rollback)."""
        params = self.target.params()
        self.server.broadcast(protocol.ParamsChanged(step=params["step"] + 1, changes={},
                                                     params=params, source=source))
