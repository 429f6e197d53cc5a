"""Where a run is in its schedule: period number, phase, emphasised class, and
the parameter-change markers drawn on the charts.  No textual, no torch.

The engine's schedule is deterministic between edits (``core/schedule.py``): the phase t
runs 0..T, then t ← 0 and the emphasised class c ← c+1.  Every live edit is
logged with the update it applies to and the phase/class after it, so the
clock is a chain of reference points: the start (update 1, t 0, c 0), then one
per ``set`` event.  A period edit keeps the fraction of the period done, so
the period number carries over across it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dlf_tui.core.schedule import phase_after_period_edit


@dataclass
class Ref:
    update: int  # the update (1-based) this reference describes
    phase: int  # its phase t
    cls: int  # its emphasised class c
    period: int  # T in force from here
    index: int  # its period number (1-based)


@dataclass
class Marker:
    step: int
    changes: dict[str, Any]

    def label(self) -> str:
        short = {"amplitude": "A", "period": "T", "lr": "lr"}
        return " ".join(f"{short.get(k, k)}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                        for k, v in self.changes.items())


@dataclass
class Position:
    update: int
    phase: int
    cls: int
    period: int
    index: int

    @property
    def period_start(self) -> int:
        return self.update - self.phase

    @property
    def period_end(self) -> int:
        return self.period_start + self.period


@dataclass
class Timeline:
    classes: int = 3
    refs: list[Ref] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    _seen: set = field(default_factory=set)

    @classmethod
    def start(cls, period: int, classes: int) -> "Timeline":
        return cls(classes=max(1, classes), refs=[Ref(1, 0, 0, max(1, int(period)), 1)])

    def at(self, update: int) -> Position:
        """Schedule position of ``update`` (1-based)."""
        ref = self.refs[0]
        for r in self.refs:
            if r.update <= update:
                ref = r
            else:
                break
        k = ref.phase + max(0, update - ref.update)
        n = k // (ref.period + 1)
        return Position(update, k % (ref.period + 1), (ref.cls + n) % self.classes,
                        ref.period, ref.index + n)

    def rebase(self, update: int, phase: int, cls: int, period: int) -> None:
        """An authoritative position (a hello, an edit) at ``update``."""
        index = self.at(update).index
        self.refs = [r for r in self.refs if r.update < update]
        self.refs.append(Ref(update, int(phase), int(cls), max(1, int(period)), index))

    def edit(self, step: int, changes: dict[str, Any], phase: Any = None, cls: Any = None,
             period: Any = None) -> bool:
        """A ``set`` applied from update ``step``; returns False if already known."""
        key = (int(step), tuple(sorted((k, repr(v)) for k, v in changes.items())))
        if key in self._seen:
            return False
        self._seen.add(key)
        pos = self.at(step)
        new_period = int(period if period is not None else changes.get("period", pos.period))
        if isinstance(phase, int) and isinstance(cls, int):
            self.rebase(step, phase, cls, new_period)
        elif "period" in changes:
            t = phase_after_period_edit(pos.phase, pos.period, new_period)
            self.rebase(step, t, pos.cls, new_period)
        self.markers.append(Marker(int(step), dict(changes)))
        self.markers.sort(key=lambda m: m.step)
        return True

    def markers_between(self, x0: float, x1: float) -> list[Marker]:
        return [m for m in self.markers if x0 <= m.step <= x1]
