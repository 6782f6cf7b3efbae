"""Event time is untrusted: bounded by trusted clocks; no record moves the watermark past them."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pipeline.engine import Detector
from pipeline.policy import DEST_STATE_BYTES, STATE_RECORD_BYTES, Clamp, TimePolicy
from pipeline.rules.loader import load_rules
from pipeline.topics import load_topics
from pipeline.watermark import Watermark
from tests import PROJECT_ROOT
from tests.synthetic import WMIEXEC, script_block
from tests.synthetic_hostile import EXTREME_TIMES, TIMES, sysmon

NOW = 1_764_400_000.0  # 2025-11-29
SKEW = 300.0
POLICY = TimePolicy(max_future_seconds=SKEW, max_age_seconds=30 * 86_400)
DETECTOR = Detector(load_rules(PROJECT_ROOT / "rules"), time_policy=POLICY, clock=lambda: NOW)
RECEIVED = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


def test_a_plausible_time_is_kept() -> None:
    assert POLICY.trusted(NOW - 3600, NOW - 10, NOW) == (NOW - 3600, None)
    assert POLICY.trusted(NOW + SKEW, NOW, NOW) == (NOW + SKEW, None)  # the skew is allowed


def test_a_time_past_the_skew_takes_the_kafka_timestamp() -> None:
    assert POLICY.trusted(NOW + SKEW + 1, NOW - 5, NOW) == (NOW - 5, Clamp.FUTURE)
    assert POLICY.trusted(4e12, None, NOW) == (NOW, Clamp.FUTURE)


def test_the_skew_counts_from_the_kafka_timestamp_when_it_is_older() -> None:
    assert POLICY.trusted(NOW - 3600 + SKEW + 1, NOW - 3600, NOW) == (NOW - 3600, Clamp.FUTURE)


def test_a_kafka_timestamp_from_the_future_or_the_far_past_is_not_believed() -> None:
    assert POLICY.reference(NOW + 86_400, NOW) == NOW
    assert POLICY.reference(0.0, NOW) == NOW
    assert POLICY.trusted(NOW + 3600, NOW + 86_400, NOW) == (NOW, Clamp.FUTURE)


def test_a_time_older_than_the_maximum_age_or_before_1970_is_clamped() -> None:
    assert POLICY.trusted(NOW - 31 * 86_400, NOW, NOW) == (NOW, Clamp.PAST)
    assert TimePolicy().trusted(-1.0, NOW, NOW) == (NOW, Clamp.PAST)
    assert TimePolicy().trusted(0.0, NOW, NOW) == (0.0, None)  # no maximum age: replays work
    assert TimePolicy().trusted(math.nan, NOW, NOW) == (NOW, Clamp.PAST)


def test_a_routed_event_from_year_9999_matches_flagged_at_its_arrival_time() -> None:
    payload = script_block("h", NOW, WMIEXEC, 1).replace(b"2025-11-29", b"9999-12-31", 1)
    outcome = DETECTOR.detect(payload, received=NOW - 2)
    assert outcome.event is not None and outcome.event.clamped == Clamp.FUTURE
    assert [(m.time, m.time_clamped) for m in outcome.matches] == [(NOW - 2, True)]


@given(TIMES, RECEIVED)
def test_no_event_time_leaves_the_trusted_bounds(claimed: str, received: float | None) -> None:
    moment = DETECTOR.event_time(sysmon("h", claimed.replace("'", ""), code=3), received)
    if moment is not None:
        assert POLICY.oldest(NOW) <= moment <= NOW + SKEW


@given(
    st.lists(st.floats(min_value=NOW - 86_400, max_value=NOW), max_size=20),
    st.one_of(EXTREME_TIMES, TIMES.map(lambda t: sysmon("h", t.replace("'", ""), code=3))),
    RECEIVED,
    st.booleans(),
)
def test_no_single_record_moves_the_watermark_past_the_allowed_skew(
    honest: list[float], hostile: bytes, received: float | None, backlog: bool
) -> None:
    watermark = Watermark()
    for number, moment in enumerate(honest):
        watermark.observe(("windows.sysmon", number % 3), moment)
    held = [("windows.sysmon", 0)] if backlog else []
    before = watermark.value(held)
    moment = DETECTOR.event_time(hostile, received)
    if moment is not None:
        watermark.observe(("windows.sysmon", 1), moment)
    assert watermark.value(held) <= max(before, NOW + SKEW)


def test_the_state_topic_accepts_a_dest_s_groups_at_their_bound() -> None:
    """A dest's groups are one record of the aggregation's state topic; a record the broker
    refused would stop its partition."""
    spec = load_topics(PROJECT_ROOT / "topics").spec("wmiwatch.aggregation-state")
    assert int(spec.config["max.message.bytes"]) == STATE_RECORD_BYTES >= 2 * DEST_STATE_BYTES
