"""The byte-level prefilter never skips an event a rule would match."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fleet import events
from pipeline.engine import Detector
from pipeline.files import read_records
from pipeline.match import match_event
from pipeline.normalize import default_normalizer
from pipeline.parse import parse_event
from pipeline.prefilter import (
    CASEFOLDS_TO_ASCII,
    Candidates,
    Verdict,
    by_rarity,
    screening_clauses,
)
from pipeline.rejects import Rejected
from pipeline.rules.expr import WORD, All, Any, Clauses, Expr, Keyword, Match, Not, by_length
from pipeline.rules.loader import load_rules
from pipeline.wildcard import Wildcard
from tests import PROJECT_ROOT
from tests.synthetic_hostile import (
    DUPLICATE_KEYS,
    NESTED_JSON,
    ROLLUP,
    WMIC_NODE,
    XML_DECOYS,
    crowdstrike,
    sysmon,
)
from tests.unit.conftest import shared

FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
SYSMON_1 = (
    "<Event><System><EventID>1</EventID><TimeCreated SystemTime='2024-05-01T10:00:00Z'/>"
    "<Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>ws01</Computer></System>"
    "<EventData><Data Name='Image'>{image}</Data><Data Name='CommandLine'>{command}</Data>"
    "<Data Name='ParentImage'>C:\\Windows\\explorer.exe</Data><Data Name='User'>CORP\\ann</Data>"
    "<Data Name='ProcessGuid'>{{1}}</Data><Data Name='ProcessId'>42</Data></EventData></Event>"
)


SHIPPED = PROJECT_ROOT / "rules"
IMPORTED = PROJECT_ROOT / "tests" / "golden" / "import"  # the ESCU fixture subset, imported


@cache
def detector(rules: Path = SHIPPED) -> Detector:
    """Return a detector with the shipped rules (or those of ``rules``)."""
    return Detector(load_rules(rules))


@pytest.fixture(scope=shared, autouse=True)
def fresh_detector() -> None:
    """Build the detector afresh in each session (in a mutation run, each test)."""
    detector.cache_clear()


@pytest.mark.parametrize(
    ("payload", "verdict"),
    [
        (sysmon("h", "2024-03-05T11:00:00Z", code=3, data=""), ("sysmon", "3", False)),
        (SYSMON_1.format(image="C:\\x\\calc.exe", command="calc").encode(), ("sysmon", "1", True)),
        (crowdstrike([("event_simpleName", "DnsRequest"), ("timestamp", "1")]),
         ("crowdstrike", "DnsRequest", False)),
        (crowdstrike([*ROLLUP[:3], ("ImageFileName", "calc.exe"), ("CommandLine", "calc")]),
         ("crowdstrike", "ProcessRollup2", True)),
    ],
    ids=["unrouted-xml", "routed-xml-without-words", "unrouted-json", "routed-json-without-words"],
)  # fmt: skip
def test_the_verdict_names_the_source_and_code_it_screened(
    payload: bytes, verdict: tuple[str, str, bool]
) -> None:
    found = detector().prefilter.skip(payload)
    assert isinstance(found, Verdict)
    assert (found.source, found.event_code, found.routed) == verdict
    assert full_parse(payload) == verdict[:2]


def test_every_unrouted_event_of_the_fleet_mix_is_screened_out() -> None:
    """The screen's point: events no rule routes are never parsed (the benchmark's fleet mix,
    built from real event layouts)."""
    core, unrouted = detector(), 0
    for _, _, payload in events(3000):
        parsed = full_parse(payload)
        if parsed is None or parsed in core.router.routes:
            continue
        unrouted += 1
        found = core.prefilter.skip(payload)
        assert isinstance(found, Verdict), payload[:300]
        assert (found.source, found.event_code, found.routed) == (*parsed, False)
    assert unrouted > 1000


def test_routed_fleet_events_no_rule_matches_are_screened_by_their_words() -> None:
    core, benign = detector(), 0
    for _, _, payload in events(3000):
        parsed = full_parse(payload)
        if parsed not in core.router.routes or full_path_matches(payload):
            continue
        benign += 1
        found = core.prefilter.skip(payload)
        assert isinstance(found, Verdict) and found.routed, payload[:300]
        assert (found.source, found.event_code) == parsed
    assert benign > 300


def full_path_matches(payload: bytes, rules: Path = SHIPPED) -> list[str]:
    """Return the rule ids that match ``payload`` when it is parsed, skipping no screen."""
    core = detector(rules)
    try:
        event = core.normalizer.normalize(parse_event(payload))
    except Rejected:
        return []
    return [r.id for r in core.router.rules_for(event) if match_event(r, event) is not None]


@pytest.mark.parametrize("rules", [SHIPPED, IMPORTED], ids=["shipped", "imported"])
def test_no_fixture_event_that_some_rule_matches_is_skipped(rules: Path) -> None:
    skipped_routed = matched = 0
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix not in (".xml", ".json", ".log", ".evtx", ".zip", ".gz"):
            continue
        for record in read_records(path):
            verdict = detector(rules).prefilter.skip(record.payload)
            found = full_path_matches(record.payload, rules)
            matched += bool(found)
            if isinstance(verdict, Rejected):
                assert full_parse(record.payload) is None, f"{record.location}#{record.number}"
            elif verdict is not None:
                assert found == [], f"{record.location}#{record.number} skipped but matches {found}"
                skipped_routed += verdict.routed
    assert matched > 5 and skipped_routed > 0  # the check ran on both kinds of event


@pytest.mark.parametrize(
    "command",
    [
        "&#87;MIC.exe /node:10.0.0.5 process call create calc.exe",  # character reference
        "\u212anown-good wmic\u0131.exe",  # non-ASCII: casefolding could spell a word
    ],
)
def test_events_whose_text_could_hide_a_word_are_parsed(command: str) -> None:
    payload = SYSMON_1.format(image="C:\\Windows\\System32\\wbem\\WMIC.exe", command=command)
    assert detector().prefilter.skip(payload.encode()) is None


def test_a_routed_event_without_any_rule_word_is_skipped() -> None:
    payload = SYSMON_1.format(image="C:\\Windows\\notepad.exe", command="notepad.exe a.txt")
    verdict = detector().prefilter.skip(payload.encode())
    assert verdict is not None and verdict.routed and verdict.source == "sysmon"


def test_a_json_unicode_escape_is_parsed() -> None:
    payload = (
        b'{"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, '
        b'"Image": "C:\\\\wbem\\\\\\u0057MIC.exe", "CommandLine": "x"}'
    )
    assert detector().prefilter.skip(payload) is None


def clauses(expression: Expr) -> Clauses:
    """Return the word clauses of ``expression`` with every field but ``derived`` copied from
    the raw text."""
    return expression.necessary(lambda field: field != "derived", by_length)


def test_necessary_words_follow_the_logic() -> None:
    wmic = Match("process_name", Wildcard.compile("wmic.exe"))
    node = Match("process", Wildcard.compile("*/node:*"))
    wbem = Match("process", Wildcard.compile("*\\wbem\\wmic.exe*"))
    scrcons = Keyword(Wildcard.compile("*scrcons*"))
    derived = Match("derived", Wildcard.compile("anything"))
    assert clauses(wmic) == {frozenset({"wmic.exe"})}
    assert clauses(node) == {frozenset({"node:"})}  # ":" is written as it is; "/" may be "\\/"
    assert clauses(wbem) == {frozenset({"wbem"}), frozenset({"wmic.exe"})}  # every word
    assert clauses(All((node, wmic))) == {frozenset({"node:"}), frozenset({"wmic.exe"})}
    # A disjunction is one clause: the first-ranked clause of each operand, joined.
    assert clauses(Any((wbem, scrcons))) == {frozenset({"wmic.exe", "scrcons"})}
    assert clauses(Any((wmic, derived))) == frozenset()
    assert clauses(All((Any((wmic, derived)), node))) == {frozenset({"node:"})}
    assert clauses(Not(wmic)) == frozenset()
    assert clauses(All(())) == frozenset()
    assert clauses(Match("process", Wildcard.compile("*/c *"))) == frozenset()  # all too short


def test_the_screen_ranks_words_many_rules_name_last() -> None:
    """A word many searches name (``create``: four story rules) is common in events too."""
    rank = by_rarity(load_rules(PROJECT_ROOT / "rules"))
    assert rank(frozenset({"invoke-wmiexec"})) < rank(frozenset({"create"}))
    assert rank(frozenset({"create"})) < rank(frozenset({"create", "invoke-wmiexec"}))
    assert rank(frozenset({"scrcons.exe"})) < rank(frozenset({"scrcons"}))  # then the longer


def test_words_of_fields_the_route_decides_do_not_screen() -> None:
    """Every event of the 4104 route holds ``4104``: the clause would screen nothing out."""
    normalizer = default_normalizer()
    rules = load_rules(PROJECT_ROOT / "rules")
    chosen = screening_clauses(rules, normalizer)
    invoke = next(rule for rule in rules if rule.spec.name == "PowerShell Invoke WmiExec Usage")
    assert chosen[invoke.id] == (frozenset({b"invoke-wmiexec"}),)


@pytest.mark.parametrize(
    ("pattern", "word"),
    [
        ("*\\[kl]", "[kl]"),  # brackets are written as they are
        ("*[ENTER]*", "[enter]"),
        ("*http://x*", "http:"),
        ("*a&amp;b*", "amp;b"),  # "&" is escaped in XML: never part of a word
        ('*say "hi"*', "say"),
        ("*c:\\tmp*", "tmp"),  # a backslash is doubled in JSON
        ("*é-x*", None),  # beyond ASCII: no word ("-x" is too short)
    ],
)
def test_words_hold_only_characters_written_as_they_are(pattern: str, word: str | None) -> None:
    found = clauses(Match("process", Wildcard.compile(pattern)))
    assert found == (frozenset() if word is None else {frozenset({word})})


def test_derived_fields_are_not_trusted_to_be_in_the_raw_text() -> None:
    normalizer = default_normalizer()
    assert not normalizer.raw_safe("process_id")  # hex converted to decimal in some sources
    assert not normalizer.raw_safe("_datamodel")
    assert normalizer.raw_safe("process_name") and normalizer.raw_safe("CommandLine")


def test_the_list_of_characters_that_casefold_to_ascii_is_complete() -> None:
    found = {
        chr(point)
        for point in range(0x80, 0x110000)
        if not 0xD800 <= point < 0xE000 and any(c < "\x80" for c in chr(point).casefold())
    }
    assert found == set(CASEFOLDS_TO_ASCII)


def test_a_registered_sign_does_not_stop_the_word_screen() -> None:
    payload = SYSMON_1.format(image="C:\\Windows\\notepad.exe", command="Microsoft\u00ae Notepad")
    assert detector().prefilter.skip(payload.encode()) is not None


def full_parse(payload: bytes) -> tuple[str, str] | None:
    """Return the (source, EventCode) the parser and normalizer give, or None if rejected."""
    try:
        event = detector().normalizer.normalize(parse_event(payload))
    except Rejected:
        return None
    return event.source, event.fields["EventCode"]


@pytest.mark.parametrize(
    "payload",
    [
        crowdstrike([("event_simpleName", "DnsRequest"), *ROLLUP]),  # duplicate key: last wins
        crowdstrike([("x", {"event_simpleName": "DnsRequest"}), *ROLLUP]),  # nested decoy
        sysmon("h", "2024-03-05T11:00:00Z", code=3, data=WMIC_NODE).replace(
            b"<EventID>3</EventID>", b"<EventID>3</EventID><EventID>1</EventID>"
        ),
        sysmon(
            "h", "2024-03-05T11:00:00Z", code=3, data=WMIC_NODE + "<Data Name='EventID'>1</Data>"
        ),
        sysmon(
            "h",
            "2024-03-05T11:00:00Z",
            code=3,
            data=WMIC_NODE + "<Data Name='Event&#73;D'>1</Data>",
        ),
    ],
    ids=["json-duplicate", "json-nested", "xml-duplicate", "xml-data-name", "xml-char-ref"],
)
def test_where_the_bytes_and_the_parser_could_disagree_the_event_is_parsed(payload: bytes) -> None:
    assert full_path_matches(payload)  # the parser sees the wmic /node: process creation
    assert detector().prefilter.skip(payload) is None


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(XML_DECOYS, DUPLICATE_KEYS, NESTED_JSON))
def test_the_screen_agrees_with_the_full_parse_on_adversarial_records(payload: bytes) -> None:
    verdict = detector().prefilter.skip(payload)
    if isinstance(verdict, Rejected):
        assert full_parse(payload) is None
    elif verdict is not None:
        assert full_path_matches(payload) == []
        parsed = full_parse(payload)
        assert parsed is None or parsed == (verdict.source, verdict.event_code)


def unknown_channel(channel: str) -> bytes:
    """Return a Sysmon 1 event (the ``SYSMON_1`` shape) from ``channel``."""
    return (
        SYSMON_1.format(image="C:\\Windows\\notepad.exe", command="notepad.exe")
        .replace("Microsoft-Windows-Sysmon/Operational", channel)
        .encode()
    )


def test_an_event_of_a_channel_no_mapping_knows_is_rejected_unparsed() -> None:
    payload = unknown_channel("Microsoft-Windows-LiveId/Operational")
    verdict = detector().prefilter.skip(payload)
    assert isinstance(verdict, Rejected) and verdict.reason == "unknown_source"
    with pytest.raises(Rejected) as parsed:
        detector().normalizer.normalize(parse_event(payload))
    assert (parsed.value.reason, parsed.value.detail) == (verdict.reason, verdict.detail)


def test_a_known_channel_padded_with_whitespace_is_not_rejected() -> None:
    payload = unknown_channel("\n  microsoft-windows-sysmon/operational ")
    verdict = detector().prefilter.skip(payload)
    assert verdict is not None and not isinstance(verdict, Rejected)
    assert full_parse(payload) == ("sysmon", "1")


@pytest.mark.parametrize("rules", [SHIPPED, IMPORTED], ids=["shipped", "imported"])
def test_the_rules_left_by_their_words_match_what_all_routed_rules_match(rules: Path) -> None:
    core, compared = detector(rules), 0
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix not in (".xml", ".json", ".log", ".evtx", ".out"):
            continue
        for record in read_records(path):
            try:
                event = core.normalizer.normalize(parse_event(record.payload))
            except Rejected:
                continue
            route = (event.source, event.fields["EventCode"])
            everything = [r.id for r in core.router.rules_at(route) if match_event(r, event)]
            plausible = [r.id for r in core.prefilter.plausible(route, record.payload)]
            assert set(everything) <= set(plausible), f"{record.location}#{record.number}"
            compared += bool(everything)
    assert compared > 5


def test_only_rules_whose_words_occur_are_evaluated() -> None:
    """Sysmon 1 feeds many rules; a wmic /node: event needs only those with a word in it."""
    core = detector()
    route = ("sysmon", "1")
    routed = core.router.rules_at(route)
    wmic = SYSMON_1.format(
        image="C:\\Windows\\System32\\wbem\\WMIC.exe", command="wmic /node:10.0.0.5 os get"
    ).encode()
    plausible = core.prefilter.plausible(route, wmic)
    assert 0 < len(plausible) < len(routed)
    assert [r for r in routed if r in plausible] == list(plausible)  # in route order
    assert set(full_path_matches(wmic)) <= {r.id for r in plausible}
    calc = SYSMON_1.format(image="C:\\x\\calc.exe", command="calc").encode()
    assert len(core.prefilter.plausible(route, calc)) < len(plausible)
    assert core.prefilter.plausible(("sysmon", "999"), wmic) == ()


def test_the_candidates_are_the_rules_needing_no_word_or_a_word_of_each_clause() -> None:
    rules = detector().router.rules_at(("sysmon", "1"))[:4]
    wmic, scrcons, node = b"wmic.exe", b"scrcons", b"/node:"
    candidates = Candidates.of(
        rules,
        {
            rules[1].id: (frozenset({wmic}),),
            rules[3].id: (frozenset({wmic, scrcons}), frozenset({node})),
        },
    )
    assert candidates.picked(candidates.choose(b"calc.exe")) == (rules[0], rules[2])
    assert candidates.picked(candidates.choose(b"SCRCONS /node:")) == (rules[0], rules[2], rules[3])
    assert candidates.picked(candidates.choose(b"scrcons.exe")) == (rules[0], rules[2])
    assert candidates.picked(candidates.choose(b"WMIC.exe /node:x")) == rules


def test_an_event_whose_code_cannot_be_read_from_the_bytes_is_parsed() -> None:
    no_code = sysmon("h", "2024-03-05T11:00:00Z", code=3, data="").replace(
        b"<EventID>3</EventID>", b""
    )
    assert detector().prefilter.skip(no_code) is None
    assert detector().prefilter.skip(b"\n  " + sysmon("h", "2024-03-05T11:00:00Z", code=3))


def test_every_word_character_is_written_as_it_is_in_xml_and_json() -> None:
    """A rule's word is searched in the raw bytes: each character it may hold must appear
    unchanged in an XML text or attribute and in a JSON string (where "/" may be "\\/")."""
    from xml.sax.saxutils import escape, quoteattr

    allowed = [chr(c) for c in range(128) if WORD.fullmatch(chr(c) * 3)]
    assert "&" not in allowed and "/" not in allowed and "\\" not in allowed
    for character in allowed:
        assert escape(character) == character
        assert quoteattr(character)[1:-1] == character
        assert json.dumps(character)[1:-1] == character
