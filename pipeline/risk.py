"""Risk-based alerting: sum risk per object over a sliding event-time window, raise incidents.

Each (rule, risk object, threat object) counts once per window however often it fires. An
incident goes out when an object's score crosses the threshold (again only after it fell
below), and when its findings span enough distinct MITRE tactics.

An object keeps its ``MAX_CONTRIBUTIONS`` newest contributions: a host can make findings
without end, and its row must stay within what the broker accepts.

An object none of whose contributions is within the longer window is forgotten (its key
deleted) once a risk event of its partition passes that time: the table holds only the objects
that can still count, however many distinct objects the fleet has produced.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import MutableMapping

from pipeline.emit import iso_time, uuid5
from pipeline.policy import MAX_CONTRIBUTIONS, RiskPolicy
from pipeline.records import (
    Contribution,
    Contributor,
    Incident,
    IncidentKind,
    ObjectState,
    RiskEvent,
)

MAX_KEY_CHARS = 256


class RiskScorer:
    """Keeps per-risk-object contributions in ``state`` and says which incidents are due."""

    def __init__(self, state: MutableMapping[str, ObjectState], policy: RiskPolicy) -> None:
        self.state, self.policy = state, policy
        self.horizon = max(policy.score_window_seconds, policy.tactics_window_seconds)
        self.expiries: dict[int, list[tuple[float, str]]] | None = None  # None: from the table
        self.clocks: dict[int, float] = {}  # the newest risk event time per partition

    def add(self, risk: RiskEvent, partition: int = 0) -> list[Incident]:
        """Count one risk event of ``partition``; forget the objects of that partition that
        can no longer count; return the incidents it raises."""
        time = risk.time
        known = self.state.get(risk.risk_object)
        current = known or ObjectState({}, False, False, "")
        contributions = dict(current.contributions)
        contributions[_contribution_key(risk)] = Contribution(
            time,
            risk.risk_score,
            risk.finding_id,
            risk.search_name,
            risk.annotations.mitre_attack.mitre_tactic,
        )
        contributions = {k: c for k, c in contributions.items() if c.time > time - self.horizon}
        while len(contributions) > MAX_CONTRIBUTIONS:
            del contributions[min(contributions, key=lambda k: contributions[k].time)]
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
            contributions, above, many, risk.risk_object_type, partition
        )
        scheduled = known is not None and known.partition == partition
        self._expire(partition, time, None if scheduled else risk.risk_object)
        return incidents

    def forget_index(self) -> None:
        """Rebuild the expiry schedule from the table at the next event (a rebalance)."""
        self.expiries = None

    def _expire(self, partition: int, time: float, new: str | None) -> None:
        """Schedule ``new`` (an object not yet in ``partition``'s schedule); delete the objects
        of ``partition`` whose time has passed. The schedule holds one entry per object: an
        entry that comes due for an object scored since is put back at its new time."""
        built = self.expiries is not None  # else built now from the table, ``new`` included
        heap = self._expiries().setdefault(partition, [])
        if new is not None and built:
            heapq.heappush(heap, (self._expiry(new), new))
        clock = self.clocks[partition] = max(self.clocks.get(partition, time), time)
        while heap and heap[0][0] <= clock:
            _, name = heapq.heappop(heap)
            current = self.state.get(name)
            if current is None or current.partition != partition:
                continue
            expires = self._expiry(name)
            if expires <= clock:
                del self.state[name]
            else:
                heapq.heappush(heap, (expires, name))

    def _expiry(self, name: str) -> float:
        """Return when object ``name`` (in the table) can no longer count."""
        return _newest(self.state[name].contributions) + self.horizon

    def _expiries(self) -> dict[int, list[tuple[float, str]]]:
        if self.expiries is None:
            self.expiries = {}
            for name in list(self.state):
                current = self.state.get(name)
                if current is not None:
                    entry = (self._expiry(name), name)
                    self.expiries.setdefault(current.partition, []).append(entry)
            for heap in self.expiries.values():
                heapq.heapify(heap)
        return self.expiries

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
            incident_id=uuid5(key.encode()),
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


def _contribution_key(risk: RiskEvent) -> str:
    """Return the key of the (rule, threat objects) a risk event counts for; a long one is
    replaced by a digest (threat objects are endpoint values)."""
    key = "|".join((risk.rule_id, *risk.threat_object))
    if len(key) <= MAX_KEY_CHARS:
        return key
    return f"{risk.rule_id}|blake2b:{hashlib.blake2b(key.encode(), digest_size=16).hexdigest()}"


def _newest(contributions: dict[str, Contribution]) -> float:
    """Return the time of the newest contribution (-inf for none)."""
    return max((c.time for c in contributions.values()), default=float("-inf"))
