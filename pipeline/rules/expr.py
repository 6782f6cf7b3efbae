"""Boolean search expressions: evaluation on events and partial evaluation for routing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any as Any_
from typing import Protocol

from pipeline.event import Event
from pipeline.rules.patterns import Pattern
from pipeline.wildcard import Wildcard

Truth = bool | None  # None: cannot be decided from the fields known at routing time
# Word clauses: one word of each clause occurs in the raw text of every match (none: unknown).
Clauses = frozenset[frozenset[str]]
NO_CLAUSES: Clauses = frozenset()
RawSafe = Callable[[str], bool]  # whether a field's value is always a substring of the raw text
Rank = Callable[[frozenset[str]], tuple[Any_, ...]]  # a clause's place: the most selective first
Reads = frozenset[str] | None  # the fields an expression or a step reads; None: any field, or text
# Characters XML and JSON write as they are (not & < > quotes, backslash, slash, non-ASCII).
WORD = re.compile(r"[a-z0-9_.\-\[\]{}()$%@!#:;,=+~^|?]{3,}")


class Expr(Protocol):
    """A compiled predicate over an event."""

    def evaluate(self, event: Event) -> bool:
        """Return whether the event satisfies the expression."""
        ...

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Decide from a few known fields (source, EventCode, datamodel), or return None."""
        ...

    def necessary(self, raw_safe: RawSafe, rank: Rank) -> Clauses:
        """Return the word clauses every matching event's raw text satisfies."""
        ...

    def fields(self) -> Reads:
        """Return the fields the expression reads (None: the raw text, or any field)."""
        ...


def pattern_words(pattern: Wildcard) -> Clauses:
    """Return a clause for each word (``WORD``: ASCII written as it is in XML and JSON) of the
    pattern's pieces: a value the pattern matches holds them all."""
    return frozenset(frozenset((w,)) for piece in pattern.pieces for w in WORD.findall(piece))


def by_length(clause: frozenset[str]) -> tuple[int, list[str]]:
    """Rank a clause by its shortest word, longest first (a longer word is rarer, as a guess)."""
    return -min(map(len, clause)), sorted(clause)


def _no_clauses(self: object, raw_safe: RawSafe, rank: Rank) -> Clauses:
    """Return no clause: a negation or comparison promises no word in the raw text."""
    return NO_CLAUSES


class _OneField(Protocol):
    field: str


def _own_field(self: _OneField) -> Reads:
    """Return the one field a comparison reads."""
    return frozenset((self.field,))


def union(reads: Iterable[Reads]) -> Reads:
    """Return the fields read by all of ``reads`` (None if one reads any field)."""
    found: set[str] = set()
    for fields in reads:
        if fields is None:
            return None
        found |= fields
    return frozenset(found)


def number_or_none(text: str | None) -> float | None:
    """Return ``text`` as a number, or None when absent or not numeric."""
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


