"""Rule errors carry their location."""

from __future__ import annotations

from pipeline.rules.errors import RuleError, RuleErrors, describe


def test_rule_errors_name_their_file_and_stage() -> None:
    error = RuleError("bad field", stage="search")
    assert str(error) == "search: bad field" and error.args == ("search: bad field",)
    located = error.at(path="rules/x.yml", stage="ignored")
    assert str(located) == "rules/x.yml: search: bad field"
    assert str(RuleError("plain")) == "plain"
    both = RuleErrors([located, RuleError("other", path="rules/y.yml")])
    assert str(both) == (
        "2 problem(s) in the rules:\n  - rules/x.yml: search: bad field\n  - rules/y.yml: other"
    )


def test_locating_an_unlocated_error_adds_only_what_is_given() -> None:
    assert str(RuleError("m").at(path="rules/x.yml")) == "rules/x.yml: m"
    assert str(RuleError("m").at(stage="macros")) == "macros: m"


def test_an_error_without_a_message_is_described_by_its_type() -> None:
    assert describe(ValueError()) == "ValueError"
    assert describe(ValueError("first line\nsecond")) == "first line"
    assert describe(ValueError("\n  Unexpected token\nat line 2")) == "Unexpected token"
