"""Match one normalized event against one compiled rule."""

from __future__ import annotations

from pipeline.event import Event
from pipeline.records import Match, Origin
from pipeline.rules.compiler import PER_FIELD
from pipeline.rules.model import Rule
from pipeline.rules.steps import run_steps


def match_event(
    rule: Rule, event: Event, origin: Origin | None = None, arrived: float = 0.0
) -> Match | None:
    """Return the match when ``event`` (arrived at ``arrived``) satisfies ``rule``, else None."""
    plan = rule.plan
    if not plan.predicate.evaluate(event):
        return None
    row = {**event.fields, "_raw": event.raw}  # later commands may read the raw text
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
    values = {  # count(field) needs only to know the field was there
        a.output: "" if a.function == "count" else row[a.field]
        for a in plan.aggregations
        if (a.function in PER_FIELD or a.function == "count") and a.field in row
    }
    dest = event.fields.get("dest") or event.fields.get("Computer") or "unknown"
    clamped = event.clamped is not None
    return Match(rule.id, dest, event.time, group, values, origin, clamped, arrived)
