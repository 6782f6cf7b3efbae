"""Eval functions: each against values worked out from Splunk's eval documentation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from pipeline.rules.errors import RuleError
from pipeline.rules.evaluation import Condition, Operand, comparison, field, literal
from pipeline.rules.functions import condition_call, like_test, value_call


@dataclass(frozen=True)
class Given:
    """An argument: a field (``"@name"``), a quoted string, or a condition."""

    written: str | Condition

    def value(self) -> Operand:
        if callable(self.written):
            raise RuleError("a condition cannot be a value")
        if self.written.startswith("@"):
            return field(self.written[1:])
        return literal(self.written)

    def condition(self) -> Condition:
        assert callable(self.written)
        return self.written

    def constant(self) -> str | None:
        written = self.written
        return None if callable(written) or written.startswith("@") else written


def value(name: str, *args: str | Condition, **fields: str) -> str | None:
    """Return ``name(args)`` on a row of ``fields``."""
    return value_call(name, [Given(a) for a in args])(fields)


def holds(name: str, *args: str | Condition, **fields: str) -> bool | None:
    """Return the condition ``name(args)`` on a row of ``fields``."""
    return condition_call(name, [Given(a) for a in args])(fields)


def equals(name: str, text: str) -> Condition:
    return comparison(field(name), "=", literal(text))


def test_if_and_case_take_the_first_true_branch() -> None:
    assert value("if", equals("a", "x"), "yes", "no", a="x") == "yes"
    assert value("if", equals("a", "x"), "yes", "no", a="y") == "no"
    assert value("if", equals("a", "x"), "yes", "no") == "no"  # null is not true
    cases = (equals("a", "1"), "one", equals("a", "2"), "two")
    assert value("case", *cases, a="2") == "two"
    assert value("case", *cases, a="3") is None  # no branch true: null
    assert value("case", equals("a", "1"), "one", holds_true(), "other", a="9") == "other"


def holds_true() -> Condition:
    return condition_call("true", [])


def test_coalesce_and_null() -> None:
    assert value("coalesce", "@a", "@b", "none", b="B") == "B"
    assert value("coalesce", "@a", "@b") is None
    assert value("null") is None


@pytest.mark.parametrize(
    ("args", "result"),
    [
        (("abcdef", "2", "3"), "bcd"),  # 1-based
        (("abcdef", "-4"), "cdef"),  # from the end
        (("taskhost.exe", "-4"), ".exe"),
        (("abc", "1"), "abc"),
        (("abc", "5"), ""),
        (("abc", "-5", "3"), "a"),  # SQLite: a start before the text shortens the length
        (("abc", "x"), None),
    ],
)
def test_substr_follows_sqlite(args: tuple[str, ...], result: str | None) -> None:
    assert value("substr", *args) == result


def test_replace_with_groups() -> None:
    path = r"C:\Windows\System32\cmd.exe"
    assert value("replace", "@p", r"(.*\\)", "", p=path) == "cmd.exe"
    assert value("replace", "@p", r"(\w+)@(\w+)", r"\2/\1", p="bob@corp") == "corp/bob"
    with pytest.raises(RuleError, match="names a group the expression lacks"):
        value("replace", "@p", "a", r"\1")
    with pytest.raises(RuleError, match="needs a quoted string"):
        value("replace", "@p", "@q", "x")


def test_multivalues_are_lines() -> None:
    parts = value("split", "@p", "\\", p=r"E:\dir\a.exe")
    assert parts == "E:\ndir\na.exe"
    assert value("mvcount", "@m", m=parts) == "3"
    assert value("mvindex", "@m", "0", m=parts) == "E:"
    assert value("mvindex", "@m", "-1", m=parts) == "a.exe"
    assert value("mvindex", "@m", "0", "1", m=parts) == "E:\ndir"
    assert value("mvindex", "@m", "3", m=parts) is None
    assert value("mvjoin", "@m", "|", m=parts) == "E:|dir|a.exe"
    assert value("split", "@p", "", p="ab") == "a\nb"
    assert value("mvcount", "@m") is None


def test_text_and_number_functions() -> None:
    assert value("lower", "@a", a="WMIC") == "wmic" and value("upper", "@a") is None
    assert value("len", "@a", a="wmic.exe") == "8"
    assert value("trim", "@a", a="  x ") == "x" and value("ltrim", "@a", "\\", a="\\\\h") == "h"
    assert value("rtrim", "@a", a="x  ") == "x"
    assert value("tonumber", "@a", a="0012") == "12" and value("tonumber", "@a", a="x") is None
    assert value("tostring", "@a", a="7") == "7"
    assert value("abs", "@a", a="-3") == "3"
    assert value("round", "@a", a="2.5") == "3" and value("round", "@a", "2", a="1.005") == "1"
    assert value("round", "@a", "1", a="-1.25") == "-1.3"
    assert value("urldecode", "@a", a="a%20b") == "a b"


def test_conditions() -> None:
    assert holds("like", "@p", "%\\wmic.exe%", p="C:\\w\\wmic.exe /node:x") is True
    assert holds("like", "@p", "wmic_exe", p="wmic.exe") is True  # _ is one character
    assert holds("like", "@p", "wmic_exe", p="wmic.exe.bak") is False
    assert holds("like", "@p", "a%b", p="a\nb") is True  # % spans lines
    assert holds("like", "@p", "%ab%ba", p="aba") is False  # pieces may not overlap
    assert holds("like", "@p", "@q") is None
    assert holds("like", "@p", "@q", p="x parent y", q="%parent%") is True  # built pattern
    assert holds("match", "@p", "^w", p="wmic") is True and holds("match", "@p", "^w") is None
    assert holds("in", "@p", "a", "@o", p="b", o="b") is True
    assert holds("in", "@p", "a", p="c") is False and holds("in", "@p", "a") is None
    assert holds("isnull", "@p") is True and holds("isnotnull", "@p", p="") is True
    assert holds("true") is True and holds("false") is False


@pytest.mark.parametrize("pattern", ["", "%", "a", "%a", "a%", "a%b", "_%_", "%a%b%", "a_%_b"])
@pytest.mark.parametrize("text", ["", "a", "ab", "ba", "aab", "a_b", "axyb", "bab"])
def test_like_agrees_with_a_regular_expression(pattern: str, text: str) -> None:
    import re

    reference = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    assert like_test(pattern)(text) == (re.fullmatch(reference, text, re.DOTALL) is not None)


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda: value("trim"), "trim() takes 1 to 2 argument(s), got 0"),
        (lambda: value("if", "a", "b"), "if() takes 3 argument(s), got 2"),
        (lambda: holds("in", "a"), "in() takes 2 or more argument(s), got 1"),
        (
            lambda: value("case", holds_true(), "a", "b"),
            "case() takes pairs of a condition and a value",
        ),
        (lambda: value("cidrmatch", "a", "b"), "unsupported function cidrmatch()"),
        (lambda: holds("lower", "a"), "lower() gives a value, not a condition"),
        (lambda: value("isnull", "a"), "isnull() gives a condition: fields cannot be assigned"),
        (lambda: holds("match", "@p", "("), "match(): bad regular expression"),
    ],
)
def test_refusals_name_the_function(call: object, problem: str) -> None:
    with pytest.raises(RuleError) as caught:
        call()  # type: ignore[operator]
    assert str(caught.value).startswith(problem)


def test_a_row_is_read_not_changed() -> None:
    row: Mapping[str, str] = {"p": "x"}
    value("upper", "@p", **row)
    assert row == {"p": "x"}
