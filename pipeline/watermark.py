"""Event-time watermark over the input partitions of one intake."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.records import Tick

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
        self._newest[partition] = max(self.newest(partition), event_time)

    def value(self, backlog: Iterable[Partition]) -> float:
        """Return the watermark, given the partitions that have unread records."""
        held = [self.newest(partition) for partition in backlog]
        if held:
            return min(held)
        return max(self._newest.values(), default=-math.inf)

    def newest(self, partition: Partition) -> float:
        """Return the newest event time read from ``partition`` (-inf if none)."""
        return self._newest.get(partition, -math.inf)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop what was read from ``partitions`` (they moved to another intake)."""
        for partition in partitions:
            self._newest.pop(partition, None)


@dataclass
class MergedWatermark:
    """The watermark of one matches partition, merged from the ticks of every intake.

    An intake's own watermark covers only the raw partitions it owns, so the aggregation merges
    the per-partition reports: each tick gives, for each raw partition its intake owns, the
    newest event time read and whether unread records remain. Until every raw partition has
    reported, the watermark stays at -inf; a partition whose last report is older than
    ``stale_after`` seconds (tick time) is taken to have unread records (its intake is gone or
    stalled), and ``silent`` counts the partitions that have no fresh report: read by no intake.
    The watermark never goes back. Ticks are read whole before they change anything, and the
    aggregation's own clock bounds them: no report counts as sent later than ``now``, nor as
    reading an event newer than ``now`` plus ``max_future_seconds``.
    """

    stale_after: float
    max_future_seconds: float
    _reports: dict[Partition, tuple[float, bool, float]] = field(default_factory=dict)
    value: float = field(default=-math.inf, init=False)
    silent: int = field(default=0, init=False)  # raw partitions with no fresh report

    def apply(self, tick: Tick, now: float = math.inf) -> float:
        """Take in one tick received at wall-clock time ``now``; return the watermark."""
        sent_at, count = min(tick.sent_at, now), tick.source_count
        ceiling = now + self.max_future_seconds
        reports = {
            (s.topic, s.partition): (
                -math.inf if s.newest is None else min(s.newest, ceiling),
                s.backlog,
                sent_at,
            )
            for s in tick.sources
        }
        self._reports.update(reports)
        fresh_since = max(at for _, _, at in self._reports.values()) - self.stale_after
        stale = {partition for partition, (_, _, at) in self._reports.items() if at < fresh_since}
        self.silent = count - len(self._reports) + len(stale)
        if len(self._reports) < count:
            return self.value
        merged = Watermark()
        for partition, (newest, _, _) in self._reports.items():
            merged.observe(partition, newest)
        held = [
            partition
            for partition, (_, backlog, _) in self._reports.items()
            if backlog or partition in stale
        ]
        self.value = max(self.value, merged.value(held))
        return self.value
