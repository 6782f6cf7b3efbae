"""Event-time watermarks: one intake's across its partitions, and the merge of all intakes."""

from __future__ import annotations

import math

import msgspec
import orjson
import pytest
from jsonschema import ValidationError

from pipeline.records import AGGREGATION_INPUT, TICK, SourceReport, Tick
from pipeline.watermark import MergedWatermark, Watermark
from tests.conftest import schema_validator

P0, P1, P2 = ("raw", 0), ("raw", 1), ("raw", 2)


def test_partitions_with_a_backlog_hold_the_watermark() -> None:
    watermark = Watermark()
    assert watermark.value(backlog=[]) == -math.inf
    watermark.observe(P0, 1000.0)
    watermark.observe(P1, 400.0)
    watermark.observe(P0, 900.0)  # older than its newest: no step back
    assert watermark.value(backlog=[P0, P1]) == 400.0
    assert watermark.value(backlog=[P0]) == 1000.0  # P1 caught up: it no longer holds it


def test_a_backlog_partition_that_delivered_nothing_holds_it_at_minus_infinity() -> None:
    watermark = Watermark()
    watermark.observe(P0, 1000.0)
    assert watermark.value(backlog=[P2]) == -math.inf


def test_when_all_are_caught_up_it_is_the_newest_time_seen() -> None:
    watermark = Watermark()
    watermark.observe(P0, 1000.0)
    watermark.observe(P1, 1200.0)
    assert watermark.value(backlog=[]) == 1200.0


def test_forgotten_partitions_no_longer_count() -> None:
    watermark = Watermark()
    watermark.observe(P0, 1000.0)
    watermark.observe(P1, 400.0)
    watermark.forget([P1, P2])  # P2 was never read: forgetting it is harmless
    assert watermark.value(backlog=[P1]) == -math.inf  # P1 holds it, with nothing read now
    assert watermark.value(backlog=[]) == 1000.0


def tick(sent_at: float, *sources: tuple[tuple[str, int], float | None, bool]) -> Tick:
    """Return a tick as an intake sends it, for a universe of three raw partitions."""
    reports = tuple(SourceReport(t, n, newest, backlog) for (t, n), newest, backlog in sources)
    return Tick(sent_at, 3, reports)


def test_the_merged_watermark_waits_for_every_raw_partition() -> None:
    merged = MergedWatermark(stale_after=30, max_future_seconds=300)
    assert merged.apply(tick(0, (P0, 1000.0, False), (P1, 1200.0, False))) == -math.inf
    assert merged.apply(tick(1, (P2, 500.0, True))) == 500.0


def test_an_intake_ahead_does_not_close_windows_another_has_not_read() -> None:
    merged = MergedWatermark(stale_after=30, max_future_seconds=300)
    merged.apply(tick(0, (P2, None, True)))  # intake b: assigned P2, read nothing yet
    assert merged.apply(tick(1, (P0, 5000.0, False), (P1, 4000.0, False))) == -math.inf
    assert merged.apply(tick(2, (P2, 300.0, True))) == 300.0
    assert merged.apply(tick(3, (P2, 350.0, False))) == 5000.0  # all caught up: newest


def test_a_silent_intake_s_partitions_hold_the_watermark_and_it_never_goes_back() -> None:
    merged = MergedWatermark(stale_after=30, max_future_seconds=300)
    merged.apply(tick(0, (P2, 700.0, False)))  # intake b reports once, then dies
    assert merged.apply(tick(10, (P0, 900.0, False), (P1, 800.0, False))) == 900.0
    assert merged.apply(tick(60, (P0, 2000.0, False), (P1, 1500.0, False))) == 900.0
    # P2 is stale: held at 700, but the watermark does not step back below 900
    merged.apply(tick(61, (P2, 1800.0, False)))  # its partitions' new owner reports
    assert merged.value == 2000.0


def test_silent_counts_the_raw_partitions_no_intake_reports_on() -> None:
    merged = MergedWatermark(stale_after=30, max_future_seconds=300)
    merged.apply(tick(0, (P0, 100.0, False)))
    assert merged.silent == 2  # P1 and P2 never reported
    merged.apply(tick(1, (P1, 100.0, False), (P2, 100.0, False)))
    assert merged.silent == 0
    merged.apply(tick(40, (P0, 200.0, False), (P1, 200.0, False)))
    assert merged.silent == 1  # P2's owner went quiet: its report is stale
    merged.apply(tick(41, (P2, 200.0, False)))  # a new owner reports it
    assert merged.silent == 0


def test_a_report_exactly_stale_after_seconds_old_is_still_fresh() -> None:
    merged = MergedWatermark(stale_after=30, max_future_seconds=300)
    merged.apply(tick(0, (P2, 100.0, False)))
    merged.apply(tick(30, (P0, 200.0, False), (P1, 200.0, False)))
    assert merged.silent == 0  # P2's report is 30 s old: at the limit, not past it
    merged.apply(tick(30.5, (P0, 300.0, False)))
    assert merged.silent == 1


def test_the_ticks_used_here_follow_the_published_schema() -> None:
    validator = schema_validator("wmiwatch.matches")
    validator.validate(orjson.loads(TICK.encode(tick(0, (P0, 1000.0, False), (P2, None, True)))))
    with pytest.raises(ValidationError):
        validator.validate({"type": "tick", "watermark": 1000.0})  # the old, per-intake form


def test_a_tick_is_bounded_by_the_aggregation_s_clock() -> None:
    merged = MergedWatermark(stale_after=30, max_future_seconds=300)
    now = 10_000.0
    forged = tick(10**12, (P0, 4e12, False), (P1, 9000.0, False), (P2, 9000.0, False))
    assert merged.apply(forged, now) == now + 300  # not year 128,000
    assert merged.apply(tick(now, (P1, 9500.0, False)), now) == now + 300  # never goes back
    assert merged.silent == 0  # a forged send time does not make the others stale


def test_a_malformed_tick_is_refused_whole_before_it_changes_anything() -> None:
    merged = MergedWatermark(stale_after=30, max_future_seconds=300)
    merged.apply(tick(0, (P0, 100.0, False), (P1, 100.0, False), (P2, 100.0, False)))
    broken = orjson.loads(TICK.encode(tick(1, (P0, 900.0, False))))
    broken["sources"].append(["windows.sysmon", "not a partition", 1.0, False])
    with pytest.raises(msgspec.ValidationError):
        merged.apply(AGGREGATION_INPUT.decode(orjson.dumps(broken)))  # type: ignore[arg-type]
    assert merged.apply(tick(2)) == 100.0
