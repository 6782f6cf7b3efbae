"""The intake's event-time watermark across partitions."""

from __future__ import annotations

import math

from pipeline.watermark import Watermark


def test_the_slowest_active_partition_holds_the_watermark() -> None:
    watermark = Watermark(idle_seconds=30)
    assert watermark.value(now=0) == -math.inf
    watermark.observe("raw", 0, 1000.0, now=0)
    watermark.observe("raw", 1, 400.0, now=0)
    watermark.observe("raw", 0, 900.0, now=1)  # older than its newest: no step back
    assert watermark.value(now=2) == 400.0


def test_idle_partitions_stop_holding_it_back() -> None:
    watermark = Watermark(idle_seconds=30)
    watermark.observe("raw", 0, 1000.0, now=0)
    watermark.observe("raw", 1, 400.0, now=0)
    watermark.observe("raw", 0, 1200.0, now=20)
    assert watermark.value(now=40) == 1200.0  # partition 1 idle since 0
    assert watermark.value(now=100) == 1200.0  # all idle: the newest anywhere
