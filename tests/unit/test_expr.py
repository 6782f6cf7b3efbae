"""Search expressions: deciding from the known fields agrees with evaluating the whole event."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.event import Event
from pipeline.rules.expr import (
    All,
    Any,
    Differs,
    Expr,
    Keyword,
    Match,
    Not,
    OneOf,
    Ordering,
    Regex,
    any_of,
    by_length,
    pattern_words,
)
from pipeline.wildcard import Wildcard

FIELDS = ("EventCode", "source", "dest")
VALUES = ("1", "4104", "sysmon", "SysMon", "ws1", "10", "xsysmon")
PATTERNS = ("1", "41*", "*", "sys*", "ws?", "4104", "*04", "*SYS*", "4*4", "*mon", "WS1")

LEAVES = st.one_of(
    st.builds(Match, st.sampled_from(FIELDS), st.sampled_from(PATTERNS).map(Wildcard.compile)),
    st.builds(Differs, st.sampled_from(FIELDS), st.sampled_from(PATTERNS).map(Wildcard.compile)),
    st.builds(
        Ordering,
        st.sampled_from(FIELDS),
        st.sampled_from(["<", "<=", ">", ">="]),
        st.sampled_from(VALUES),
    ),
    st.builds(Keyword, st.sampled_from(["ws1", "sys*"]).map(Wildcard.compile)),
    st.builds(Regex, st.sampled_from(FIELDS), st.just(re.compile("^4")), st.booleans()),
)
EXPRESSIONS = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.builds(Not, children),
        st.lists(children, max_size=3).map(lambda operands: All(tuple(operands))),
        st.lists(children, max_size=3).map(lambda operands: Any(tuple(operands))),
        st.lists(children, min_size=1, max_size=4).map(any_of),
    ),
    max_leaves=8,
)
EVENTS = st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(VALUES))


@given(EXPRESSIONS, EVENTS, st.sets(st.sampled_from(FIELDS)))
def test_a_decision_from_some_fields_is_what_the_whole_event_gives(
    expression: Expr, fields: dict[str, str], known_names: set[str]
) -> None:
    """Routing decides with only some fields known; where it decides, it must be right."""
    event = Event(fields, 0.0, " ".join(fields.values()))
    known = {name: value for name, value in fields.items() if name in known_names}
    truth = expression.decide(known)
    if truth is not None:
        assert truth == expression.evaluate(event)


@settings(max_examples=1000)
@given(EXPRESSIONS, EVENTS, st.booleans())
def test_an_event_an_expression_matches_holds_a_word_of_each_clause(
    expression: Expr, fields: dict[str, str], rarest_first: bool
) -> None:
    """The screen skips an event lacking every word of one clause: never one that matches."""
    event = Event(fields, 0.0, " ".join(fields.values()))
    rank = by_length if rarest_first else (lambda clause: tuple(sorted(clause)))
    if expression.evaluate(event):
        raw = event.raw.lower()
        for clause in expression.necessary(lambda name: True, rank):
            assert any(word in raw for word in clause), clause


MATCHES = st.builds(Match, st.sampled_from(FIELDS), st.sampled_from(PATTERNS).map(Wildcard.compile))


@given(st.lists(st.one_of(MATCHES, EXPRESSIONS), min_size=1, max_size=8), EVENTS)
def test_a_disjunction_with_its_matches_gathered_is_the_disjunction(
    operands: list[Expr], fields: dict[str, str]
) -> None:
    """``any_of`` gathers the matches of a field into a ``OneOf``: same truth, same decisions,
    same words for the screen."""
    event = Event(fields, 0.0, " ".join(fields.values()))
    plain, gathered = Any(tuple(operands)), any_of(operands)
    assert gathered.evaluate(event) == plain.evaluate(event)
    assert gathered.decide(fields) == plain.decide(fields)
    assert gathered.necessary(not_dest, by_length) == plain.necessary(not_dest, by_length)


def not_dest(name: str) -> bool:
    """Say every field but ``dest`` is copied from the raw text."""
    return name != "dest"


def test_the_values_of_a_field_several_matches_test_become_one_test() -> None:
    patterns = ["cmd.exe", "*\\wmic.exe", "power*", "*shell*"]
    gathered = any_of(
        [Match("process", Wildcard.compile(p)) for p in patterns]
        + [Match("dest", Wildcard.compile("ws1"))]
    )
    assert isinstance(gathered, Any)
    one_of, dest = gathered.operands
    assert one_of == OneOf(
        "process",
        frozenset({"cmd.exe"}),
        ("\\wmic.exe",),
        ("power",),
        (Wildcard.compile("*shell*"),),
    )
    assert dest == Match("dest", Wildcard.compile("ws1"))
    assert one_of.evaluate(Event({"process": "C:\\X\\WMIC.EXE"}, 0.0, ""))
    assert not one_of.evaluate(Event({"process": "wmic.exe"}, 0.0, ""))


@pytest.mark.parametrize(
    ("expression", "known", "truth"),
    [
        (Differs("EventCode", Wildcard.compile("1")), {"EventCode": "4104"}, True),
        (Differs("EventCode", Wildcard.compile("1")), {"EventCode": "1"}, False),
        (Differs("EventCode", Wildcard.compile("1")), {}, None),
        (Ordering("EventCode", ">", "100"), {"EventCode": "4104"}, True),
        (Ordering("EventCode", ">", "100"), {"EventCode": "99"}, False),
        (Ordering("EventCode", ">", "100"), {}, None),
        (Not(Match("source", Wildcard.compile("sysmon"))), {"source": "sysmon"}, False),
        (Not(Match("source", Wildcard.compile("sysmon"))), {"source": "wmi"}, True),
        (Not(Match("source", Wildcard.compile("sysmon"))), {}, None),
        (All((Match("source", Wildcard.compile("a")), Keyword(Wildcard.compile("x")))), {}, None),
        (All((Match("source", Wildcard.compile("a")),)), {"source": "a"}, True),
        (
            All((Match("source", Wildcard.compile("a")), Keyword(Wildcard.compile("x")))),
            {"source": "b"},
            False,
        ),
        (
            Any((Match("source", Wildcard.compile("a")), Keyword(Wildcard.compile("x")))),
            {"source": "a"},
            True,
        ),
        (
            Any((Match("source", Wildcard.compile("a")), Keyword(Wildcard.compile("x")))),
            {"source": "b"},
            None,
        ),
        (
            Any((Match("source", Wildcard.compile("a")), Match("dest", Wildcard.compile("d")))),
            {"source": "b", "dest": "e"},
            False,
        ),
        (Regex("EventCode", re.compile("^4")), {"EventCode": "4104"}, None),
    ],
)
def test_decisions(expression: Expr, known: dict[str, str], truth: bool | None) -> None:
    assert expression.decide(known) is truth


def test_a_regex_on_raw_searches_the_event_text() -> None:
    event = Event({"CommandLine": "wmic"}, 0.0, "<Event>wmic /node:x</Event>")
    assert Regex("_raw", re.compile("/node:")).evaluate(event)
    assert not Regex("CommandLine", re.compile("/node:")).evaluate(event)
    assert Regex("Missing", re.compile("x"), negate=True).evaluate(event)


def test_every_word_of_a_pattern_is_a_clause_of_the_screen() -> None:
    words = pattern_words(Wildcard.compile("*\\wbem\\wmic.exe*"))
    assert words == {frozenset({"wbem"}), frozenset({"wmic.exe"})}
    assert pattern_words(Wildcard.compile("*a*")) == frozenset()
