"""Decide, before the event is parsed, that it can match no rule.

Two screens, both sound (they never skip an event a rule would match): the event's
(source, EventCode) is routed to no rule; or for each rule of its route, some clause of words
that every match holds (see ``Expr.necessary``: one word of each clause) has no word in the
bytes. Up to four clauses per rule are checked, the rarest first (``screening_clauses``); each
route's words are found by that route's own hyperscan database. The word screen is not used on
text whose decoded, casefolded form could spell a word the bytes do not: character references,
``\\u`` escapes, and the few characters that casefold to ASCII.

(source, EventCode) must be the parser's. In XML they are read from the bytes only when the
parser cannot read other ones: the names of the identifying fields occur just in the one
``<Channel>`` and ``<EventID>`` element (the parser also takes fields from ``Data Name=``,
``UserData`` leaves and attributes, and a later duplicate wins), and nothing decodes into a
name (character references, an encoding declaration, comments or CDATA). Anything else is
parsed. JSON is read by the parser's own field extraction: duplicate keys, escapes, nesting and
aliases are resolved as the parser resolves them.

An XML event whose channel no source mapping knows (and that names no other identifying field)
is rejected from its bytes as ``unknown_source``, as the normalizer would reject it, without
being parsed: on attack-simulation logs most events come from such channels.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.normalize import Normalizer
from pipeline.parse import json_fields
from pipeline.rejects import Rejected, RejectReason
from pipeline.route import Router
from pipeline.rules.expr import WORD, Rank, by_length
from pipeline.rules.model import Rule
from pipeline.scan import Marker, Scanner, WordScanner

REFINING_CLAUSES = 3  # per rule, besides the indexed one: checked before the rule is tried

# In XML, '<' inside text is escaped, so a <Channel>/<EventID> in the bytes is an element.
_XML_CHANNEL = re.compile(rb"<Channel>([^<]{1,128})</Channel>")
_XML_EVENT_ID = re.compile(rb"<EventID(?:\s[^>]*)?>(\d{1,6})</EventID>")
_XML_UTF8_DECLARATION = re.compile(
    rb"""\s*<\?xml\s+version=(["'])1\.[0-9]\1(?:\s+encoding=(["'])utf-8\2)?\s*\?>""",
    re.IGNORECASE,
)

# The characters beyond ASCII whose case folding yields ASCII (U+212A KELVIN SIGN folds to "k"):
# decoded text holding one could spell a rule's word that the bytes do not contain. The unit
# tests recompute this list over all of Unicode.
CASEFOLDS_TO_ASCII = frozenset(
    "\u00df\u0130\u0149\u017f\u01f0\u1e96\u1e97\u1e98\u1e99\u1e9a\u1e9e\u212a"
    "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"
)
# Markup after which the bytes of XML no longer show every name the parser reads, or their
# decoded text every word: character references, comments or CDATA, a second "Channel" or
# "EventID", another identifying field's name. (An XML declaration is allowed only at the start
# and only for UTF-8: another encoding could spell other names.)
_XML_UNCLEAR = frozenset(
    {
        Marker.CHARACTER_REFERENCE,
        Marker.MARKUP,
        Marker.CHANNELS,
        Marker.EVENT_IDS,
        Marker.IDENTIFYING_NAME,
        Marker.INSTRUCTIONS,
    }
)
# What makes decoded, casefolded text spell a word its bytes do not show, per format.
_HIDES_WORDS = {
    "xml": frozenset({Marker.CHARACTER_REFERENCE, Marker.CASEFOLDS_TO_ASCII}),
    "json": frozenset({Marker.JSON_ESCAPE, Marker.CASEFOLDS_TO_ASCII}),
}


class Verdict(NamedTuple):  # a tuple: the intake counts verdicts, and hashes them per event
    """An event the rules cannot match: its source and event code, read from the bytes."""

    source: str
    event_code: str
    routed: bool = False  # routed to rules, but lacks every word they need


@dataclass(frozen=True, slots=True)
class Candidates:
    """The rules of one route, indexed by their first word clause (bit n: the route's n-th
    rule); their other clauses are checked before a rule is chosen. The route's own scanner
    looks for its rules' words only: a smaller database scans faster and calls back less."""

    rules: tuple[Rule, ...]
    always: int  # the rules that need no word
    by_word: dict[int, int]  # word id -> the rules whose first clause holds it
    refining: tuple[tuple[frozenset[int], ...], ...]  # per rule: its other clauses
    scanner: WordScanner | None  # None: no rule of the route needs a word

    @classmethod
    def of(
        cls, rules: tuple[Rule, ...], clauses: dict[str, tuple[frozenset[bytes], ...]]
    ) -> Candidates:
        """Index ``rules`` by their clauses (``clauses``: rule id -> ranked word clauses)."""
        own = [clauses.get(rule.id, ()) for rule in rules]  # in route order; () needs no word
        words = sorted({word for ranked in own for clause in ranked for word in clause})
        scanner = WordScanner(words) if words else None
        ids = scanner.words if scanner else {}
        numbered = [tuple(frozenset(ids[w] for w in clause) for clause in r) for r in own]
        by_word: dict[int, int] = {}
        for number, ranked in enumerate(numbered):
            for word in ranked[0] if ranked else ():
                by_word[word] = by_word.get(word, 0) | 1 << number
        always = sum(1 << number for number, ranked in enumerate(numbered) if not ranked)
        refining = tuple(ranked[1:] for ranked in numbered)
        return cls(rules, always, by_word, refining, scanner)

    def choose(self, payload: bytes) -> int:
        """Return the rules the words of ``payload`` choose (see ``chosen``)."""
        return self.always if self.scanner is None else self.chosen(self.scanner.scan(payload))

    def chosen(self, found: set[int]) -> int:
        """Return the rules that need no word, or whose every clause has a word ``found``."""
        indexed = 0
        for word in found:
            indexed |= self.by_word.get(word, 0)
        chosen = self.always | indexed
        for number in _numbers(indexed):
            if any(clause.isdisjoint(found) for clause in self.refining[number]):
                chosen ^= 1 << number
        return chosen

    def picked(self, chosen: int) -> tuple[Rule, ...]:
        """Return the rules ``chosen`` holds, in route order."""
        return tuple(self.rules[number] for number in _numbers(chosen))


def _numbers(rules: int) -> Iterator[int]:
    """Yield the numbers of the rules a bit set holds (its set bits), lowest first."""
    while rules:
        lowest = rules & -rules
        yield lowest.bit_length() - 1
        rules ^= lowest


# How to screen one (source, code): None, parse it; (verdict, None), skip it; (verdict,
# candidates), skip it unless the words found choose one of the candidates.
Screen = tuple[Verdict, Candidates | None] | None


def by_rarity(rules: Iterable[Rule]) -> Rank:
    """Return a rank of clauses by how many of ``rules`` name their words, then by length.

    A word many searches name is common in events too (a registry path's ``currentversion``,
    ``.exe``): a clause of words few rules name screens out more events. Words are counted in
    the search texts as written (a word only a macro holds counts as rare).
    """
    naming = Counter(w for rule in rules for w in set(WORD.findall(rule.spec.search.lower())))

    def rank(clause: frozenset[str]) -> tuple[object, ...]:
        return sum(naming[word] for word in clause), *by_length(clause)

    return rank


def screening_clauses(
    rules: Iterable[Rule], normalizer: Normalizer
) -> dict[str, tuple[frozenset[bytes], ...]]:
    """Return, per rule needing words, the clauses the screen checks, the most selective first.

    Fields the route decides (``EventCode``, a source's constants) hold in every event of the
    route: their words screen nothing out, and are left out.
    """
    rules = tuple(rules)
    rank = by_rarity(rules)
    known = {name for _, _, fields in normalizer.route_keys() for name in fields}

    def screens(name: str) -> bool:
        return name not in known and normalizer.raw_safe(name)

    chosen = {}
    for rule in rules:
        if clauses := rule.plan.predicate.necessary(screens, rank):
            ranked = sorted(clauses, key=rank)[: 1 + REFINING_CLAUSES]
            chosen[rule.id] = tuple(frozenset(word.encode() for word in c) for c in ranked)
    return chosen


def _form(payload: bytes) -> str | None:
    """Return the record's format as its first byte says: "xml", "json", or None."""
    head = payload[:1]
    if head.isspace():
        head = payload.lstrip()[:1]
    return {b"<": "xml", b"{": "json"}.get(head)


class Prefilter:
    """Skips events no rule can match, judged from the bytes; anything unclear is parsed.

    One per thread: its scanners own hyperscan scratch space.
    """

    def __init__(self, normalizer: Normalizer, router: Router) -> None:
        self.routes = router.routes
        self.by_channel = {
            m.identify.equals.casefold(): m.source
            for m in normalizer.mappings
            if m.identify.field == "Channel" and m.identify.equals
        }
        self.normalizer = normalizer
        # The other field names that decide a source or an event code: in XML they may not
        # occur at all (Channel and EventID only in the elements the screen reads).
        names = {m.identify.field for m in normalizer.mappings}
        names |= {m.event_code for m in normalizer.mappings}
        identifying = [n.encode() for n in sorted(names - {"Channel", "EventID"})]
        rules = {rule.id: rule for route in self.routes for rule in router.rules_at(route)}
        clauses_of = screening_clauses(rules.values(), normalizer)
        self.scanner = Scanner(sorted(CASEFOLDS_TO_ASCII), identifying)
        self.candidates = {
            route: Candidates.of(router.rules_at(route), clauses_of) for route in self.routes
        }
        # Few (channel, code) pairs occur; each is judged once. Bounded: the bytes are untrusted.
        self._source = functools.lru_cache(maxsize=1024)(self._channel_source)
        self._screen = functools.lru_cache(maxsize=4096)(self._judge)
        # Events of a route mostly hold the same few words: each choice of rules is built once.
        self._picked = functools.lru_cache(maxsize=4096)(self._rules_chosen)
        self._scanned: tuple[bytes | None, set[int]] = (None, set())
        self._chose: tuple[bytes | None, Candidates | None, int] = (None, None, 0)

    def _scan(self, payload: bytes) -> set[int]:
        """Return the markers found in ``payload``: a record screened and then matched is
        scanned once (the last record's markers are kept, until the next record is scanned)."""
        if self._scanned[0] is not payload:
            self._scanned = (payload, self.scanner.scan(payload))
        return self._scanned[1]

    def _choose(self, candidates: Candidates, payload: bytes) -> int:
        """Return the candidates the words of ``payload`` choose: a record screened and then
        matched chooses once (the last record's choice is kept)."""
        if self._chose[0] is not payload or self._chose[1] is not candidates:
            self._chose = (payload, candidates, candidates.choose(payload))
        return self._chose[2]

    def plausible(self, route: tuple[str, str], payload: bytes) -> tuple[Rule, ...]:
        """Return the rules of ``route`` that may match ``payload``: each needs no word, or a
        word of each of its clauses occurs in the bytes (all rules when the text could hide a
        word)."""
        candidates = self.candidates.get(route)
        if candidates is None:
            return ()
        if not candidates.by_word:
            return candidates.rules
        form = _form(payload) or "xml"  # classic text: as strict as XML
        if not _HIDES_WORDS[form].isdisjoint(self._scan(payload)):
            return candidates.rules
        return self._picked(route, self._choose(candidates, payload))

    def _rules_chosen(self, route: tuple[str, str], chosen: int) -> tuple[Rule, ...]:
        return self.candidates[route].picked(chosen)

    def skip(self, payload: bytes) -> Verdict | Rejected | None:
        """Return the verdict when ``payload`` certainly matches no rule, else None.

        An XML event of a channel no mapping knows is returned as its rejection.
        """
        form = _form(payload)
        if form is None:
            return None
        found = self._scan(payload)
        xml = form == "xml"
        screen = self._xml_screen(payload, found) if xml else self._json_screen(payload)
        if screen is None or isinstance(screen, Rejected):
            return screen
        verdict, candidates = screen
        if candidates is None:
            return verdict
        if not _HIDES_WORDS[form].isdisjoint(found) or self._choose(candidates, payload):
            return None
        return verdict

    def _xml_screen(self, payload: bytes, found: set[int]) -> Screen | Rejected:
        """Read (source, code) from the bytes when the parser could read no other ones."""
        if not _XML_UNCLEAR.isdisjoint(found):
            return None
        if Marker.INSTRUCTION in found and not _XML_UTF8_DECLARATION.match(payload):
            return None  # the one "<?" is not that of a UTF-8 declaration at the start
        channel, event_id = _XML_CHANNEL.search(payload), _XML_EVENT_ID.search(payload)
        if channel is None or event_id is None:
            return None
        source = self._source(channel.group(1))
        if source is None or isinstance(source, Rejected):
            return source
        return self._screen(source, event_id.group(1))

    def _json_screen(self, payload: bytes) -> Screen:
        """Read (source, code) with the parser's field extraction (no time, no normalizing)."""
        try:
            fields = json_fields(payload.decode("utf-8"))
            mapping = self.normalizer.identify(fields)
        except (UnicodeDecodeError, Rejected):
            return None
        code = fields.get(mapping.event_code)
        return None if code is None else self._screen(mapping.source, code.encode())

    def _channel_source(self, channel: bytes) -> str | Rejected | None:
        """Return the source of ``channel`` as the normalizer reads it, its rejection, or None."""
        try:
            name = channel.decode("utf-8").strip()  # the parser strips the element's text
        except UnicodeDecodeError:
            return None  # the parser rejects the encoding
        if not name:
            return None
        source = self.by_channel.get(name.casefold())
        if source is None:
            return Rejected(RejectReason.UNKNOWN_SOURCE, f"no mapping for channel {name!r}")
        return source

    def _judge(self, source: str, event_code: bytes) -> Screen:
        """Return how to screen events of (source, code): skip outright, by words, or not."""
        code = event_code.decode("utf-8", "replace")
        if (source, code) not in self.routes:
            return Verdict(source, code), None
        candidates = self.candidates[(source, code)]
        if candidates.always or not candidates.by_word:
            return None
        return Verdict(source, code, routed=True), candidates
