"""Eval expressions: three-valued logic, comparisons and arithmetic."""

from __future__ import annotations

import itertools

import pytest

from pipeline.rules.evaluation import (
    Condition,
    arithmetic,
    comparison,
    conjunction,
    disjunction,
    field,
    literal,
    negation,
    negative,
    number_text,
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
    absent = field("user")
    assert comparison(absent, "=", literal("x"))({}) is None
    assert comparison(literal("x"), "=", absent)({}) is None
    assert comparison(absent, "=", literal("x"))({"user": "x"}) is True


@pytest.mark.parametrize(
    ("left", "op", "right", "value"),
    [
        ("2", "+", "3", "5"),
        ("2.5", "*", "2", "5"),
        ("7", "/", "2", "3.5"),
        ("7", "%", "4", "3"),
        ("1", "-", "3", "-2"),
        ("a", "+", "b", "ab"),  # + joins two texts
        ("a", "+", "1", None),  # and is null for a text and a number
        ("a", ".", "1", "a1"),  # . always joins
        ("1", ".", "2", "12"),
        ("1", "/", "0", None),
        ("x", "*", "2", None),
    ],
)
def test_arithmetic(left: str, op: str, right: str, value: str | None) -> None:
    assert arithmetic(literal(left), op, literal(right))({}) == value


def test_arithmetic_with_null_is_null() -> None:
    assert arithmetic(field("absent"), ".", literal("x"))({}) is None
    assert arithmetic(literal("1"), "+", field("absent"))({}) is None
    assert negative(literal("4"))({}) == "-4" and negative(literal("a"))({}) is None


def test_numbers_render_as_eval_does() -> None:
    assert [number_text(n) for n in (3.0, -0.5, 1e20, 2.25)] == ["3", "-0.5", "1e+20", "2.25"]
