"""The detector's size cap: a record over it is rejected, never screened out unread."""

from __future__ import annotations

from typing import Any

from pipeline.engine import Detector
from pipeline.rejects import RejectReason
from tests.synthetic_hostile import TEST_MAX_EVENT_BYTES, oversize

CAP = TEST_MAX_EVENT_BYTES
WHEN = "2024-03-05T11:02:44Z"
ARRIVED = 1709636600.0  # half a minute later
REMOTE_WMIC = "272df6de-61f1-4784-877c-1fbc3e2d0838"  # Remote WMI Command Attempt


def test_an_unrouted_record_over_the_cap_is_rejected_not_screened(rules: dict[str, Any]) -> None:
    detector = Detector(tuple(rules.values()), max_event_bytes=CAP)
    assert detector.process(oversize("h", WHEN, 3, CAP)).screened  # at the cap: screened out
    outcome = detector.process(oversize("h", WHEN, 3, CAP + 1))
    assert outcome.rejected is not None
    assert outcome.rejected.reason == RejectReason.TOO_LARGE
    assert not outcome.screened


def test_detect_applies_the_configured_cap(rules: dict[str, Any]) -> None:
    at_cap, over = oversize("h", WHEN, 1, CAP), oversize("h", WHEN, 1, CAP + 1)
    capped = Detector(tuple(rules.values()), max_event_bytes=CAP)
    assert REMOTE_WMIC in {m.rule_id for m in capped.detect(at_cap).matches}
    rejected = capped.detect(over).rejected
    assert rejected is not None and rejected.reason == RejectReason.TOO_LARGE
    assert REMOTE_WMIC in {m.rule_id for m in Detector(tuple(rules.values())).detect(over).matches}


def test_an_event_time_is_not_read_past_the_cap(rules: dict[str, Any]) -> None:
    detector = Detector(tuple(rules.values()), max_event_bytes=CAP, clock=lambda: ARRIVED)
    assert detector.event_time(oversize("h", WHEN, 3, CAP), received=ARRIVED) == 1709636564.0
    assert detector.event_time(oversize("h", WHEN, 3, CAP + 1), received=ARRIVED) is None
