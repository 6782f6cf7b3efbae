"""Aggregation: SPL stats semantics per (rule, group, window), finding ids and expiry."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import PROJECT_ROOT
from pipeline.aggregate import KEPT_WINDOWS, Aggregator, DestState
from pipeline.emit import build_risk_events, finding_id
from pipeline.match import Origin, RuleMatch
from pipeline.rules.loader import load_rules
from tests.conftest import schema_validator

WINDOW = 3600
WMIC_NODE = "272df6de-61f1-4784-877c-1fbc3e2d0838"  # Remote WMI Command Attempt


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return {rule.id: rule for rule in load_rules(PROJECT_ROOT / "rules")}


def match(time: float, process: str = "wmic /node:x os get", dest: str = "h1") -> RuleMatch:
    group = {"Processes.dest": dest, "Processes.user": "CORP\\bob", "Processes.process": process}
    return RuleMatch(WMIC_NODE, dest, time, group, origin=Origin("t", 0, int(time)))


def test_the_first_match_of_a_group_emits_and_later_ones_count(rules: dict[str, Any]) -> None:
    state: dict[str, DestState] = {}
    aggregator = Aggregator(rules, state, WINDOW)
    first = aggregator.add(match(7300.0))
    assert [f["count"] for f in first] == [1]
    assert aggregator.add(match(7400.0)) == []
    assert aggregator.add(match(7250.0)) == []  # out of order, same window
    (stats,) = state["h1"].values()
    assert (stats["count"], stats["first"], stats["last"]) == (3, 7250.0, 7400.0)
    assert [e["offset"] for e in stats["evidence"]] == [7300, 7400, 7250]
    finding = first[0]
    assert finding["finding_id"] == finding_id(WMIC_NODE, 7200, match(0).group)
    assert finding["title"] == (
        "A wmic.exe process wmic /node:x os get contain node commandline "
        "wmic /node:x os get in host h1"
    )
    assert finding["first_time"] == "1970-01-01T02:01:40.000Z"
    schema_validator("wmiwatch.findings").validate(finding)
    schema_validator("wmiwatch.matches").validate({**match(7300.0).to_record(), "ingested_at": 1.0})


def test_a_new_window_or_group_is_a_new_finding(rules: dict[str, Any]) -> None:
    aggregator = Aggregator(rules, {}, WINDOW)
    ids = [
        f["finding_id"]
        for m in (match(10.0), match(3610.0), match(20.0, "wmic /node:y"))
        for f in aggregator.add(m)
    ]
    assert len(set(ids)) == 3


def test_risk_events_cover_entity_and_user(rules: dict[str, Any]) -> None:
    (finding,) = Aggregator(rules, {}, WINDOW).add(match(10.0))
    risk = build_risk_events(rules[WMIC_NODE], finding)
    assert [(r["risk_object_type"], r["risk_object"], r["risk_score"]) for r in risk] == [
        ("system", "h1", 36),
        ("user", "CORP\\bob", 36),
    ]


def test_old_windows_expire_from_the_table(rules: dict[str, Any]) -> None:
    state: dict[str, DestState] = {}
    aggregator = Aggregator(rules, state, WINDOW)
    for hour in range(10):
        aggregator.add(match(hour * WINDOW + 1.0))
    starts = sorted(s["window_start"] for s in state["h1"].values())
    assert starts == [h * WINDOW for h in range(10 - 1 - KEPT_WINDOWS, 10)]
