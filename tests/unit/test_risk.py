"""Risk incidents: threshold crossing over a sliding window, once per crossing; tactic spread."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from pipeline.emit import build_risk_events
from pipeline.offline import detect_files
from pipeline.policy import MAX_CONTRIBUTIONS, RiskPolicy, WindowPolicy
from pipeline.records import Annotations, MitreAnnotations, ObjectState, RiskEvent, to_builtins
from pipeline.risk import RiskScorer
from tests import PROJECT_ROOT
from tests.conftest import schema_validator

SPLUNK = PROJECT_ROOT / "tests/fixtures/splunk"

DAY = 86_400


def risk(
    rule: str,
    score: int,
    tactics: list[str],
    obj: str = "h1",
    time: float = 0.0,
    threats: tuple[str, ...] = (),
    finding: str = "",
) -> RiskEvent:
    return RiskEvent(
        time=time,
        search_name=f"rule {rule}",
        risk_object=obj,
        risk_object_type="system",
        risk_score=score,
        risk_message=f"rule {rule} fired on {obj}",
        threat_object=threats,
        threat_object_type=("process_name",) * len(threats),
        annotations=Annotations(MitreAnnotations((), tuple(tactics), ()), ()),
        finding_id=finding or f"f-{rule}",
        rule_id=rule,
    )


def test_the_threshold_is_crossed_exactly_once_at_the_right_event() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100))
    assert scorer.add(risk("a", 50, ["Execution"], time=1000.0)) == []
    assert scorer.add(risk("a", 50, ["Execution"], time=1100.0)) == []  # same rule counts once
    (incident,) = scorer.add(risk("b", 50, ["Execution"], time=1200.0))
    assert (incident.kind, incident.score, incident.time) == (
        "risk_threshold",
        100,
        "1970-01-01T00:20:00.000Z",
    )
    assert [c.finding_id for c in incident.contributing] == ["f-a", "f-b"]
    schema_validator("wmiwatch.risk-incidents").validate(to_builtins(incident))
    assert scorer.add(risk("c", 25, ["Execution"], time=1300.0)) == []  # still above: no repeat


def test_a_rule_counts_once_per_object_and_threat_object_whatever_its_findings() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=80))
    for window in range(4):  # four findings of one rule on one host (four windows)
        found = risk("a", 40, [], time=1000.0 * window, threats=("wmic.exe",), finding=f"f{window}")
        assert scorer.add(found) == []
    (incident,) = scorer.add(risk("a", 40, [], time=4000.0, threats=("cmd.exe",), finding="f4"))
    assert incident.score == 80  # wmic.exe once (its latest finding), cmd.exe once
    assert [c.finding_id for c in incident.contributing] == ["f3", "f4"]
    assert scorer.add(risk("a", 40, [], obj="h2", time=4000.0, threats=("wmic.exe",))) == []
    assert scorer.add(risk("b", 40, [], obj="h2", time=4000.0, threats=("wmic.exe",)))  # 80


def test_scores_age_out_of_the_window_and_can_cross_again() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100))
    scorer.add(risk("a", 60, [], time=0.0))
    assert len(scorer.add(risk("b", 60, [], time=10.0))) == 1
    assert scorer.add(risk("c", 30, [], time=DAY + 20.0)) == []  # a and b aged out: 30
    assert len(scorer.add(risk("d", 80, [], time=DAY + 30.0))) == 1  # 110 again


def test_three_tactics_within_a_week_raise_a_tactics_incident() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=1000))
    scorer.add(risk("a", 10, ["Execution"], time=0.0))
    assert scorer.add(risk("b", 10, ["Persistence"], time=2 * DAY)) == []
    (incident,) = scorer.add(risk("c", 10, ["Defense Evasion"], time=5 * DAY))
    assert incident.kind == "mitre_tactics"
    assert incident.tactics == ("Defense Evasion", "Execution", "Persistence")


def test_objects_are_scored_separately() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100))
    scorer.add(risk("a", 60, [], obj="h1", time=0.0))
    assert scorer.add(risk("b", 60, [], obj="h2", time=1.0)) == []


def flattened(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return ``value`` with nested objects flattened to dotted names, as Splunk extracts JSON."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat |= flattened(item, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def test_risk_events_carry_the_splunk_risk_index_fields(rules: dict[str, Any]) -> None:
    documented = orjson.loads((SPLUNK / "risk_index_event_documented_synthetic.json").read_bytes())
    fixture = PROJECT_ROOT / "tests/fixtures/rules/synthetic_sysmon_1_wmic_os_get_local_xsl.xml"
    report = detect_files([fixture], tuple(rules.values()), WindowPolicy())
    xsl = "004e32e2-146d-11ec-a83f-acde48001122"  # XSL Script Execution With WMIC: threats
    (finding,) = [f for f in report.findings if f.rule_id == xsl]
    (event, *_) = build_risk_events(rules[xsl], finding)
    ours = flattened(to_builtins(event))
    for name, example in documented.items():
        assert type(ours[name]) is type(example), name
    assert ours["_time"] == datetime.fromisoformat(finding.first_time).timestamp()
    assert len(ours["threat_object"]) == len(ours["threat_object_type"]) == 2
    assert ours["annotations.mitre_attack.mitre_tactic_id"] == ["TA0005"]  # Defense Evasion
    assert ours["annotations.mitre_attack.mitre_technique_id"] == ["T1220"]
    schema_validator("wmiwatch.risk").validate(to_builtins(event))


def test_a_contribution_one_window_old_no_longer_counts_nor_is_kept() -> None:
    kept = RiskScorer({}, RiskPolicy(score_threshold=100))  # kept a week for the tactics
    kept.add(risk("a", 60, [], time=0.0))
    assert kept.add(risk("b", 60, [], time=float(DAY))) == []  # a is exactly a day old
    assert set(kept.state["h1"].contributions) == {"a", "b"}
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100, tactics_window_seconds=DAY))
    scorer.add(risk("a", 60, [], time=0.0))
    assert scorer.add(risk("b", 60, [], time=float(DAY))) == []  # a is exactly a day old
    assert set(scorer.state["h1"].contributions) == {"b"}
    assert len(scorer.add(risk("c", 40, [], time=DAY + 1.0))) == 1  # b and c: 100


def test_incident_ids_are_uuid5_of_kind_object_and_time() -> None:
    """uuid5(5b0d2a4e-0f7c-4e5e-9a57-6d1f1f0f57a1, 'risk_threshold|h1|1200.0'), computed apart."""
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100))
    scorer.add(risk("a", 50, [], time=1000.0))
    (incident,) = scorer.add(risk("b", 50, [], time=1200.0))
    assert incident.incident_id == "b40090cf-b58f-5b43-afa5-938dcbc09dcc"


def test_an_object_s_first_risk_event_can_raise_both_incidents() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100, tactics_threshold=2))
    incidents = scorer.add(risk("a", 100, ["Execution", "Persistence"], time=10.0))
    assert sorted(i.kind for i in incidents) == ["mitre_tactics", "risk_threshold"]
    assert scorer.state["h1"].risk_object_type == "system"


WEEK = 7 * DAY  # the longer of the two default windows


def test_objects_that_can_no_longer_count_are_forgotten() -> None:
    """The table holds only objects with a contribution within the longer window."""
    state: dict[str, Any] = {}
    scorer = RiskScorer(state, RiskPolicy())
    scorer.add(risk("a", 10, [], obj="h1", time=0.0), partition=1)
    scorer.add(risk("a", 10, [], obj="h2", time=100.0), partition=1)
    scorer.add(risk("a", 10, [], obj="h1", time=200.0), partition=1)  # h1 again: kept longer
    scorer.add(risk("a", 10, [], obj="far", time=0.0), partition=2)
    scorer.add(risk("b", 10, [], obj="h3", time=WEEK + 150.0), partition=1)
    assert set(state) == {"h1", "h3", "far"}  # h2's week is over; h1's is not; far: partition 2
    scorer.add(risk("b", 10, [], obj="h3", time=WEEK + 200.0), partition=1)
    assert set(state) == {"h3", "far"}  # h1's week ended at 200 s past it


def test_the_expiry_schedule_is_rebuilt_from_the_table() -> None:
    state: dict[str, Any] = {}
    RiskScorer(state, RiskPolicy()).add(risk("a", 10, [], obj="h1", time=0.0), partition=3)
    successor = RiskScorer(state, RiskPolicy())  # took the partition over: table read back
    successor.add(risk("a", 10, [], obj="h2", time=WEEK + 1.0), partition=3)
    assert set(state) == {"h2"}
    assert state["h2"].partition == 3


def test_a_forgotten_object_scores_from_nothing_again() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100))
    assert len(scorer.add(risk("a", 100, [], time=0.0))) == 1
    scorer.add(risk("x", 1, [], obj="other", time=WEEK + 10.0))  # the object is forgotten
    assert len(scorer.add(risk("a", 100, [], time=WEEK + 20.0))) == 1  # crosses again


def test_the_expiry_schedule_holds_one_entry_per_object() -> None:
    scorer = RiskScorer({}, RiskPolicy())
    for hour in range(50):  # one object scored again and again, one scored once
        scorer.add(risk("a", 1, [], obj="busy", time=3600.0 * hour), partition=0)
    scorer.add(risk("a", 1, [], obj="quiet", time=0.0), partition=0)
    assert scorer.expiries is not None and len(scorer.expiries[0]) == 2


def test_an_object_keeps_its_newest_contributions_up_to_a_bound() -> None:
    state: dict[str, ObjectState] = {}
    scorer = RiskScorer(state, RiskPolicy(score_threshold=10**9))
    for n in range(MAX_CONTRIBUTIONS + 10):
        scorer.add(risk("a", 1, [], time=float(n), threats=(f"p{n}.exe",), finding=f"f{n}"))
    kept = state["h1"].contributions.values()
    assert sorted(c.finding_id for c in kept) == sorted(
        f"f{n}" for n in range(10, MAX_CONTRIBUTIONS + 10)
    )


def test_a_long_threat_object_counts_under_a_digest() -> None:
    state: dict[str, ObjectState] = {}
    scorer = RiskScorer(state, RiskPolicy(score_threshold=100))
    long = "powershell -enc " + "A" * 5000
    scorer.add(risk("a", 60, [], time=1.0, threats=(long,)))
    (key,) = state["h1"].contributions
    assert key.startswith("a|blake2b:") and len(key) < 64
    assert scorer.add(risk("a", 60, [], time=2.0, threats=(long,))) == []  # the same: once
    assert scorer.add(risk("a", 60, [], time=3.0, threats=(long + "B",)))  # another: 120
