"""The linear-time wildcard matcher agrees with a regular-expression reference."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
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


# Letters whose case folding is not str.lower(): sharp s folds to "ss", the long s and the
# final sigma to s and sigma, the Kelvin sign to k, the fi ligature to "fi".
FOLDING = "\u00df\u017f\u03a3\u03c3\u03c2\u212a\ufb01\u00c9\u00e9"
UNICODE_PIECES = st.text(st.sampled_from("abAB\\ .-SsKkFi" + FOLDING), max_size=4)


def folded_reference(pattern: str, value: str) -> bool:
    """Return whether ``value`` matches ``pattern`` under full Unicode case folding."""
    regex = ".*".join(re.escape(piece) for piece in pattern.casefold().split("*"))
    return re.fullmatch(regex, value.casefold(), re.DOTALL) is not None


@given(st.data())
def test_values_built_from_the_pattern_match_and_their_perturbations_agree(
    data: st.DataObject,
) -> None:
    pieces = data.draw(st.lists(UNICODE_PIECES, min_size=1, max_size=5))
    pattern = "*".join(pieces)
    fillers = [data.draw(UNICODE_PIECES) for _ in pieces[1:]]
    value = pieces[0].swapcase() + "".join(
        f + p.upper() for f, p in zip(fillers, pieces[1:], strict=True)
    )
    wildcard = Wildcard.compile(pattern)
    assert wildcard.matches(value)
    at = data.draw(st.integers(0, len(value)))
    inserted = data.draw(st.sampled_from("aBß*"))
    for perturbed in (value[:at] + value[at + 1 :], value[:at] + inserted + value[at:]):
        assert wildcard.matches(perturbed) == folded_reference(pattern, perturbed), perturbed


def test_repeated_pieces_cannot_share_characters() -> None:
    assert not Wildcard.compile("a*a*a").matches("aa")
    assert not Wildcard.compile("ab*ba*ab").matches("abab")
    assert Wildcard.compile("ab*ba*ab").matches("abbaab")
    assert not Wildcard.compile("*aa*aa*").matches("aaa")


def test_case_folds_beyond_lower_case() -> None:
    assert Wildcard.compile("*STRASSE*").matches("Hauptstraße 1")
    assert Wildcard.compile("straße").matches("STRASSE")
    assert Wildcard.compile("*ﬁle*").matches("PROFILE.PS1")
    assert not Wildcard.compile("ﬁle").occurs_as_token("a\\profile\\x".casefold())
    assert Wildcard.compile("ﬁle").occurs_as_token("c:\\FILE\\x".casefold())


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


# Texts made of short words and breakers, so that a piece often occurs inside a word before it
# occurs as a whole token.
WORDY_TEXT = st.lists(st.sampled_from(["a", "ab", "ba", "b", "aab", " ", ".", "\\"])).map("".join)


@settings(max_examples=500)
@given(st.text(alphabet="ab*", min_size=1, max_size=5), WORDY_TEXT)
def test_token_matching_agrees_on_texts_of_words(pattern: str, text: str) -> None:
    assert Wildcard.compile(pattern).occurs_as_token(text) == token_reference(pattern, text)


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("a", "ba a", True),  # the first occurrence is inside a word, the second a token
        ("ab*", "cab ab", True),
        ("*ab", "abc ab", True),
        ("*ab", "ab abc", True),  # the first occurrence ends a token, the last does not
        ("*ab", "ab", True),  # at the very start
        ("ab*", "xyz", False),
        ("*ab", "xyz", False),
        ("ab", "xyz", False),
        ("a*b", "a.b", True),
        ("a*b", "ab.", True),
        ("a*b", "abc", False),
    ],
)
def test_token_matching_examples(pattern: str, text: str, expected: bool) -> None:
    assert Wildcard.compile(pattern).occurs_as_token(text) is expected


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("c*b*", "xb c", False),  # a middle piece is looked for after the head only
        ("c*b*a*", "a c b", False),  # ... and after the previous middle piece
        ("c*ab*b*", "c ab", False),
        ("c*b", "b c", False),  # the tail too
        ("*ab", "abx ab abx", True),  # the first occurrence at a token end counts
        ("..", "a...", True),  # an occurrence overlapping the one before it
        ("..*", "a...", True),
    ],
)
def test_token_matching_keeps_the_pieces_in_order(pattern: str, text: str, expected: bool) -> None:
    assert Wildcard.compile(pattern).occurs_as_token(text) is expected
    assert token_reference(pattern, text) is expected
