"""Event-time watermark over the input partitions of one intake."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Watermark:
    """The oldest newest-event-time among partitions that delivered events recently.

    A partition idle for ``idle_seconds`` (wall time) stops holding the watermark back; when
    every partition is idle the watermark is the newest event time seen anywhere.
    """

    idle_seconds: float = 30.0
    _newest: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)

    def observe(self, topic: str, partition: int, event_time: float, now: float) -> None:
        """Record an event time read from ``topic``/``partition`` at wall time ``now``."""
        newest, _ = self._newest.get((topic, partition), (-math.inf, now))
        self._newest[(topic, partition)] = (max(newest, event_time), now)

    def value(self, now: float) -> float:
        """Return the current watermark (-inf before any event)."""
        active = [t for t, seen in self._newest.values() if now - seen < self.idle_seconds]
        if active:
            return min(active)
        return max((t for t, _ in self._newest.values()), default=-math.inf)
