"""Event-time watermark over the input partitions of one intake."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

Partition = tuple[str, int]


@dataclass
class Watermark:
    """The oldest newest-event-time among partitions that still have unread records.

    A caught-up partition does not hold the watermark back; when every partition is caught up,
    the watermark is the newest event time seen anywhere. A partition with a backlog that has
    delivered nothing yet holds it at -inf.
    """

    _newest: dict[Partition, float] = field(default_factory=dict)

    def observe(self, partition: Partition, event_time: float) -> None:
        """Record an event time read from ``partition``."""
        self._newest[partition] = max(self._newest.get(partition, -math.inf), event_time)

    def value(self, backlog: Iterable[Partition]) -> float:
        """Return the watermark, given the partitions that have unread records."""
        held = [self._newest.get(partition, -math.inf) for partition in backlog]
        if held:
            return min(held)
        return max(self._newest.values(), default=-math.inf)
