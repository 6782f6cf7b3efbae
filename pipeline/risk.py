"""Risk-based alerting: sum risk per object over a sliding event-time window, raise incidents.

Each (rule, risk object, threat object) counts once per window however often it fires. An
incident goes out when an object's score crosses the threshold (again only after it fell
below), and when its findings span enough distinct MITRE tactics.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping

from pipeline.emit import FINDING_NAMESPACE, iso_time
from pipeline.policy import RiskPolicy
from pipeline.records import (
    Contribution,
    Contributor,
    Incident,
    IncidentKind,
    ObjectState,
    RiskEvent,
)


class RiskScorer:
    """Keeps per-risk-object contributions in ``state`` and says which incidents are due."""

    def __init__(self, state: MutableMapping[str, ObjectState], policy: RiskPolicy) -> None:
        self.state, self.policy = state, policy

    def add(self, risk: RiskEvent) -> list[Incident]:
        """Count one risk event; return the incidents it raises."""
        time = risk.time
        current = self.state.get(risk.risk_object) or ObjectState({}, False, False, "")
        contributions = dict(current.contributions)
        key = "|".join((risk.rule_id, *risk.threat_object))
        contributions[key] = Contribution(
            time,
            risk.risk_score,
            risk.finding_id,
            risk.search_name,
            risk.annotations.mitre_attack.mitre_tactic,
        )
        horizon = time - max(self.policy.score_window_seconds, self.policy.tactics_window_seconds)
        contributions = {k: c for k, c in contributions.items() if c.time > horizon}
        by_score = self._within(contributions, time, self.policy.score_window_seconds)
        by_tactic = self._within(contributions, time, self.policy.tactics_window_seconds)
        score = sum(c.score for c in by_score)
        tactics = tuple(sorted({t for c in by_tactic for t in c.tactics}))
        incidents = []
        above = score >= self.policy.score_threshold
        if above and not current.above:
            incidents.append(self._incident("risk_threshold", risk, time, score, tactics, by_score))
        many = len(tactics) >= self.policy.tactics_threshold
        if many and not current.tactics:
            incidents.append(self._incident("mitre_tactics", risk, time, score, tactics, by_tactic))
        self.state[risk.risk_object] = ObjectState(
            contributions, above, many, risk.risk_object_type
        )
        return incidents

    @staticmethod
    def _within(
        contributions: dict[str, Contribution], time: float, window: int
    ) -> list[Contribution]:
        return sorted(
            (c for c in contributions.values() if c.time > time - window),
            key=lambda c: (c.time, c.finding_id),
        )

    def _incident(
        self,
        kind: IncidentKind,
        risk: RiskEvent,
        time: float,
        score: int,
        tactics: tuple[str, ...],
        contributing: list[Contribution],
    ) -> Incident:
        key = f"{kind}|{risk.risk_object}|{time}"
        return Incident(
            incident_id=str(uuid.uuid5(FINDING_NAMESPACE, key)),
            kind=kind,
            risk_object=risk.risk_object,
            risk_object_type=risk.risk_object_type,
            score=score,
            score_threshold=self.policy.score_threshold,
            tactics=tactics,
            time=iso_time(time),
            contributing=tuple(
                Contributor(c.finding_id, c.rule_name, c.score, iso_time(c.time), c.tactics)
                for c in contributing
            ),
        )
