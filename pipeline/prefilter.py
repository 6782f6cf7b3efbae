"""Decide from the raw bytes, before any parse, that an event can match no rule.

Two screens, both sound (they never skip an event a rule would match): the event's
(source, EventCode) is routed to no rule; or none of the words that every match of the
routed rules must contain (see ``Expr.necessary``) occurs in the bytes. The word screen is not
used on text whose decoded, casefolded form could spell a word the bytes do not: character
references, ``\\u`` escapes, and the few characters that casefold to ASCII.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple

from pipeline.normalize import Normalizer
from pipeline.route import Router
from pipeline.rules.model import Rule

# In XML, '<' inside text is escaped, so the first <Channel>/<EventID> is the System one. In
# JSON a key is matched only where it is not inside a string (no backslash before its quote).
_XML_CHANNEL = re.compile(rb"<Channel>([^<]{1,128})</Channel>")
_XML_EVENT_ID = re.compile(rb"<EventID(?:\s[^>]*)?>(\d{1,6})</EventID>")


def _json_key(name: str, value: bytes) -> re.Pattern[bytes]:
    return re.compile(rb'(?<!\\)"' + name.encode() + rb'"\s*:\s*' + value)


_JSON_STRING = rb'"([^"\\]{1,128})"'
_JSON_CHANNEL = _json_key("Channel", _JSON_STRING)
_JSON_EVENT_ID = _json_key("EventID", rb'"?(\d{1,6})\b')
_JSON_SIMPLE_NAME = _json_key("event_simpleName", _JSON_STRING)


# The characters beyond ASCII whose case folding yields ASCII (U+212A KELVIN SIGN folds to "k"):
# decoded text holding one could spell a rule's word that the bytes do not contain. The unit
# tests recompute this list over all of Unicode.
CASEFOLDS_TO_ASCII = frozenset(
    "\u00df\u0130\u0149\u017f\u01f0\u1e96\u1e97\u1e98\u1e99\u1e9a\u1e9e\u212a"
    "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"
)
_ASCII = bytes(range(128))
# What each format decodes into other characters: XML character references, JSON \u escapes.
_XML_ESCAPE, _JSON_ESCAPE = (b"#", b"&#"), (b"\\", b"\\u")


class Verdict(NamedTuple):  # a tuple: the intake counts verdicts, and hashes them per event
    """An event the rules cannot match: its source and event code, read from the bytes."""

    source: str
    event_code: str
    routed: bool = False  # routed to rules, but lacks every word they need


# How to screen one (source, code): None, parse it; (verdict, None), skip it; (verdict, words),
# skip it unless one of the words occurs.
Screen = tuple[Verdict, tuple[bytes, ...] | None] | None


def plain_text(payload: bytes, escape: tuple[bytes, bytes]) -> bool:
    """Return whether the bytes show every ASCII word of their decoded, casefolded text.

    ``escape`` is the format's escape sequence, preceded by a byte it contains and that is
    cheaper to look for alone.
    """
    if escape[0] in payload and escape[1] in payload:
        return False
    if payload.isascii():
        return True
    beyond_ascii = payload.translate(None, _ASCII)  # UTF-8 resynchronises: no false joins
    return CASEFOLDS_TO_ASCII.isdisjoint(beyond_ascii.decode("utf-8", "replace"))


def required_words(rules: Iterable[Rule], normalizer: Normalizer) -> tuple[bytes, ...] | None:
    """Return the lower-case words of which one occurs in every match of ``rules``, or None."""
    found = [rule.plan.predicate.necessary(normalizer.raw_safe) for rule in rules]
    if not found or None in found:
        return None
    words = frozenset().union(*(w for w in found if w is not None))
    return tuple(sorted((word.encode() for word in words), key=len, reverse=True))


class Prefilter:
    """Skips events no rule can match, judged from the bytes; anything unclear is parsed."""

    def __init__(self, normalizer: Normalizer, router: Router) -> None:
        self.routes = router.routes
        self.route_words = {
            route: words
            for route in self.routes
            if (words := required_words(router.rules_at(route), normalizer)) is not None
        }
        self.by_channel = {
            m.identify.equals.casefold(): m.source
            for m in normalizer.mappings
            if m.identify.field == "Channel" and m.identify.equals
        }
        self.simple_name_source = next(
            (m.source for m in normalizer.mappings if m.identify.field == "event_simpleName"), None
        )
        # Few (channel, code) pairs occur; each is judged once. Bounded: the bytes are untrusted.
        self._source = functools.lru_cache(maxsize=1024)(self._channel_source)
        self._screen = functools.lru_cache(maxsize=4096)(self._judge)

    def skip(self, payload: bytes) -> Verdict | None:
        """Return the verdict when ``payload`` certainly matches no rule, else None."""
        head = payload.lstrip()[:1]
        if head == b"<":
            escape = _XML_ESCAPE
            screen = self._screen_found(_XML_CHANNEL.search(payload), _XML_EVENT_ID.search(payload))
        elif head == b"{":
            escape = _JSON_ESCAPE
            simple = _JSON_SIMPLE_NAME.search(payload)
            if simple is not None and self.simple_name_source is not None:
                screen = self._screen(self.simple_name_source, simple.group(1))
            else:
                channel, event_id = _JSON_CHANNEL.search(payload), _JSON_EVENT_ID.search(payload)
                screen = self._screen_found(channel, event_id)
        else:
            return None
        if screen is None:
            return None
        verdict, words = screen
        if words is None:
            return verdict
        if not plain_text(payload, escape):
            return None
        lowered = payload.lower()
        return None if any(word in lowered for word in words) else verdict

    def _screen_found(
        self, channel: re.Match[bytes] | None, event_id: re.Match[bytes] | None
    ) -> Screen:
        if channel is None or event_id is None:
            return None
        source = self._source(channel.group(1))
        return None if source is None else self._screen(source, event_id.group(1))

    def _channel_source(self, channel: bytes) -> str | None:
        return self.by_channel.get(channel.decode("utf-8", "replace").casefold())

    def _judge(self, source: str, event_code: bytes) -> Screen:
        """Return how to screen events of (source, code): skip outright, by words, or not."""
        code = event_code.decode("utf-8", "replace")
        if (source, code) not in self.routes:
            return Verdict(source, code), None
        words = self.route_words.get((source, code))
        return None if words is None else (Verdict(source, code, routed=True), words)
