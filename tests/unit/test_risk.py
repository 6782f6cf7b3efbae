"""Risk incidents: threshold crossing over a sliding window, once per crossing; tactic spread."""

from __future__ import annotations

from pipeline.policy import RiskPolicy
from pipeline.records import RiskEvent, to_builtins
from pipeline.risk import RiskScorer
from tests.conftest import schema_validator

DAY = 86_400


def risk(rule: str, score: int, tactics: list[str], obj: str = "h1") -> RiskEvent:
    return RiskEvent(
        finding_id=f"f-{rule}",
        risk_object=obj,
        risk_object_type="system",
        risk_score=score,
        risk_message=f"rule {rule} fired on {obj}",
        search_name=f"rule {rule}",
        rule_id=rule,
        mitre_attack_id=(),
        tactics=tuple(tactics),
        analytic_story=(),
        threat_object="",
        time="1970-01-01T00:00:00.000Z",  # the scorer is given the event time apart
    )


def test_the_threshold_is_crossed_exactly_once_at_the_right_event() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100))
    assert scorer.add(risk("a", 50, ["Execution"]), 1000.0) == []
    assert scorer.add(risk("a", 50, ["Execution"]), 1100.0) == []  # same rule counts once
    (incident,) = scorer.add(risk("b", 50, ["Execution"]), 1200.0)
    assert (incident.kind, incident.score, incident.time) == (
        "risk_threshold",
        100,
        "1970-01-01T00:20:00.000Z",
    )
    assert [c.finding_id for c in incident.contributing] == ["f-a", "f-b"]
    schema_validator("wmiwatch.risk-incidents").validate(to_builtins(incident))
    assert scorer.add(risk("c", 25, ["Execution"]), 1300.0) == []  # still above: no repeat


def test_scores_age_out_of_the_window_and_can_cross_again() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100))
    scorer.add(risk("a", 60, []), 0.0)
    assert len(scorer.add(risk("b", 60, []), 10.0)) == 1
    assert scorer.add(risk("c", 30, []), DAY + 20.0) == []  # a and b aged out: 30
    assert len(scorer.add(risk("d", 80, []), DAY + 30.0)) == 1  # 110 again


def test_three_tactics_within_a_week_raise_a_tactics_incident() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=1000))
    scorer.add(risk("a", 10, ["Execution"]), 0.0)
    assert scorer.add(risk("b", 10, ["Persistence"]), 2 * DAY) == []
    (incident,) = scorer.add(risk("c", 10, ["Defense Evasion"]), 5 * DAY)
    assert incident.kind == "mitre_tactics"
    assert incident.tactics == ("Defense Evasion", "Execution", "Persistence")


def test_objects_are_scored_separately() -> None:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=100))
    scorer.add(risk("a", 60, [], obj="h1"), 0.0)
    assert scorer.add(risk("b", 60, [], obj="h2"), 1.0) == []
