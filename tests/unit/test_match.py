"""Matching one event against one rule: the group, the kept values, the dest."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pipeline.event import Event
from pipeline.match import match_event
from pipeline.policy import MAX_MATCH_CHARS, MAX_VALUE_CHARS
from pipeline.records import Match, Origin
from pipeline.rejects import Rejected
from pipeline.rules.compiler import Macro, compile_search
from pipeline.rules.model import Rule
from tests.synthetic import WMIC_NODE_RULE


def rule_with(rules: dict[str, Any], search: str) -> Rule:
    """Return a shipped rule with ``search`` compiled in place of its own."""
    plan = compile_search(search, {"sysmon": Macro("source=sysmon")})
    return dataclasses.replace(rules[WMIC_NODE_RULE], plan=plan)


def test_the_dest_is_the_cim_dest_else_the_computer_else_unknown(rules: dict[str, Any]) -> None:
    rule = rule_with(rules, "a=1 | stats count by a")

    def dest(**fields: str) -> str:
        found = match_event(rule, Event({"a": "1", **fields}, 5.0, ""))
        assert found is not None
        return found.dest

    assert (dest(dest="d", Computer="c"), dest(Computer="c"), dest()) == ("d", "c", "unknown")


def test_commands_before_stats_read_the_raw_text(rules: dict[str, Any]) -> None:
    rule = rule_with(rules, 'a=1 | rex "node:(?<target>\\S+)" | stats count by target')
    found = match_event(rule, Event({"a": "1"}, 5.0, "wmic /node:10.0.0.5 os get"))
    assert found is not None and found.group == {"target": "10.0.0.5"}


def test_per_field_aggregations_keep_values_and_count_of_a_field_its_presence(
    rules: dict[str, Any],
) -> None:
    rule = rule_with(rules, "a=1 | stats count(b) dc(c) values(d) by a")
    found = match_event(rule, Event({"a": "1", "b": "x", "c": "y"}, 5.0, ""), Origin("t", 1, 2))
    assert found is not None
    assert found.values == {"dc(c)": "y", "count(b)": ""}  # d is absent; count(b): b is there
    assert (found.time, found.origin, found.ingested_at) == (5.0, Origin("t", 1, 2), 0.0)


def test_an_event_missing_a_by_field_is_dropped_unless_filled(rules: dict[str, Any]) -> None:
    assert (
        match_event(rule_with(rules, "a=1 | stats count by a b"), Event({"a": "1"}, 0, "")) is None
    )
    filled = rule_with(rules, "a=1 | fillnull | stats count by a b")
    found = match_event(filled, Event({"a": "1"}, 0.0, ""))
    assert found is not None and found.group == {"a": "1", "b": "0"}


def test_a_long_value_is_shortened_and_values_that_differ_stay_different(
    rules: dict[str, Any],
) -> None:
    rule = rule_with(rules, "a=1 | stats values(c) as cs by a b")
    long = "x" * (2 * MAX_VALUE_CHARS)

    def found(b: str, c: str) -> Match:
        match = match_event(rule, Event({"a": "1", "b": b, "c": c, "dest": long}, 0.0, ""))
        assert match is not None
        return match

    one, other = found(long, long), found(long + "y", long + "y")
    assert one.group["b"].startswith("x" * MAX_VALUE_CHARS + "…[8192 characters, blake2b ")
    assert len(one.group["b"]) < MAX_VALUE_CHARS + 64
    assert (one.values["cs"], one.dest) == (one.group["b"], one.group["b"])
    assert other.group["b"] != one.group["b"]
    assert found("short", "short").group["b"] == "short"


def test_an_event_whose_match_would_be_too_large_is_rejected(rules: dict[str, Any]) -> None:
    fields = [f"f{n}" for n in range(MAX_MATCH_CHARS // MAX_VALUE_CHARS + 1)]
    rule = rule_with(rules, f"a=1 | stats count by {' '.join(fields)}")
    event = Event({"a": "1", **{name: "v" * MAX_VALUE_CHARS for name in fields}}, 0.0, "")
    with pytest.raises(Rejected, match=f"too_large: its match of rule {WMIC_NODE_RULE}"):
        match_event(rule, event)
    del event.fields["f0"]  # one field fewer: within the bound
    fits = rule_with(rules, f"a=1 | stats count by {' '.join(fields[1:])}")
    assert match_event(fits, event) is not None
