"""When each dest next needs a visit: once the watermark, or the clock, reaches a time.

A tick then visits only the dests with something due (a window to close, an update to send, a
group to forget) instead of every dest with an open group.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple


class Wake(NamedTuple):
    """When a dest needs its next visit: a watermark and a clock time, each None for never."""

    watermark: float | None
    clock: float | None


class Wakeups:
    """Dests scheduled by watermark and by clock; each keeps only its earliest time of each."""

    def __init__(self) -> None:
        self.heaps: tuple[list[tuple[float, str]], ...] = ([], [])  # by watermark, by clock
        self.scheduled: tuple[dict[str, float], ...] = ({}, {})

    def schedule(self, dest: str, wake: Wake) -> None:
        """Visit ``dest`` once the watermark or the clock reaches its wake (earlier ones stay)."""
        for heap, scheduled, at in zip(self.heaps, self.scheduled, wake, strict=True):
            if at is None:
                continue
            current = scheduled.get(dest)
            if current is None or at < current:
                scheduled[dest] = at
                heapq.heappush(heap, (at, dest))

    def due(self, watermark: float, now: float) -> set[str]:
        """Return and unschedule the dests whose watermark or clock time has come."""
        found = set()
        for heap, scheduled, limit in zip(
            self.heaps, self.scheduled, (watermark, now), strict=True
        ):
            while heap and heap[0][0] <= limit:
                at, dest = heapq.heappop(heap)
                if scheduled.get(dest) == at:  # else superseded by an earlier time
                    del scheduled[dest]
                    found.add(dest)
        return found
