"""Γ(t): the class weights of a dynamical loss, exactly as the authors' code.

Pure Python/numpy (no torch): the engine trains with it, the UI places updates
in their period with the same rules (``phase_after_period_edit``).

Within a period the phase t runs 0, 1, …, T (a period is T+1 updates); the
emphasised class c has raw weight w(t), every other class 1, and
Γ = raw / Σraw · C.  After each update t ← t+1; when t > T, t ← 0 and
c ← (c+1) mod C.  Triangle (the paper): w = 1 + t·s for t < T/2, else
2A − 1 − t·s, with s = 2(A−1)/T.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

KINDS = ("triangle", "sine", "square", "static")


def raw_weights(kind: str, amplitude: float, period: int, t: np.ndarray) -> np.ndarray:
    """Raw weight of the emphasised class at phases ``t`` (0 ≤ t ≤ T), vectorised."""
    import numpy as np  # here: the UI imports this module for the edit rules, without numpy

    a, T = float(amplitude), int(period)
    t = np.asarray(t, dtype=np.float64)
    if kind == "static" or a == 1.0:
        return np.ones_like(t)
    if kind == "triangle":
        s = 2.0 * (a - 1.0) / T
        return np.where(t < T / 2, 1.0 + t * s, 2.0 * a - 1.0 - t * s)
    if kind == "sine":
        return 1.0 + (a - 1.0) * np.sin(np.pi * t / T)
    if kind == "square":  # emphasised for the first half of the period
        return np.where(t < (T + 1) / 2, a, 1.0)
    raise ValueError(f"unknown schedule kind {kind!r}")


def gammas(w: np.ndarray, c: int, classes: int) -> np.ndarray:
    """Γ rows (len(w) × C) for raw weights ``w`` of class ``c``: raw / Σraw · C."""
    import numpy as np

    out = np.repeat((classes / (w + classes - 1.0))[:, None], classes, axis=1)
    out[:, c] = classes * w / (w + classes - 1.0)
    return out


def phase_after_period_edit(t: int, period: int, new_period: int) -> int:
    """The phase a live period edit continues from: the fraction of the period
    done is kept, t' = ⌊t/(T+1)·(T'+1)⌋ (never past the new period's end)."""
    new_period = int(new_period)
    return min(new_period, (int(t) * (new_period + 1)) // (int(period) + 1))


@dataclass
class ScheduleState:
    """Everything needed to continue the schedule exactly (saved in checkpoints)."""

    kind: str
    amplitude: float
    period: int
    classes: int
    total_steps: int
    last_period_static: bool
    t: int = 0  # phase within the period, 0..T
    c: int = 0  # emphasised class
    step: int = 0  # updates done
    static_tail: bool = False  # the last-period switch to A = 1 has happened


class Schedule:
    """The live schedule: ``gamma()`` for the next update, ``advance()`` after it."""

    def __init__(self, state: ScheduleState):
        if state.kind not in KINDS:
            raise ValueError(f"unknown schedule kind {state.kind!r}")
        self.s = state

    @classmethod
    def create(cls, kind: str, amplitude: float, period: int, classes: int,
               total_steps: int, last_period_static: bool) -> "Schedule":
        return cls(ScheduleState(kind, float(amplitude), int(period), int(classes),
                                 int(total_steps), bool(last_period_static)))

    # -- reading -------------------------------------------------------------
    @property
    def amplitude(self) -> float:
        """The amplitude in force for the next update (1 once the static tail began)."""
        return 1.0 if self.s.static_tail else self.s.amplitude

    def gamma(self) -> np.ndarray:
        """Γ for the next update."""
        return self.table(1)[0][0]

    def table(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Γ (n × C), amplitude and period for the next ``n`` updates, without moving.

        Vectorised one period segment at a time (a chunk of thousands of updates
        costs a few numpy calls, not a Python loop per update).
        """
        import numpy as np

        saved = ScheduleState(**asdict(self.s))
        s = self.s
        gam = np.empty((n, s.classes))
        amp = np.empty(n)
        per = np.empty(n)
        i = 0
        while i < n:
            seg = min(n - i, s.period - s.t + 1)
            phases = np.arange(s.t, s.t + seg)
            a = self.amplitude
            gam[i:i + seg] = gammas(raw_weights(s.kind, a, s.period, phases), s.c, s.classes)
            amp[i:i + seg] = a
            per[i:i + seg] = s.period
            self.advance(seg)
            i += seg
        self.s = saved
        return gam, amp, per

    # -- moving --------------------------------------------------------------
    def advance(self, n: int = 1) -> int:
        """Account for ``n`` updates; returns the first update of the static tail
        when it started among them (its period boundary), else 0."""
        s = self.s
        started = 0
        while n > 0:
            seg = min(n, s.period - s.t + 1)
            s.step += seg
            s.t += seg
            n -= seg
            if s.t > s.period:
                s.t = 0
                s.c = (s.c + 1) % s.classes
                if s.last_period_static and not s.static_tail and s.step > s.total_steps - s.period:
                    s.static_tail = True
                    started = s.step + 1
        return started

    # -- live edits (phase-continuous) ---------------------------------------
    def set_amplitude(self, amplitude: float) -> None:
        self.s.amplitude = float(amplitude)

    def edit_amplitude(self, amplitude: float) -> None:
        """A live edit of A: from the next update on, and it ends the automatic
        plain-CE tail (the user chose an amplitude)."""
        s = self.s
        if s.static_tail:
            s.static_tail = False
            s.last_period_static = False
        self.set_amplitude(amplitude)

    def set_period(self, period: int) -> None:
        s = self.s
        s.t = phase_after_period_edit(s.t, s.period, period)
        s.period = int(period)

    def set_total(self, total_steps: int) -> None:
        self.s.total_steps = int(total_steps)

    def params(self) -> dict:
        """The schedule's part of a run's live parameters (what clients are told)."""
        s = self.s
        return {"amplitude": s.amplitude, "amplitude_now": self.amplitude, "period": s.period,
                "kind": s.kind, "phase": s.t, "emphasized": s.c, "static_tail": s.static_tail}

    def state_dict(self) -> dict:
        return asdict(self.s)

    def load_state_dict(self, d: dict) -> None:
        self.s = ScheduleState(**d)

    @classmethod
    def from_state_dict(cls, d: dict) -> "Schedule":
        return cls(ScheduleState(**d))
