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


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round numbers between lo and hi (inclusive range)."""
    if not (hi > lo):
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(t)
        t += step
    return ticks
