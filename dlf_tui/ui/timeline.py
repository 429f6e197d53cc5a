"""Where a run is in its schedule: period number, phase, emphasised class, and
the parameter-change markers drawn on the charts.  No textual, no torch.

The engine's schedule is deterministic between edits (``core/schedule.py``): the phase t
runs 0..T, then t ← 0 and the emphasised class c ← c+1.  Every live edit is
logged with the update it applies to and the phase/class after it, so the
clock is a chain of reference points: the start (update 1, t 0, c 0), then one
per ``set`` event that moves it (a period edit; an A or lr edit leaves it as it
is).  A period edit keeps the fraction of the period done, so the period number
carries over across it.

A long run edited often (a script, many ``ctl`` clients) holds thousands of
markers (about 300 bytes each): both lists are searched by bisection, and a chart
gets at most ``MOST_MARKERS`` markers per window.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from dlf_tui.core.schedule import phase_after_period_edit

MOST_MARKERS = 480  # per chart window: one per braille column of the widest chart (2 × 240)
_UPDATE, _STEP = attrgetter("update"), attrgetter("step")  # the keys refs and markers are sorted by


@dataclass(slots=True)
class Ref:
    update: int  # the update (1-based) this reference describes
    phase: int  # its phase t
    cls: int  # its emphasised class c
    period: int  # T in force from here
    index: int  # its period number (1-based)


@dataclass(slots=True)
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
    refs: list[Ref] = field(default_factory=list)  # by update
    markers: list[Marker] = field(default_factory=list)  # by step (ties: in arrival order)

    @classmethod
    def start(cls, period: int, classes: int) -> "Timeline":
        return cls(classes=max(1, classes), refs=[Ref(1, 0, 0, max(1, int(period)), 1)])

    def at(self, update: int) -> Position:
        """Schedule position of ``update`` (1-based)."""
        i = bisect.bisect_right(self.refs, update, key=_UPDATE) - 1
        ref = self.refs[max(0, i)]
        k = ref.phase + max(0, update - ref.update)
        n = k // (ref.period + 1)
        return Position(update, k % (ref.period + 1), (ref.cls + n) % self.classes,
                        ref.period, ref.index + n)

    def rebase(self, update: int, phase: int, cls: int, period: int) -> None:
        """An authoritative position (a hello, an edit) at ``update``."""
        index = self.at(update).index
        period = max(1, int(period))
        del self.refs[bisect.bisect_left(self.refs, update, key=_UPDATE):]
        if self.refs:
            pos = self.at(update)
            if (pos.phase, pos.cls, pos.period, pos.index) == (int(phase), int(cls), period, index):
                return  # the clock already says so: no new reference point
        self.refs.append(Ref(update, int(phase), int(cls), period, index))

    def edit(self, step: int, changes: dict[str, Any], phase: Any = None, cls: Any = None,
             period: Any = None) -> bool:
        """A ``set`` applied from update ``step``; returns False if already known."""
        step = int(step)
        lo = bisect.bisect_left(self.markers, step, key=_STEP)
        hi = bisect.bisect_right(self.markers, step, lo=lo, key=_STEP)
        if any(m.changes == changes for m in self.markers[lo:hi]):
            return False
        pos = self.at(step)
        new_period = int(period if period is not None else changes.get("period", pos.period))
        if isinstance(phase, int) and isinstance(cls, int):
            self.rebase(step, phase, cls, new_period)
        elif "period" in changes:
            t = phase_after_period_edit(pos.phase, pos.period, new_period)
            self.rebase(step, t, pos.cls, new_period)
        self.markers.insert(hi, Marker(step, dict(changes)))
        return True

    def markers_between(self, x0: float, x1: float, most: int = MOST_MARKERS) -> list[Marker]:
        """The markers in steps ``x0..x1``; with more than ``most``, the last of each of
        ``most`` equal slices of the window (a chart column shows one line anyway)."""
        lo = bisect.bisect_left(self.markers, x0, key=_STEP)
        hi = bisect.bisect_right(self.markers, x1, lo=lo, key=_STEP)
        found = self.markers[lo:hi]
        if len(found) <= most or x1 <= x0:
            return found
        width = (x1 - x0) / most
        kept: dict[int, Marker] = {}
        for m in found:
            kept[min(most - 1, int((m.step - x0) / width))] = m
        return list(kept.values())
