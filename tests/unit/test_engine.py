"""The detector's size cap: a record over it is rejected, never screened out unread."""

from __future__ import annotations

import pytest

from pipeline.engine import Detector
from pipeline.rejects import RejectReason
from pipeline.rules.loader import load_rules
from pipeline.rules.model import Rule
from tests import PROJECT_ROOT
from tests.synthetic_hostile import TEST_MAX_EVENT_BYTES, oversize
from tests.unit.conftest import shared

CAP = TEST_MAX_EVENT_BYTES
WHEN = "2024-03-05T11:02:44Z"
ARRIVED = 1709636600.0  # half a minute later
REMOTE_WMIC = "272df6de-61f1-4784-877c-1fbc3e2d0838"  # Remote WMI Command Attempt


@pytest.fixture(scope=shared)
def rules() -> tuple[Rule, ...]:
    return load_rules(PROJECT_ROOT / "rules")


def test_an_unrouted_record_over_the_cap_is_rejected_not_screened(rules: tuple[Rule, ...]) -> None:
    detector = Detector(rules, max_event_bytes=CAP)
    assert detector.process(oversize("h", WHEN, 3, CAP)).screened  # at the cap: screened out
    outcome = detector.process(oversize("h", WHEN, 3, CAP + 1))
    assert outcome.rejected is not None
    assert outcome.rejected.reason == RejectReason.TOO_LARGE
    assert not outcome.screened


def test_detect_applies_the_configured_cap(rules: tuple[Rule, ...]) -> None:
    at_cap, over = oversize("h", WHEN, 1, CAP), oversize("h", WHEN, 1, CAP + 1)
    capped = Detector(rules, max_event_bytes=CAP)
    assert REMOTE_WMIC in {m.rule_id for m in capped.detect(at_cap).matches}
    rejected = capped.detect(over).rejected
    assert rejected is not None and rejected.reason == RejectReason.TOO_LARGE
    assert REMOTE_WMIC in {m.rule_id for m in Detector(rules).detect(over).matches}


def test_an_event_time_is_not_read_past_the_cap(rules: tuple[Rule, ...]) -> None:
    detector = Detector(rules, max_event_bytes=CAP, clock=lambda: ARRIVED)
    assert detector.event_time(oversize("h", WHEN, 3, CAP), received=ARRIVED) == 1709636564.0
    assert detector.event_time(oversize("h", WHEN, 3, CAP + 1), received=ARRIVED) is None
