"""The intake's event-time watermark across partitions."""

from __future__ import annotations

import math

from pipeline.watermark import Watermark

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
