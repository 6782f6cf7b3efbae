"""The post-stats commands a match's group alone decides, to run before the match is sent.

After ``stats … by F`` a result row holds the by-fields and the aggregations' outputs. A command
that reads neither an output nor a field an output went into gives, on the by-fields alone, what
it gives on the whole row: a filter among those commands that drops a group's row drops it
whatever the group counts. Run on each match's group, those commands let the intake keep back
the matches of groups that can never become findings (``… by process_name | where
len(process_name)=5``): the aggregation never sees them, and every finding stays the same.
That holds because every command is a function of the row alone (no clock, no state): a
command that would read the time or other rows must read as reading every field.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.rules.expr import All
from pipeline.rules.plan import Aggregation, GroupField
from pipeline.rules.steps import Filter, Step


def group_steps(
    group_by: Iterable[GroupField], aggregations: Iterable[Aggregation], row_steps: Iterable[Step]
) -> tuple[Step, ...]:
    """Return the row steps the by-fields alone decide, in order, through the last filter
    (none when no filter is decided); of a filter ANDing terms, the terms decided."""
    outputs = {aggregation.output for aggregation in aggregations}
    names = frozenset({group.row_name for group in group_by} | outputs)
    tainted = set(outputs)  # fields whose value or presence the aggregations decide
    decided: list[Step] = []
    for step in row_steps:
        reads, writes = step.reads(names), step.writes(names)
        names |= writes
        if reads is not None and reads.isdisjoint(tainted):
            decided.append(step)
        elif (part := _decided_terms(step, tainted)) is not None:
            decided.append(part)
        else:
            tainted |= writes
    filters = [number for number, step in enumerate(decided) if isinstance(step, Filter)]
    return tuple(decided[: filters[-1] + 1]) if filters else ()


def _decided_terms(step: Step, tainted: set[str]) -> Filter | None:
    """Return a filter of the terms of an AND filter that read no field in ``tainted``."""
    if not isinstance(step, Filter) or not isinstance(step.expr, All):
        return None
    terms = tuple(
        term
        for term in step.expr.operands
        if (fields := term.fields()) is not None and fields.isdisjoint(tainted)
    )
    return Filter(All(terms)) if terms else None
