"""``where`` evaluation: eval's three-valued logic, comparisons and functions."""

from __future__ import annotations

import itertools

import pytest

from pipeline.rules.errors import RuleError
from pipeline.rules.evaluation import (
    Condition,
    Operand,
    comparison,
    condition_call,
    conjunction,
    disjunction,
    field_or_number,
    literal,
    negation,
    value_call,
)

T, F, N = True, False, None
# Kleene's logic, as eval's AND, OR and NOT treat null: written out, not computed.
AND = {(T, T): T, (T, F): F, (T, N): N, (F, T): F, (F, F): F, (F, N): F, (N, T): N,
       (N, F): F, (N, N): N}  # fmt: skip
OR = {(T, T): T, (T, F): T, (T, N): T, (F, T): T, (F, F): F, (F, N): N, (N, T): T,
      (N, F): N, (N, N): N}  # fmt: skip
NOT = {T: F, F: T, N: N}


def constant(truth: bool | None) -> Condition:
    """Return a condition that is always ``truth``."""
    return lambda fields: truth


@pytest.mark.parametrize(("a", "b"), list(itertools.product([T, F, N], repeat=2)))
def test_and_or_follow_three_valued_logic(a: bool | None, b: bool | None) -> None:
    assert conjunction([constant(a), constant(b)])({}) is AND[a, b]
    assert disjunction([constant(a), constant(b)])({}) is OR[a, b]
    assert negation(constant(a))({}) is NOT[a]


@pytest.mark.parametrize(
    ("left", "op", "right", "truth"),
    [
        ("10", ">", "9", True),  # numbers compare as numbers
        ("10", "<", "9", False),
        ("10", ">", "9a", False),  # text when one side is not a number: "10" < "9a"
        ("abc", "=", "abc", True),
        ("abc", "==", "ABC", False),
        ("abc", "!=", "ABC", True),
        ("1.0", "=", "1", True),
        ("2", "<=", "2", True),
        ("2", ">=", "3", False),
    ],
)
def test_comparisons(left: str, op: str, right: str, truth: bool) -> None:
    assert comparison(literal(left), op, literal(right))({}) is truth


def test_a_comparison_with_a_null_side_is_null() -> None:
    absent = field_or_number("user")
    assert comparison(absent, "=", literal("x"))({}) is None
    assert comparison(literal("x"), "=", absent)({}) is None
    assert comparison(absent, "=", literal("x"))({"user": "x"}) is True
    assert field_or_number("42")({"42": "not this"}) == "42"  # a number is a literal


def test_functions_on_their_operands() -> None:
    process = field_or_number("process")
    like = condition_call("like", [process, literal("a%b")])
    assert like({"process": "a\nb"}) is True  # % spans lines
    assert like({"process": "xa b"}) is False and like({}) is None
    match = condition_call("MATCH", [process, literal("^w")])
    assert match({"process": "wmic"}) is True and match({"process": "xw"}) is False
    assert match({}) is None
    choice = condition_call("in", [process, literal("a"), field_or_number("other")])
    assert choice({"process": "b", "other": "b"}) is True
    assert choice({"process": "c", "other": "b"}) is False and choice({}) is None
    assert condition_call("isnull", [process])({}) is True
    assert value_call("len", [process])({"process": "abc"}) == "3"
    assert value_call("upper", [process])({}) is None


X, FIELD = literal("x"), field_or_number("f")
CALLS = {"condition": condition_call, "value": value_call}


@pytest.mark.parametrize(
    ("kind", "name", "operands", "problem"),
    [
        ("condition", "like", [X], "like() takes 2 argument(s), got 1"),
        ("condition", "in", [X], "in() takes at least 2 argument(s), got 1"),
        ("value", "lower", [], "lower() takes 1 argument(s), got 0"),
        ("value", "trim", [X], "unsupported value function trim()"),
        ("condition", "cidrmatch", [X], "unsupported condition function cidrmatch()"),
        ("condition", "match", [X, FIELD], "match() needs a quoted pattern as its second argument"),
    ],
)
def test_refusals_name_the_function(
    kind: str, name: str, operands: list[Operand], problem: str
) -> None:
    with pytest.raises(RuleError) as caught:
        CALLS[kind](name, operands)
    assert str(caught.value) == f"where: {problem}"


def test_in_takes_two_arguments_at_least() -> None:
    assert condition_call("in", [literal("x"), literal("x")])({}) is True
