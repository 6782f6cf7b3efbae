"""Match one normalized event against one compiled rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.event import Event
from pipeline.rules.model import Rule
from pipeline.rules.steps import run_steps


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a raw record came from: topic/partition/offset, or a file and line."""

    topic: str
    partition: int
    offset: int
    record_id: str = ""


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One event that passed a rule's filters, with its group-by values."""

    rule_id: str
    dest: str
    time: float
    group: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)
    origin: Origin | None = None
    time_clamped: bool = False

    def to_record(self) -> dict[str, Any]:
        """Return the JSON-ready record for the internal matches topic."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RuleMatch:
        """Rebuild a match from its record."""
        origin = record.get("origin")
        return cls(
            rule_id=record["rule_id"],
            dest=record["dest"],
            time=float(record["time"]),
            group=dict(record["group"]),
            values=dict(record.get("values") or {}),
            origin=Origin(**origin) if origin else None,
            time_clamped=bool(record.get("time_clamped", False)),
        )


def match_event(rule: Rule, event: Event, origin: Origin | None = None) -> RuleMatch | None:
    """Return the match when ``event`` satisfies ``rule``'s search, else None."""
    plan = rule.plan
    if not plan.predicate.evaluate(event):
        return None
    row = dict(event.fields)
    if not run_steps(plan.event_steps, row):
        return None
    group: dict[str, str] = {}
    for by in plan.group_by:
        value = row.get(by.event_field)
        if value is None:
            if plan.group_fill is None:
                return None  # SPL stats drops events missing a by-field
            value = plan.group_fill
        group[by.row_name] = value
    values = {
        a.output: row[a.field]
        for a in plan.aggregations
        if a.function in ("values", "dc") and a.field in row
    }
    dest = event.fields.get("dest") or event.fields.get("Computer") or "unknown"
    return RuleMatch(rule.id, dest, event.time, group, values, origin, event.clamped is not None)
