"""Risk-based alerting: sum risk per object over a sliding event-time window, raise incidents.

Each (rule, risk object, threat object) counts once per window however often it fires. An
incident goes out when an object's score crosses the threshold (again only after it fell
below), and when its findings span enough distinct MITRE tactics.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from pipeline.emit import FINDING_NAMESPACE, iso_time

ObjectState = dict[str, Any]


@dataclass(frozen=True)
class RiskPolicy:
    """Thresholds and sliding windows of the incident rules."""

    score_threshold: int = 100
    score_window_seconds: int = 86_400
    tactics_threshold: int = 3
    tactics_window_seconds: int = 604_800


class RiskScorer:
    """Keeps per-risk-object contributions in ``state`` and says which incidents are due."""

    def __init__(self, state: MutableMapping[str, ObjectState], policy: RiskPolicy) -> None:
        self.state, self.policy = state, policy

    def add(self, risk: dict[str, Any], time: float) -> list[dict[str, Any]]:
        """Count one risk event (event time ``time``); return the incidents it raises."""
        key = risk["risk_object"]
        current = self.state.get(key) or {"contributions": {}, "above": False, "tactics": False}
        contributions = dict(current["contributions"])
        contribution_key = f"{risk['rule_id']}|{risk.get('threat_object', '')}"
        contributions[contribution_key] = {
            "time": time,
            "score": risk["risk_score"],
            "finding_id": risk["finding_id"],
            "rule_name": risk["search_name"],
            "tactics": risk.get("tactics", []),
        }
        horizon = time - max(self.policy.score_window_seconds, self.policy.tactics_window_seconds)
        contributions = {k: c for k, c in contributions.items() if c["time"] > horizon}
        by_score = self._within(contributions, time, self.policy.score_window_seconds)
        by_tactic = self._within(contributions, time, self.policy.tactics_window_seconds)
        score = sum(c["score"] for c in by_score)
        tactics = sorted({t for c in by_tactic for t in c["tactics"]})
        incidents = []
        above = score >= self.policy.score_threshold
        if above and not current["above"]:
            incidents.append(self._incident("risk_threshold", risk, time, score, tactics, by_score))
        many = len(tactics) >= self.policy.tactics_threshold
        if many and not current["tactics"]:
            incidents.append(self._incident("mitre_tactics", risk, time, score, tactics, by_tactic))
        self.state[key] = {
            "contributions": contributions,
            "above": above,
            "tactics": many,
            "risk_object_type": risk["risk_object_type"],
        }
        return incidents

    @staticmethod
    def _within(
        contributions: dict[str, dict[str, Any]], time: float, window: int
    ) -> list[dict[str, Any]]:
        return sorted(
            (c for c in contributions.values() if c["time"] > time - window),
            key=lambda c: (c["time"], c["finding_id"]),
        )

    def _incident(
        self,
        kind: str,
        risk: dict[str, Any],
        time: float,
        score: int,
        tactics: list[str],
        contributing: list[dict[str, Any]],
    ) -> dict[str, Any]:
        key = f"{kind}|{risk['risk_object']}|{time}"
        return {
            "incident_id": str(uuid.uuid5(FINDING_NAMESPACE, key)),
            "kind": kind,
            "risk_object": risk["risk_object"],
            "risk_object_type": risk["risk_object_type"],
            "score": score,
            "score_threshold": self.policy.score_threshold,
            "tactics": tactics,
            "time": iso_time(time),
            "contributing": [
                {
                    "finding_id": c["finding_id"],
                    "rule_name": c["rule_name"],
                    "risk_score": c["score"],
                    "time": iso_time(c["time"]),
                    "tactics": c["tactics"],
                }
                for c in contributing
            ],
        }
