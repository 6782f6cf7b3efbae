"""The compiled form of one rule's search: what the matcher and the aggregator run."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.rules.expr import Expr
from pipeline.rules.steps import Step


@dataclass(frozen=True, slots=True)
class Aggregation:
    """One ``stats`` function: count, min(_time), max(_time), values(f) or dc(f)."""

    function: str
    field: str
    output: str


@dataclass(frozen=True, slots=True)
class GroupField:
    """A ``by`` field: its name in the result row and the event field it reads."""

    row_name: str
    event_field: str


@dataclass(frozen=True, slots=True)
class Plan:
    """A search compiled into event predicate, per-event steps, grouping and per-row steps."""

    predicate: Expr
    event_steps: tuple[Step, ...]
    group_by: tuple[GroupField, ...]
    group_fill: str | None
    aggregations: tuple[Aggregation, ...]
    row_steps: tuple[Step, ...]
    window_seconds: int | None = None  # from ``by _time span=``
    group_steps: tuple[Step, ...] = ()  # the row steps a match's group decides (``pushdown``)
