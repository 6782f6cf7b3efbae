"""Ticks: what an intake reports of its raw partitions, and how far they have been read."""

from __future__ import annotations

import pytest

from pipeline.records import SourceReport
from pipeline.ticks import Position, TickReporter

SYSMON, SECURITY = ("windows.sysmon", 0), ("windows.security", 1)


def times(table: dict[bytes, float]) -> TickReporter:
    """Return a reporter whose skipped records carry their event time as their payload key."""
    return TickReporter(lambda payload, _received: table.get(payload))


@pytest.mark.parametrize(
    ("next_offset", "high", "lag", "backlog"),
    [(10, 10, 0, False), (4, 10, 6, True), (0, -1, 0, True), (12, 10, 0, False)],
)
def test_a_position_tells_lag_and_backlog(
    next_offset: int, high: int, lag: int, backlog: bool
) -> None:
    position = Position("windows.sysmon", 0, next_offset, high)
    assert (position.lag, position.backlog) == (lag, backlog)


def test_a_tick_reports_every_position_with_its_newest_event_time() -> None:
    reporter = times({})
    reporter.observe(SYSMON, 1000.0)
    reporter.observe(SYSMON, 900.0)  # older: the newest stays
    positions = [Position(*SYSMON, 5, 5), Position(*SECURITY, 0, 7)]
    tick = reporter.tick(positions, source_count=9, now=50.0)
    assert tick is not None
    assert (tick.sent_at, tick.source_count) == (50.0, 9)
    assert tick.sources == (
        SourceReport("windows.sysmon", 0, 1000.0, False),
        SourceReport("windows.security", 1, None, True),  # nothing read yet: no time
    )


def test_an_intake_with_no_partitions_sends_no_tick() -> None:
    assert times({}).tick([], source_count=3, now=1.0) is None


def test_a_skipped_last_record_moves_its_partition_once_per_tick() -> None:
    reporter = times({b"skipped": 2000.0})
    reporter.observe(SYSMON, 1000.0)
    reporter.last_record(SYSMON, (b"skipped", None))
    tick = reporter.tick([Position(*SYSMON, 1, 1)], 1, 5.0)
    assert tick is not None and tick.sources[0].newest == 2000.0
    assert reporter.tails == {}  # parsed once, then forgotten


def test_a_skipped_record_whose_time_cannot_be_read_changes_nothing() -> None:
    reporter = times({})
    reporter.observe(SYSMON, 1000.0)
    reporter.last_record(SYSMON, (b"unreadable", None))
    tick = reporter.tick([Position(*SYSMON, 1, 1)], 1, 5.0)
    assert tick is not None and tick.sources[0].newest == 1000.0


def test_revoked_partitions_are_forgotten() -> None:
    reporter = times({b"skipped": 2000.0})
    reporter.observe(SYSMON, 1000.0)
    reporter.last_record(SYSMON, (b"skipped", None))
    reporter.forget([SYSMON])
    assert reporter.tails == {}
    tick = reporter.tick([Position(*SYSMON, 0, 3)], 1, 5.0)
    assert tick is not None and tick.sources[0].newest is None
