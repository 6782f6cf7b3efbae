"""Per-row steps of a compiled search: filters, eval, rex, rename, fillnull, convert."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.event import Event
from pipeline.rules.evaluation import Operand
from pipeline.rules.expr import Expr, Reads, number_or_none
from pipeline.rules.patterns import Pattern

Row = dict[str, str]
MAX_RENAME_PLANS = 256


class Step(Protocol):
    """One SPL command applied to a row of fields; returns False to drop the row."""

    def apply(self, row: Row) -> bool:
        """Transform ``row`` in place and say whether it is kept."""
        ...

    def reads(self, names: frozenset[str]) -> Reads:
        """Return the fields whose values or presence the step depends on, in a row that may
        hold ``names`` (None: any field)."""
        ...

    def writes(self, names: frozenset[str]) -> frozenset[str]:
        """Return the fields the step may set or remove, in a row that may hold ``names``."""
        ...


NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Filter:
    """``search``/``where`` on fields computed by earlier commands."""

    expr: Expr

    def apply(self, row: Row) -> bool:
        """Keep the row when the expression holds.

        Bare words search the event's ``_raw`` text before stats; after stats, where a row
        has no ``_raw``, they search its field values (each one apart).
        """
        raw = row.get("_raw")
        text = "\n".join(row.values()) if raw is None else raw
        return self.expr.evaluate(Event(fields=row, time=0.0, raw=text))

    def reads(self, names: frozenset[str]) -> Reads:
        """Return the expression's fields (None for bare words: they read every value)."""
        return self.expr.fields()

    def writes(self, names: frozenset[str]) -> frozenset[str]:
        """Return no field: a filter only keeps or drops."""
        return NOTHING


@dataclass(frozen=True, slots=True)
class Assign:
    """``eval name=expression, …``: each assignment in turn; a null result removes the field."""

    assignments: tuple[tuple[str, Operand], ...]
    reading: frozenset[str]  # the fields the expressions read

    def apply(self, row: Row) -> bool:
        """Set each field from its expression, seeing the assignments before it."""
        for name, operand in self.assignments:
            value = operand(row)
            if value is None:
                row.pop(name, None)
            else:
                row[name] = value
        return True

    def reads(self, names: frozenset[str]) -> Reads:
        """Return the fields the expressions read."""
        return self.reading

    def writes(self, names: frozenset[str]) -> frozenset[str]:
        """Return the fields assigned."""
        return frozenset(name for name, _ in self.assignments)


@dataclass(frozen=True, slots=True)
class Rex:
    """``rex field=F "(?<name>...)"``: add the named groups of the first match."""

    field: str
    pattern: Pattern

    def apply(self, row: Row) -> bool:
        """Extract named groups; a row without a match keeps going without them."""
        found = self.pattern.search(row.get(self.field, ""))
        if found:
            row.update({k: v for k, v in found.groupdict().items() if v is not None})
        return True

    def reads(self, names: frozenset[str]) -> Reads:
        """Return the field searched."""
        return frozenset((self.field,))

    def writes(self, names: frozenset[str]) -> frozenset[str]:
        """Return the expression's named groups."""
        return frozenset(self.pattern.groupindex)


@dataclass(frozen=True, slots=True)
class Rename:
    """``rename A as B``; a single ``*`` in A carries over to B (``Processes.* as *``)."""

    pairs: tuple[tuple[str, str], ...]
    # The renames worked out once per set of field names (rows of a rule mostly share one):
    # new name -> old name, in the order the row ends in. Bounded: event fields are untrusted.
    plans: dict[tuple[str, ...], dict[str, str]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def apply(self, row: Row) -> bool:
        """Rename matching fields."""
        names = tuple(row)
        plan = self.plans.get(names)
        if plan is None:
            if len(self.plans) >= MAX_RENAME_PLANS:
                self.plans.clear()
            plan = self.plans[names] = self._renamed({name: name for name in names})
        values = [row[old] for old in plan.values()]
        row.clear()
        row.update(zip(plan, values, strict=True))
        return True

    def reads(self, names: frozenset[str]) -> Reads:
        """Return the fields of ``names`` that move."""
        return frozenset(old for new, old in self._moves(names) if new != old)

    def writes(self, names: frozenset[str]) -> frozenset[str]:
        """Return the fields of ``names`` that move and the fields they land in."""
        return frozenset(name for move in self._moves(names) if move[0] != move[1] for name in move)

    def _moves(self, names: frozenset[str]) -> list[tuple[str, str]]:
        """Return (new name, old name) for each field a row holding ``names`` ends with."""
        return list(self._renamed({name: name for name in sorted(names)}).items())

    def _renamed(self, row: Row) -> Row:
        """Rename in ``row`` as the command does, pair by pair (``apply`` does it on a row's
        names, to work out the plan for rows with those names)."""
        for source, target in self.pairs:
            if "*" not in source:
                if source in row:
                    row[target] = row.pop(source)
                continue
            prefix, suffix = source.split("*", 1)
            for name in [n for n in row if n.startswith(prefix) and n.endswith(suffix)]:
                middle = name[len(prefix) : len(name) - len(suffix)]
                row[target.replace("*", middle, 1)] = row.pop(name)
        return row


@dataclass(frozen=True, slots=True)
class Fillnull:
    """``fillnull [value=V] [fields]``: give absent fields a value."""

    value: str
    fields: tuple[str, ...]

    def apply(self, row: Row) -> bool:
        """Fill the named fields that are absent."""
        for name in self.fields:
            row.setdefault(name, self.value)
        return True

    def reads(self, names: frozenset[str]) -> Reads:
        """Return the fields filled (whether each is present)."""
        return frozenset(self.fields)

    def writes(self, names: frozenset[str]) -> frozenset[str]:
        """Return the fields filled."""
        return frozenset(self.fields)


@dataclass(frozen=True, slots=True)
class Convert:
    """``convert timeformat=F ctime(field) [as out]``: render epoch seconds as text."""

    field: str
    output: str
    timeformat: str

    def apply(self, row: Row) -> bool:
        """Render the field when it holds epoch seconds."""
        seconds = number_or_none(row.get(self.field))
        if seconds is not None:
            row[self.output] = time.strftime(self.timeformat, time.gmtime(seconds))
        return True

    def reads(self, names: frozenset[str]) -> Reads:
        """Return the field converted."""
        return frozenset((self.field,))

    def writes(self, names: frozenset[str]) -> frozenset[str]:
        """Return the field written."""
        return frozenset((self.output,))


def run_steps(steps: tuple[Step, ...], row: Row) -> bool:
    """Apply ``steps`` in order; stop at the first that drops the row."""
    return all(step.apply(row) for step in steps)