_ORDERINGS: dict[str, Callable[[Any_, Any_], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True, slots=True)
class Match:
    """``field=pattern`` (search semantics: wildcards, case-insensitive; absent field is false)."""

    field: str
    pattern: Wildcard

    def evaluate(self, event: Event) -> bool:
        """Return whether the field is present and matches."""
        value = event.folded(self.field)
        return value is not None and self.pattern.matches_folded(value)

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Decide when the field is known."""
        value = known.get(self.field)
        return None if value is None else self.pattern.matches(value)

    def necessary(self, raw_safe: RawSafe, rank: Rank) -> Clauses:
        """Return the pattern's words when the field's value is copied from the raw text."""
        return pattern_words(self.pattern) if raw_safe(self.field) else NO_CLAUSES

    fields = _own_field


@dataclass(frozen=True, slots=True)
class Differs:
    """``field!=pattern``: the field is present and does not match."""

    field: str
    pattern: Wildcard

    def evaluate(self, event: Event) -> bool:
        """Return whether the field is present and does not match."""
        value = event.folded(self.field)
        return value is not None and not self.pattern.matches_folded(value)

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Decide when the field is known."""
        value = known.get(self.field)
        return None if value is None else not self.pattern.matches(value)

    necessary = _no_clauses
    fields = _own_field


@dataclass(frozen=True, slots=True)
class Ordering:
    """``field<value`` and friends: numeric when both sides are numbers, else as text."""

    field: str
    op: str
    value: str

    def holds(self, value: str | None) -> bool:
        """Return whether the field is present and the comparison holds."""
        if value is None:
            return False
        mine, theirs = number_or_none(value), number_or_none(self.value)
        if mine is not None and theirs is not None:
            return _ORDERINGS[self.op](mine, theirs)
        return _ORDERINGS[self.op](value, self.value)

    def evaluate(self, event: Event) -> bool:
        """Compare the event's field."""
        return self.holds(event.fields.get(self.field))

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Decide when the field is known."""
        return None if self.field not in known else self.holds(known[self.field])

    necessary = _no_clauses
    fields = _own_field


@dataclass(frozen=True, slots=True)
class Keyword:
    """A bare search term: it matches whole tokens of the raw event text (case-insensitive)."""

    pattern: Wildcard

    def evaluate(self, event: Event) -> bool:
        """Return whether the term matches a run of tokens of the raw text."""
        return self.pattern.occurs_as_token(event.folded_raw())

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Keywords cannot be decided before the event is read."""
        return None

    def necessary(self, raw_safe: RawSafe, rank: Rank) -> Clauses:
        """Return the term's words."""
        return pattern_words(self.pattern)

    def fields(self) -> Reads:
        """Return None: a term reads the raw text."""
        return None


@dataclass(frozen=True, slots=True)
class Regex:
    """``regex field="re"``: the field is present and the expression occurs in it (``!=``: the
    field is absent or it does not occur); ``_raw`` is the event's text."""

    field: str
    pattern: Pattern
    negate: bool = False

    def evaluate(self, event: Event) -> bool:
        """Search the field's value."""
        value = event.raw if self.field == "_raw" else event.fields.get(self.field)
        found = value is not None and self.pattern.search(value) is not None
        return found != self.negate

    def decide(self, known: Mapping[str, str]) -> Truth:
        """A regex is not decided before the event is read."""
        return None

    necessary = _no_clauses

    def fields(self) -> Reads:
        """Return the field searched (None: the raw text)."""
        return None if self.field == "_raw" else frozenset((self.field,))


@dataclass(frozen=True, slots=True)
class Not:
    """Logical negation."""

    operand: Expr

    def evaluate(self, event: Event) -> bool:
        """Negate the operand."""
        return not self.operand.evaluate(event)

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Negate when decided."""
        truth = self.operand.decide(known)
        return None if truth is None else not truth

    necessary = _no_clauses

    def fields(self) -> Reads:
        """Return the operand's fields."""
        return self.operand.fields()


@dataclass(frozen=True, slots=True)
class All:
    """Logical AND (SPL's implicit AND between terms)."""

    operands: tuple[Expr, ...]

    def evaluate(self, event: Event) -> bool:
        """Return True when every operand holds (short-circuit)."""
        for operand in self.operands:  # noqa: SIM110 (a generator costs more than an operand)
            if not operand.evaluate(event):
                return False
        return True

    def decide(self, known: Mapping[str, str]) -> Truth:
        """False when any operand is false, True when all are true, else undecided."""
        truths = [operand.decide(known) for operand in self.operands]
        if False in truths:
            return False
        return True if all(truths) else None

    def necessary(self, raw_safe: RawSafe, rank: Rank) -> Clauses:
        """Return the operands' clauses: a match satisfies them all."""
        return frozenset().union(*(operand.necessary(raw_safe, rank) for operand in self.operands))

    def fields(self) -> Reads:
        """Return the operands' fields."""
        return union(operand.fields() for operand in self.operands)


@dataclass(frozen=True, slots=True)
class Any:
    """Logical OR."""

    operands: tuple[Expr, ...]

    def evaluate(self, event: Event) -> bool:
        """Return True when some operand holds (short-circuit)."""
        for operand in self.operands:  # noqa: SIM110 (a generator costs more than an operand)
            if operand.evaluate(event):
                return True
        return False

    def decide(self, known: Mapping[str, str]) -> Truth:
        """True when any operand is true, False when all are false, else undecided."""
        truths = [operand.decide(known) for operand in self.operands]
        if True in truths:
            return True
        return False if all(truth is False for truth in truths) else None

    def necessary(self, raw_safe: RawSafe, rank: Rank) -> Clauses:
        """Return one clause: each operand's first-ranked clause joined (none when one has none)."""
        found = [operand.necessary(raw_safe, rank) for operand in self.operands]
        if not found or NO_CLAUSES in found:
            return NO_CLAUSES
        return frozenset((frozenset().union(*(min(c, key=rank) for c in found)),))

    def fields(self) -> Reads:
        """Return the operands' fields."""
        return union(operand.fields() for operand in self.operands)


@dataclass(frozen=True, slots=True)
class OneOf:
    """``field=p1 OR field=p2 …``: the field is present and matches one of the patterns. The
    values without ``*`` are one set lookup, the ``*suffix`` and ``prefix*`` ones one call each
    (``IN (…)`` lists of process names are most of the imported rules' terms)."""

    field: str
    values: frozenset[str]
    suffixes: tuple[str, ...]
    prefixes: tuple[str, ...]
    patterns: tuple[Wildcard, ...]  # any other shape

    @classmethod
    def of(cls, field: str, patterns: Iterable[Wildcard]) -> OneOf:
        """Return the test of ``field`` against ``patterns``, sorted by shape."""
        shapes: dict[str, list[Wildcard]] = {"values": [], "suffix": [], "prefix": [], "other": []}
        for pattern in patterns:
            shapes[_shape(pattern)].append(pattern)
        return cls(
            field,
            frozenset(p.pieces[0] for p in shapes["values"]),
            tuple(p.pieces[1] for p in shapes["suffix"]),
            tuple(p.pieces[0] for p in shapes["prefix"]),
            tuple(shapes["other"]),
        )

    def holds(self, folded: str | None) -> bool:
        """Return whether the casefolded value is present and matches one of the patterns."""
        if folded is None:
            return False
        if folded in self.values or folded.endswith(self.suffixes):
            return True
        if folded.startswith(self.prefixes):
            return True
        return any(pattern.matches_folded(folded) for pattern in self.patterns)

    def evaluate(self, event: Event) -> bool:
        """Return whether the field is present and matches one of the patterns."""
        return self.holds(event.folded(self.field))

    def decide(self, known: Mapping[str, str]) -> Truth:
        """Decide when the field is known."""
        value = known.get(self.field)
        return None if value is None else self.holds(value.casefold())

    def necessary(self, raw_safe: RawSafe, rank: Rank) -> Clauses:
        """Return the clauses of the disjunction of ``Match`` terms it stands for."""
        every = [Wildcard((value,)) for value in self.values]
        every += [Wildcard(("", suffix)) for suffix in self.suffixes]
        every += [Wildcard((prefix, "")) for prefix in self.prefixes]
        terms = (Match(self.field, pattern) for pattern in (*every, *self.patterns))
        return Any(tuple(terms)).necessary(raw_safe, rank)

    fields = _own_field


def _shape(pattern: Wildcard) -> str:
    """Return how ``OneOf`` tests the pattern: "values", "suffix", "prefix" or "other"."""
    pieces = pattern.pieces
    if len(pieces) == 1:
        return "values"
    if len(pieces) == 2 and pieces[0] == "" and pieces[1]:
        return "suffix"
    if len(pieces) == 2 and pieces[1] == "" and pieces[0]:
        return "prefix"
    return "other"


def any_of(operands: Iterable[Expr]) -> Expr:
    """Return the disjunction of ``operands``: nested disjunctions flattened, and the matches of
    a field that several test gathered into one ``OneOf``."""
    flat = [o for operand in operands for o in _disjuncts(operand)]
    tested: dict[str, list[Wildcard]] = {}
    for operand in flat:
        if isinstance(operand, Match):
            tested.setdefault(operand.field, []).append(operand.pattern)
    joined: list[Expr] = []
    gathered: set[str] = set()
    for operand in flat:
        if not isinstance(operand, Match) or len(tested[operand.field]) == 1:
            joined.append(operand)
        elif operand.field not in gathered:  # the field's first match stands for all of them
            gathered.add(operand.field)
            joined.append(OneOf.of(operand.field, tested[operand.field]))
    return joined[0] if len(joined) == 1 else Any(tuple(joined))


def _disjuncts(operand: Expr) -> tuple[Expr, ...]:
    """Return a disjunction's operands (an empty one stays: it promises no word)."""
    return operand.operands if isinstance(operand, Any) and operand.operands else (operand,)


ALWAYS = All(())
