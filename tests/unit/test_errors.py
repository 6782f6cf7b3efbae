"""Rule errors carry their location."""

from __future__ import annotations

from pipeline.rules.errors import RuleError, RuleErrors


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
