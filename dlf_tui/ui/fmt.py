"""Short, stable number formats for a narrow terminal."""

from __future__ import annotations

import math
from typing import Any


def num(v: Any, digits: int = 3) -> str:
    """70 → '70', 0.5 → '0.5', 1.234e-5 → '1.23e-05', None/NaN → '–'."""
    if v is None:
        return "–"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "–"
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f == int(f) and abs(f) < 1e7:
        return str(int(f))
    return f"{f:.{digits}g}"


def count(n: Any) -> str:
    """200000 → '200,000'."""
    try:
        return f"{int(n):,}"
    except (TypeError, ValueError):
        return "–"


def si(v: float) -> str:
    """12345 → '12.3k', 1_000_000 → '1M' (axis ticks, rates)."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            s = f"{v / div:.3g}"
            return s + suffix
    return f"{v:.3g}" if a and a < 1 else str(int(round(v)))


def rate(v: float) -> str:
    return f"{si(v)}/s" if v and v > 0 else "–/s"


def duration(seconds: float | None) -> str:
    """ETA: '42s', '3m07s', '2h05m', '–'."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 1e8:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


STEPS = (1, 2, 5, 10)  # tick steps: 1-2-5 times a power of ten


def nice_step(lo: float, hi: float, n: int = 4) -> float:
    """The smallest step of 1, 2 or 5 times a power of ten with at most ``n``
    multiples in [lo, hi]."""
    n = max(1, n)
    mag = 10.0 ** math.floor(math.log10((hi - lo) / n))
    for step in (float(f"{m * mag * 10.0 ** k:.1g}") for k in (-1, 0, 1, 2) for m in STEPS[:3]):
        if math.floor(hi / step + 1e-9) - math.ceil(lo / step - 1e-9) + 1 <= n:
            return step
    return float(f"{100 * mag:.1g}")  # pragma: no cover - the loop always ends earlier


def multiples(step: float, lo: float, hi: float) -> list[float]:
    """The multiples of ``step`` in [lo, hi] (as printed: no float noise)."""
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [float(f"{k * step:.12g}") + 0.0 for k in range(first, last + 1)]


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """At most ``n`` (as many as fit) round numbers between lo and hi
    (inclusive): multiples of a step of 1, 2 or 5 times a power of ten."""
    if not (hi > lo) or not (math.isfinite(lo) and math.isfinite(hi)):
        return [lo]
    return multiples(nice_step(lo, hi, n), lo, hi)


def log_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """At most ``n`` (at least 2 when the range allows) round numbers between
    lo and hi > 0 for a log axis: 1, 2 and 5 times powers of ten; when those are
    too many, every k-th power of ten or every k-th of them, whichever labels
    more; round linear ticks when the range holds fewer than two 1-2-5s."""
    if not (hi > lo > 0) or not math.isfinite(hi):
        return [lo] if lo > 0 else []
    n = max(2, n)
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))

    def inside(mults: tuple[int, ...]) -> list[float]:
        ts = (float(f"{m}e{d}") for d in range(d0, d1 + 1) for m in mults)
        return [t for t in ts if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]

    all125, decades = inside((1, 2, 5)), inside((1,))
    if len(all125) <= n:
        ticks = all125
    else:  # the denser of: every k-th power of ten, every k-th 1-2-5
        a = decades[::math.ceil(len(decades) / n)] if decades else []
        b = all125[::math.ceil(len(all125) / n)]
        ticks = a if len(a) >= len(b) else b
    if len(ticks) < 2:
        ticks = [t for t in nice_ticks(lo, hi, min(n, 4)) if t > 0]
    return ticks


def axis(lo: float, hi: float, n: int, log: bool = False) -> tuple[float, float, list[float]]:
    """An axis over the data range [lo, hi]: its limits widened to the round
    ticks just outside (so both ends are labelled) and at most about ``n``
    1-2-5 ticks (``nice_ticks``, or ``log_ticks`` for a log axis)."""
    if not (hi > lo):
        return lo, hi, [lo]
    if log:
        if lo <= 0:
            return lo, hi, []
        d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        round_ = [float(f"{m}e{d}") for d in range(d0 - 1, d1 + 1) for m in (1, 2, 5)]
        lo2 = max([t for t in round_ if t <= lo * (1 + 1e-9)], default=lo)
        hi2 = min([t for t in round_ if t >= hi * (1 - 1e-9)], default=hi)
        return lo2, hi2, log_ticks(lo2, hi2, n)
    step = nice_step(lo, hi, n)
    if len(multiples(step, lo, hi)) < 2:  # the range holds one round number: the step that spans it
        mag = 10.0 ** math.floor(math.log10(hi - lo))
        step = next(float(f"{m * mag:.1g}") for m in STEPS if m * mag >= hi - lo)
    lo2 = math.floor(lo / step + 1e-9) * step
    hi2 = math.ceil(hi / step - 1e-9) * step
    ticks = multiples(step, lo2, hi2)
    return ticks[0], ticks[-1], ticks


def tick(v: float) -> str:
    """An axis label: 0.5, 2, 0.02, 1e-4, 20k, 1M."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return si(v)
    if a < 1e-3:
        m, e = f"{v:.0e}".split("e")
        return f"{m}e{int(e)}"
    return f"{v:.6g}"
