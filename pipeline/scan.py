"""One pass over a record's bytes: which screen markers, or which rule words, occur (hyperscan).

The screen needs a dozen facts about the bytes (is there a character reference, a second
``<Channel>``, ...) and, once the route is known, which of its rules' words occur. Searching for
each in turn costs a dozen passes over a 2 KB event; a hyperscan database of all of them answers
in one, and calls back only for what occurs (usually nothing). Words have a database per route:
one of every word of 900 rules costs several times as much per scan, and calls back for words
no rule of the route needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import IntEnum

import hyperscan

_ONCE = hyperscan.HS_FLAG_SINGLEMATCH


class Marker(IntEnum):
    """What the screen looks for besides words; a marker's value is its pattern id."""

    CHANNELS = 0  # "Channel" three times or more: somewhere besides one <Channel> element
    EVENT_IDS = 1  # "EventID" three times or more
    INSTRUCTION = 2  # "<?"
    INSTRUCTIONS = 3  # "<?" twice or more
    CHARACTER_REFERENCE = 4  # "&#"
    MARKUP = 5  # "<!": comment, CDATA, DOCTYPE
    JSON_ESCAPE = 6  # "\u"
    CASEFOLDS_TO_ASCII = 7  # a character beyond ASCII whose case folding yields ASCII
    IDENTIFYING_NAME = 8  # a field name that decides a source, other than Channel and EventID


def _literal(text: bytes) -> bytes:
    return re.escape(text)


def _at_least(text: bytes, times: int) -> bytes:
    return b".*".join([_literal(text)] * times)


def _any_of(texts: Sequence[bytes]) -> bytes:
    return b"|".join(_literal(t) for t in texts)


class _OnePass:
    """A hyperscan database and the set its matches fill; one per thread (it owns its scratch)."""

    def __init__(self, patterns: dict[int, tuple[bytes, int]]) -> None:
        self.database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.database.compile(
            expressions=[pattern for pattern, _ in patterns.values()],
            ids=list(patterns),
            elements=len(patterns),
            flags=[flag for _, flag in patterns.values()],
        )
        self._found: set[int] = set()

    def scan(self, payload: bytes) -> set[int]:
        """Return the ids of the patterns that occur in ``payload``.

        The set is reused by the next scan: read it before scanning again.
        """
        self._found.clear()
        self.database.scan(payload, match_event_handler=self._on_match)
        return self._found

    def _on_match(self, pattern: int, start: int, end: int, flags: int, context: object) -> None:
        self._found.add(pattern)


class Scanner(_OnePass):
    """Finds the screen's markers (``Marker``) in one pass."""

    def __init__(self, casefolds: Sequence[str], identifying: Sequence[bytes]) -> None:
        patterns = {
            Marker.CHANNELS: (_at_least(b"Channel", 3), _ONCE | hyperscan.HS_FLAG_DOTALL),
            Marker.EVENT_IDS: (_at_least(b"EventID", 3), _ONCE | hyperscan.HS_FLAG_DOTALL),
            Marker.INSTRUCTION: (_literal(b"<?"), _ONCE),
            Marker.INSTRUCTIONS: (_at_least(b"<?", 2), _ONCE | hyperscan.HS_FLAG_DOTALL),
            Marker.CHARACTER_REFERENCE: (_literal(b"&#"), _ONCE),
            Marker.MARKUP: (_literal(b"<!"), _ONCE),
            Marker.JSON_ESCAPE: (_literal(b"\\u"), _ONCE),
            Marker.CASEFOLDS_TO_ASCII: (_any_of([c.encode() for c in casefolds]), _ONCE),
            Marker.IDENTIFYING_NAME: (_any_of(identifying), _ONCE),
        }
        super().__init__({int(m): (p, f) for m, (p, f) in patterns.items() if p})  # none to find


class WordScanner(_OnePass):
    """Finds which of ``words`` occur, caseless, in one pass (a word's id: its position)."""

    def __init__(self, words: Sequence[bytes]) -> None:
        flags = _ONCE | hyperscan.HS_FLAG_CASELESS
        super().__init__({number: (_literal(word), flags) for number, word in enumerate(words)})
        self.words = {word: number for number, word in enumerate(words)}
