"""The detector's size cap: a record over it is rejected, never screened out unread; and a rule
whose expression runs out of time on a record costs only that rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.engine import Detector
from pipeline.rejects import RejectReason
from pipeline.rules.loader import load_rules
from tests.synthetic import WMIC_NODE_RULE
from tests.synthetic_hostile import (
    AFTER_STATS,
    BEFORE_STATS,
    SLOW_VALUE,
    TEST_MAX_EVENT_BYTES,
    oversize,
    slow_sysmon,
    with_slow_rules,
)

CAP = TEST_MAX_EVENT_BYTES
WHEN = "2024-03-05T11:02:44Z"
ARRIVED = 1709636600.0  # half a minute later


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
    assert WMIC_NODE_RULE in {m.rule_id for m in capped.detect(at_cap).matches}
    rejected = capped.detect(over).rejected
    assert rejected is not None and rejected.reason == RejectReason.TOO_LARGE
    assert WMIC_NODE_RULE in {
        m.rule_id for m in Detector(tuple(rules.values())).detect(over).matches
    }


def test_an_event_time_is_not_read_past_the_cap(rules: dict[str, Any]) -> None:
    detector = Detector(tuple(rules.values()), max_event_bytes=CAP, clock=lambda: ARRIVED)
    assert detector.event_time(oversize("h", WHEN, 3, CAP), received=ARRIVED) == 1709636564.0
    assert detector.event_time(oversize("h", WHEN, 3, CAP + 1), received=ARRIVED) is None


def test_a_rule_out_of_time_decides_nothing_and_the_others_still_match(tmp_path: Path) -> None:
    """A value that runs a rule's bounded expression out of time rejects the event for that
    rule only (regex_timeout, naming it): every other rule of its route still decides."""
    detector = Detector(load_rules(with_slow_rules(tmp_path / "rules")))
    outcome = detector.detect(slow_sysmon("h1", WHEN))
    assert outcome.event is not None and outcome.rejected is not None
    assert outcome.rejected.reason == RejectReason.REGEX_TIMEOUT
    assert outcome.rejected.detail.startswith(f"rule {BEFORE_STATS}: regex: '^(a|aa)+(?!a)$'")
    matched = {m.rule_id for m in outcome.matches}
    assert {WMIC_NODE_RULE, AFTER_STATS} <= matched and BEFORE_STATS not in matched
    decided = detector.detect(slow_sysmon("h1", WHEN).replace(SLOW_VALUE.encode(), b"aaa"))
    assert decided.rejected is None
    assert {m.rule_id for m in decided.matches} == matched | {BEFORE_STATS}
