"""Match one normalized event against one compiled rule."""

from __future__ import annotations

import hashlib

from pipeline.event import Event
from pipeline.policy import MAX_MATCH_CHARS, MAX_VALUE_CHARS
from pipeline.records import Match, Origin
from pipeline.rejects import Rejected, RejectReason
from pipeline.rules.compiler import PER_FIELD
from pipeline.rules.model import Rule
from pipeline.rules.steps import run_steps


def match_event(
    rule: Rule, event: Event, origin: Origin | None = None, arrived: float = 0.0
) -> Match | None:
    """Return the match when ``event`` (arrived at ``arrived``) satisfies ``rule``, else None.

    Raise ``Rejected`` (too large) when the match would hold more than ``MAX_MATCH_CHARS``.
    """
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
        group[by.row_name] = shortened(value)
    if plan.group_steps and not run_steps(plan.group_steps, dict(group)):
        return None  # its group's row is dropped after stats, whatever the group counts
    values = {  # count(field) needs only to know the field was there
        a.output: "" if a.function == "count" else shortened(row[a.field])
        for a in plan.aggregations
        if (a.function in PER_FIELD or a.function == "count") and a.field in row
    }
    held = sum(map(len, group.values())) + sum(map(len, values.values()))
    if held > MAX_MATCH_CHARS:
        detail = f"its match of rule {rule.id} would hold {held} characters"
        raise Rejected(RejectReason.TOO_LARGE, detail)
    dest = shortened(event.fields.get("dest") or event.fields.get("Computer") or "unknown")
    clamped = event.clamped is not None
    return Match(rule.id, dest, event.time, group, values, origin, clamped, arrived)


def shortened(value: str) -> str:
    """Return ``value``, or if longer than ``MAX_VALUE_CHARS`` its start followed by its length
    and a digest of the whole (values that differ stay different)."""
    if len(value) <= MAX_VALUE_CHARS:
        return value
    whole = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{value[:MAX_VALUE_CHARS]}…[{len(value)} characters, blake2b {whole}]"
