"""Per-row steps: rename with wildcards, rex, fillnull, convert."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pipeline.rules.expr import Keyword
from pipeline.rules.steps import (
    MAX_RENAME_PLANS,
    Convert,
    Fillnull,
    Filter,
    Rename,
    Rex,
    run_steps,
)
from pipeline.wildcard import Wildcard


def test_rename_carries_the_wildcard_part_over_once() -> None:
    row = {"Processes.dest": "h", "Processes.user": "u", "Filesystem.file_name": "f", "x": "1"}
    assert Rename((("Processes.*", "*"), ("x", "y"), ("absent", "z"))).apply(row)
    assert row == {"dest": "h", "user": "u", "Filesystem.file_name": "f", "y": "1"}


def test_rename_with_a_suffix_and_a_target_pattern() -> None:
    row = {"a.count.total": "3", "b.count.total": "4", "c.count": "5"}
    Rename((("*.count.total", "total_*_*"),)).apply(row)
    assert row == {"total_a_*": "3", "total_b_*": "4", "c.count": "5"}
    row = {"x*y_z": "1"}
    Rename((("x*_z", "w*"),)).apply(row)  # only the first '*' of the source splits
    assert row == {"w*y": "1"}


NAMES = st.sampled_from(["a", "b", "a.b", "b.a", "P.a", "P.b", "P.P", "*", "x*", "*.b", "P.*"])


@given(
    st.lists(st.tuples(NAMES, NAMES), max_size=4).map(tuple),
    st.lists(st.tuples(NAMES, st.text(max_size=3)), max_size=8),
    st.text(max_size=3),
)
def test_a_rename_worked_out_once_per_set_of_names_renames_as_the_command_does(
    pairs: tuple[tuple[str, str], ...], items: list[tuple[str, str]], other: str
) -> None:
    """The plan worked out on a row's names, applied to rows with those names, gives what
    the pairs applied to each row directly give (their meaning: the tests above)."""
    rename = Rename(pairs)
    for values in (dict(items), {name: other + value for name, value in items}):
        row, expected = dict(values), Rename(pairs)._renamed(dict(values))
        assert rename.apply(row)
        assert list(row.items()) == list(expected.items())  # values and order


def test_a_rename_keeps_a_bounded_number_of_plans() -> None:
    rename = Rename((("P.*", "*"),))
    for n in range(MAX_RENAME_PLANS + 10):
        rename.apply({f"P.f{n}": "v"})
    assert 0 < len(rename.plans) <= MAX_RENAME_PLANS


def test_rex_adds_the_named_groups_of_the_first_match_and_keeps_the_row() -> None:
    rex = Rex("CommandLine", re.compile(r"/node:(?P<target>\S+)(?P<none>X)?"))
    row = {"CommandLine": "wmic /node:a /node:b"}
    assert rex.apply(row) and row["target"] == "a" and "none" not in row
    empty: dict[str, str] = {}
    assert rex.apply(empty) and empty == {}  # no field: no match, the row goes on
    blank = Rex("CommandLine", re.compile(r"^(?P<all>.*)$"))
    row = {}
    blank.apply(row)
    assert row == {"all": ""}  # an absent field is searched as empty text


def test_fillnull_and_convert() -> None:
    row = {"a": "1", "t": "1709640000"}
    steps = (Fillnull("0", ("a", "b")), Convert("t", "when", "%Y-%m-%dT%H:%M:%S"))
    assert run_steps(steps, row)
    assert row == {"a": "1", "b": "0", "t": "1709640000", "when": "2024-03-05T12:00:00"}
    Convert("a", "a", "%Y").apply(row := {"a": "not a time"})
    assert row == {"a": "not a time"}


def test_a_filter_s_bare_words_search_raw_text_else_each_value_apart() -> None:
    term = Filter(Keyword(Wildcard.compile("foo")))
    assert term.apply({"_raw": "x foo y", "a": "nothing"})
    assert not term.apply({"_raw": "nothing", "a": "foo"})  # the raw text, when there is one
    assert term.apply({"a": "bar", "b": "foo"})  # after stats: the values, one per line
    assert not Filter(Keyword(Wildcard.compile("bar foo"))).apply({"a": "bar", "b": "foo"})
