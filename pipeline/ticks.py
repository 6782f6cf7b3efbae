"""What an intake tells the aggregation about its raw partitions: the ticks.

Every tick interval the intake sends each matches partition a ``Tick``: for each raw partition
it owns, the newest event time read and whether records remain unread. The aggregation merges
the ticks of all intakes into the watermark that closes windows (``MergedWatermark``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pipeline.records import SourceReport, Tick
from pipeline.watermark import Partition, Watermark

EventTime = Callable[[bytes, float | None], float | None]


@dataclass(frozen=True)
class Position:
    """Where reading of one raw partition stands: next offset to read, and the log end."""

    topic: str
    partition: int
    next_offset: int
    high: int  # -1: unknown (not fetched yet)

    @property
    def lag(self) -> int:
        """Return the records not yet read (0 when the end is unknown)."""
        return max(self.high - self.next_offset, 0) if self.high >= 0 else 0

    @property
    def backlog(self) -> bool:
        """Return True when records may remain unread."""
        return self.high < 0 or self.next_offset < self.high


@dataclass
class TickReporter:
    """Follows the event time read per raw partition, and builds the ticks that report it.

    Events screened out are never parsed, so without the tails a partition of events no rule
    wants would hold the watermark back: each partition's last record, when it was screened
    out, is parsed once per tick for its time (``event_time`` bounds it like any event time).
    """

    event_time: EventTime
    watermark: Watermark = field(default_factory=Watermark)
    tails: dict[Partition, tuple[bytes, float | None] | None] = field(default_factory=dict)

    def observe(self, partition: Partition, moment: float) -> None:
        """Record the time of an event parsed from ``partition``."""
        self.watermark.observe(partition, moment)

    def last_record(self, partition: Partition, tail: tuple[bytes, float | None] | None) -> None:
        """Remember the partition's last record (payload, Kafka time) if it was screened out."""
        self.tails[partition] = tail

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop what was read from ``partitions`` (they moved to another intake)."""
        partitions = list(partitions)
        self.watermark.forget(partitions)
        for partition in partitions:
            self.tails.pop(partition, None)

    def tick(self, positions: Iterable[Position], source_count: int, now: float) -> Tick | None:
        """Return the tick reporting ``positions`` (None when the intake owns no partition)."""
        self._observe_tails()
        sources = tuple(
            SourceReport(p.topic, p.partition, self._newest((p.topic, p.partition)), p.backlog)
            for p in positions
        )
        return Tick(now, source_count, sources) if sources else None

    def _observe_tails(self) -> None:
        for partition, tail in self.tails.items():
            moment = None if tail is None else self.event_time(*tail)
            if moment is not None:
                self.watermark.observe(partition, moment)
        self.tails.clear()

    def _newest(self, partition: Partition) -> float | None:
        newest = self.watermark.newest(partition)
        return None if newest == -math.inf else newest  # JSON has no infinities
