"""A set pace: at most ``rate`` updates per second, by waiting between chunks.

Pace only waits — the updates, their chunking into recorded rows aside, are the
same — so a run at any pace has the trajectory of the run at full speed.  Chunks
are cut to about ``flush_seconds`` worth of updates, so the charts follow at the
pace instead of in bursts.
"""

from __future__ import annotations

import time


class Pace:
    def __init__(self, rate: float = 0.0):
        self.set(rate)

    def set(self, rate: float) -> None:
        """A new pace (0 = as fast as possible), counted from now."""
        self.rate = float(rate)
        self.reset()

    def reset(self) -> None:
        """Count from now (after a pause, nothing is owed)."""
        self.t0: float | None = None
        self.done = 0

    def chunk(self, k: int, flush_seconds: float) -> int:
        """At most ``k`` updates, and at a pace about ``flush_seconds`` worth of them."""
        if not self.rate:
            return k
        return max(1, min(k, int(self.rate * flush_seconds)))

    def started(self) -> None:
        """A chunk starts now."""
        if self.rate and self.t0 is None:
            self.t0 = time.monotonic()

    def count(self, updates: int) -> None:
        self.done += updates

    def delay(self) -> float:
        """Seconds to wait before the next chunk may start (0: none)."""
        if not self.rate or self.t0 is None:
            return 0.0
        return max(0.0, self.t0 + self.done / self.rate - time.monotonic())
