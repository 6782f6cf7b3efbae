"""Eval expressions (``eval``, ``where``): values, null, three-valued logic, arithmetic.

Unlike ``search``, eval compares exactly (``a="x"`` is case-sensitive, ``*`` is a character),
reads a bare word as a field, and gives null when a field is absent: a comparison with null is
null, ``NOT null`` is null, and ``where`` keeps a row only when its expression is true. ``AND``
is false if any side is false, ``OR`` true if any side is true. Values are text; a text that
reads as a number is a number to comparisons and arithmetic. A multivalue (``split()``) is its
values joined by newlines, as ``stats values()`` renders one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.event import Event
from pipeline.rules.expr import NO_CLAUSES, Clauses, Rank, RawSafe, Reads, Truth, number_or_none

Fields = Mapping[str, str]
Operand = Callable[[Fields], str | None]  # a value, or None for null
Condition = Callable[[Fields], bool | None]  # true, false, or None for null
MULTIVALUE_SEPARATOR = "\n"

_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "=": lambda order: order == 0,
    "==": lambda order: order == 0,
    "!=": lambda order: order != 0,
    "<": lambda order: order < 0,
    "<=": lambda order: order <= 0,
    ">": lambda order: order > 0,
    ">=": lambda order: order >= 0,
}
_NUMERIC: dict[str, Callable[[float, float], float | None]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else None,
    "%": lambda a, b: math.fmod(a, b) if b else None,
}


@dataclass(frozen=True, slots=True)
class Where:
    """A compiled ``where`` condition, as a search expression (true only when true)."""

    condition: Condition
    reading: frozenset[str]  # the fields the condition reads

    def evaluate(self, event: Event) -> bool:
        """Return whether the condition is true (false and null drop the row)."""
        return self.condition(event.fields) is True

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Eval conditions are not decided before the event is read."""
        return None

    def necessary(self, raw_safe: RawSafe, rank: Rank) -> Clauses:
        """Eval conditions promise no word of the raw text."""
        return NO_CLAUSES

    def fields(self) -> Reads:
        """Return the fields the condition reads."""
        return self.reading


def literal(text: str) -> Operand:
    """Return an operand that is always ``text``."""
    return lambda fields: text


def field(name: str) -> Operand:
    """Return the operand reading field ``name`` (null when absent)."""
    return lambda fields: fields.get(name)


def number_text(number: float) -> str:
    """Render a number as eval does: whole numbers without a decimal point."""
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


def comparison(left: Operand, op: str, right: Operand) -> Condition:
    """Compare two operands: as numbers when both are, else as text; null with a null side."""
    test = _COMPARISONS[op]

    def compare(fields: Fields) -> bool | None:
        a, b = left(fields), right(fields)
        if a is None or b is None:
            return None
        x, y = number_or_none(a), number_or_none(b)
        if x is not None and y is not None:
            return test((x > y) - (x < y))
        return test((a > b) - (a < b))

    return compare


def arithmetic(left: Operand, op: str, right: Operand) -> Operand:
    """Combine two operands: ``.`` joins texts; ``+`` adds numbers or joins texts; ``-``,
    ``*``, ``/``, ``%`` take numbers. Null when a side is null or not of the right kind."""

    def combine(fields: Fields) -> str | None:
        a, b = left(fields), right(fields)
        if a is None or b is None:
            return None
        if op == ".":
            return a + b
        x, y = number_or_none(a), number_or_none(b)
        if x is None or y is None:
            return a + b if op == "+" and x is None and y is None else None
        result = _NUMERIC[op](x, y)
        return None if result is None else number_text(result)

    return combine


def negative(operand: Operand) -> Operand:
    """Return ``-operand`` (null unless a number)."""

    def negate(fields: Fields) -> str | None:
        number = number_or_none(operand(fields))
        return None if number is None else number_text(-number)

    return negate


def negation(operand: Condition) -> Condition:
    """Negate a condition; null stays null."""

    def negate(fields: Fields) -> bool | None:
        truth = operand(fields)
        return None if truth is None else not truth

    return negate


def conjunction(operands: list[Condition]) -> Condition:
    """AND: false if any operand is false, else null if any is null, else true."""

    def all_of(fields: Fields) -> bool | None:
        truths = [operand(fields) for operand in operands]
        return False if False in truths else (None if None in truths else True)

    return all_of


def disjunction(operands: list[Condition]) -> Condition:
    """OR: true if any operand is true, else null if any is null, else false."""

    def any_of(fields: Fields) -> bool | None:
        truths = [operand(fields) for operand in operands]
        return True if True in truths else (None if None in truths else False)

    return any_of


def values_of(value: str) -> list[str]:
    """Return the values of a (multi)value."""
    return value.split(MULTIVALUE_SEPARATOR)
