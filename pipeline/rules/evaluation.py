"""``where`` expressions with eval semantics: case-sensitive, null-aware, a few functions.

Unlike ``search``, eval compares exactly (``a="x"`` is case-sensitive, ``*`` is a character),
reads a bare word as a field (or a number), and gives null when a field is absent: a
comparison with null is null, ``NOT null`` is null, and ``where`` keeps a row only when its
expression is true. ``AND`` is false if any side is false, ``OR`` true if any side is true.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pipeline.event import Event
from pipeline.rules.errors import RuleError
from pipeline.rules.expr import Literals, RawSafe, Truth, number_or_none, pcre

T = TypeVar("T")
Fields = Mapping[str, str]
Operand = Callable[[Fields], str | None]  # a value, or None for null
Condition = Callable[[Fields], bool | None]  # true, false, or None for null

_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "=": lambda order: order == 0,
    "==": lambda order: order == 0,
    "!=": lambda order: order != 0,
    "<": lambda order: order < 0,
    "<=": lambda order: order <= 0,
    ">": lambda order: order > 0,
    ">=": lambda order: order >= 0,
}


@dataclass(frozen=True, slots=True)
class Where:
    """A compiled ``where`` condition, as a search expression (true only when true)."""

    condition: Condition

    def evaluate(self, event: Event) -> bool:
        """Return whether the condition is true (false and null drop the row)."""
        return self.condition(event.fields) is True

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Eval conditions are not decided before the event is read."""
        return None

    def necessary(self, raw_safe: RawSafe) -> Literals:
        """Eval conditions promise no word of the raw text."""
        return None


def literal(text: str) -> Operand:
    """Return an operand that is always ``text``."""
    return lambda fields: text


def field_or_number(word: str) -> Operand:
    """Return a bare word's operand: a number literal, else the field's value (null if absent)."""
    if number_or_none(word) is not None:
        return literal(word)
    return lambda fields: fields.get(word)


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


def _like_pattern(pattern: str) -> re.Pattern[str]:
    """Compile SQL LIKE: ``%`` any run, ``_`` one character, the rest literal."""
    parts = ("." if c == "_" else ".*" if c == "%" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _constant(name: str, operand: Operand) -> str:
    value = operand({})
    if value is None:
        raise RuleError(f"where: {name}() needs a quoted pattern as its second argument")
    return value


def _like(operands: list[Operand]) -> Condition:
    value, pattern = operands[0], _like_pattern(_constant("like", operands[1]))
    return lambda fields: _apply(value(fields), lambda v: pattern.fullmatch(v) is not None)


def _match(operands: list[Operand]) -> Condition:
    value, pattern = operands[0], pcre(_constant("match", operands[1]), "where: match()")
    return lambda fields: _apply(value(fields), lambda v: pattern.search(v) is not None)


def _in(operands: list[Operand]) -> Condition:
    value, *choices = operands
    return lambda fields: _apply(value(fields), lambda v: v in {c(fields) for c in choices})


def _apply(value: str | None, test: Callable[[str], bool]) -> bool | None:
    return None if value is None else test(value)


def _one(function: Callable[[str], str]) -> Callable[[list[Operand]], Operand]:
    def build(operands: list[Operand]) -> Operand:
        (operand,) = operands
        return lambda fields: _map(operand(fields), function)

    return build


def _map(value: str | None, function: Callable[[str], str]) -> str | None:
    return None if value is None else function(value)


# name -> (arity (None: at least two), builder)
CONDITIONS: dict[str, tuple[int | None, Callable[[list[Operand]], Condition]]] = {
    "like": (2, _like),
    "match": (2, _match),
    "isnull": (1, lambda ops: lambda fields: ops[0](fields) is None),
    "isnotnull": (1, lambda ops: lambda fields: ops[0](fields) is not None),
    "in": (None, _in),
}
VALUES: dict[str, tuple[int | None, Callable[[list[Operand]], Operand]]] = {
    "lower": (1, _one(str.lower)),
    "upper": (1, _one(str.upper)),
    "len": (1, _one(lambda value: str(len(value)))),
}


def condition_call(name: str, operands: list[Operand]) -> Condition:
    """Return the condition function ``name`` applied to ``operands``."""
    return _lookup(CONDITIONS, "condition", name, operands)(operands)


def value_call(name: str, operands: list[Operand]) -> Operand:
    """Return the value function ``name`` applied to ``operands``."""
    return _lookup(VALUES, "value", name, operands)(operands)


def _lookup(
    registry: Mapping[str, tuple[int | None, Callable[[list[Operand]], T]]],
    kind: str,
    name: str,
    operands: list[Operand],
) -> Callable[[list[Operand]], T]:
    found = registry.get(name.lower())
    if found is None:
        raise RuleError(f"where: unsupported {kind} function {name}()")
    arity, build = found
    if (arity is None and len(operands) < 2) or (arity is not None and len(operands) != arity):
        wanted = "at least 2" if arity is None else str(arity)
        raise RuleError(f"where: {name}() takes {wanted} argument(s), got {len(operands)}")
    return build
