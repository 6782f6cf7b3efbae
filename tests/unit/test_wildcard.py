"""The linear-time wildcard matcher agrees with a regular-expression reference."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pipeline.wildcard import BREAKERS, Wildcard

ALPHABET = st.sampled_from("abAB*\\ .-/:")


def reference(pattern: str, value: str) -> bool:
    """Return what SPL means by pattern=value, via a (backtracking) regular expression."""
    regex = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


@given(st.text(ALPHABET, max_size=12), st.text(ALPHABET, max_size=20))
def test_matches_like_the_reference(pattern: str, value: str) -> None:
    assert Wildcard.compile(pattern).matches(value) == reference(pattern, value)


def test_examples_from_the_rules() -> None:
    assert Wildcard.compile("*\\dismhost.exe*").matches("C:\\Temp\\X\\DismHost.exe {abc}")
    assert Wildcard.compile("WmiPrvSE.exe").matches("wmiprvse.EXE")
    assert not Wildcard.compile("WmiPrvSE.exe").matches("C:\\wmiprvse.exe")
    assert Wildcard.compile("* process *").matches("wmic /node:x process call create")
    assert not Wildcard.compile("* process *").matches("wmic processcall")
    assert Wildcard.compile("*a*a*").matches("aa")
    assert not Wildcard.compile("*a*a*").matches("a")


def test_a_long_adversarial_value_is_fast() -> None:
    value = "a" * 200_000
    assert not Wildcard.compile("*a*a*a*a*a*b*").matches(value)


def token_reference(pattern: str, text: str) -> bool:
    """Splunk's term match written as a regular expression: the term's ends on breakers."""
    breaker = "[" + re.escape("".join(sorted(BREAKERS))) + "]"
    pieces = [re.escape(piece) for piece in pattern.casefold().split("*")]
    left = "" if pattern.startswith("*") else f"(?:^|(?<={breaker}))"
    right = "" if pattern.endswith("*") else f"(?=$|{breaker})"
    return re.search(left + ".*".join(pieces) + right, text.casefold(), re.DOTALL) is not None


TOKEN_TEXT = st.text(alphabet="ab.\\ *", max_size=12)


@given(st.text(alphabet="ab*.", min_size=1, max_size=6), TOKEN_TEXT)
def test_token_matching_agrees_with_a_regular_expression(pattern: str, text: str) -> None:
    assert Wildcard.compile(pattern).occurs_as_token(text.casefold()) == token_reference(
        pattern, text
    )
