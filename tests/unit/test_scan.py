"""The one-pass scanners find exactly the markers, or the words, that occur."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.scan import Marker, Scanner, WordScanner

WORDS = [b"wmic.exe", b"scrcons"]
SCANNER = Scanner(["\u212a", "\u017f"], [b"event_simpleName"])
WORD_SCANNER = WordScanner(WORDS)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"<Channel>x</Channel>", set()),
        (b"<Channel>x</Channel><Data Name='Channel'/>", {Marker.CHANNELS}),
        (b"<EventID>1</EventID>", set()),
        (b"<EventID>1</EventID><EventID>3</EventID>", {Marker.EVENT_IDS}),
        (b"<?xml version='1.0'?><Event/>", {Marker.INSTRUCTION}),
        (b"<?xml version='1.0'?><Event/><?pi?>", {Marker.INSTRUCTION, Marker.INSTRUCTIONS}),
        (b"<Data>&#87;MIC</Data>", {Marker.CHARACTER_REFERENCE}),
        (b"<!-- c --><Event/>", {Marker.MARKUP}),
        (b'{"a": "\\u0057MIC"}', {Marker.JSON_ESCAPE}),
        ("<Data>\u212aey</Data>".encode(), {Marker.CASEFOLDS_TO_ASCII}),
        ("<Data>\u017f</Data>".encode(), {Marker.CASEFOLDS_TO_ASCII}),
        ("<Data>caf\u00e9</Data>".encode(), set()),  # beyond ASCII, folds to nothing ASCII
        (b"<Data Name='event_simpleName'/>", {Marker.IDENTIFYING_NAME}),
        (b"<Data Name='Event_SimpleName'/>", set()),  # names are case-sensitive
        (b"C:\\Windows\\System32\\wbem\\WMIC.EXE /node:x", set()),  # words are not markers
    ],
)
def test_the_scan_reports_the_markers_that_occur(payload: bytes, expected: set[int]) -> None:
    assert SCANNER.scan(payload) == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"C:\\Windows\\System32\\wbem\\WMIC.EXE /node:x", {0}),  # words are caseless
        (b"ScrCons.exe wmic.exe", {0, 1}),
        (b"wmic", set()),
        (b"<Data>&#87;</Data>", set()),  # markers are not words
    ],
)
def test_the_word_scan_reports_the_words_that_occur(payload: bytes, expected: set[int]) -> None:
    assert WORD_SCANNER.scan(payload) == expected


def test_words_are_numbered_in_order() -> None:
    assert WORD_SCANNER.words == {b"wmic.exe": 0, b"scrcons": 1}


def test_a_scanner_without_casefolds_or_names_still_scans() -> None:
    bare = Scanner([], [])
    assert bare.scan(b"<Data>&#87;</Data>") == {Marker.CHARACTER_REFERENCE}


@given(st.binary(max_size=300), st.sampled_from(WORDS), st.binary(max_size=300))
def test_a_word_is_found_wherever_it_sits(before: bytes, word: bytes, after: bytes) -> None:
    assert WORDS.index(word) in WORD_SCANNER.scan(before + word.upper() + after)


@given(st.binary(max_size=600))
def test_the_word_scan_agrees_with_a_lowercase_search(payload: bytes) -> None:
    found = WORD_SCANNER.scan(payload)
    for number, word in enumerate(WORDS):
        assert (number in found) == (word in payload.lower())
