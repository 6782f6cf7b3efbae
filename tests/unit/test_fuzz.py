"""Property-based tests: no input gets past the dead-letter boundary as an exception."""

from __future__ import annotations

import contextlib
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.aggregate import Aggregator
from pipeline.engine import Detector
from pipeline.parse import parse_event
from pipeline.policy import WindowPolicy
from pipeline.records import DestState
from pipeline.rejects import Rejected
from pipeline.rules.compiler import Macro, compile_search
from pipeline.rules.errors import RuleError
from pipeline.rules.loader import load_rules
from tests import PROJECT_ROOT
from tests.synthetic import script_block

DETECTOR = Detector(load_rules(PROJECT_ROOT / "rules"))
XML_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
FIELD_NAMES = st.sampled_from(
    [
        "CommandLine",
        "Image",
        "ParentImage",
        "User",
        "EventID",
        "Channel",
        "Computer",
        "ScriptBlockText",
        "OriginalFileName",
    ]
)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_parsed_or_rejected(payload: bytes) -> None:
    with contextlib.suppress(Rejected):
        parse_event(payload)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_break_the_detector(payload: bytes) -> None:
    outcome = DETECTOR.process(payload)
    assert outcome.rejected is not None or outcome.event is not None or outcome.source


@given(
    st.dictionaries(FIELD_NAMES, XML_TEXT, max_size=6),
    st.sampled_from(
        [
            "Microsoft-Windows-Sysmon/Operational",
            "Security",
            "Microsoft-Windows-PowerShell/Operational",
            "Microsoft-Windows-WMI-Activity/Operational",
            "Application",
        ]
    ),
    st.sampled_from(["1", "4688", "4104", "5861", "20", "x", ""]),
)
def test_odd_but_well_formed_events_never_break_the_detector(
    fields: dict[str, str], channel: str, event_id: str
) -> None:
    from xml.sax.saxutils import escape, quoteattr

    data = "".join(f"<Data Name={quoteattr(k)}>{escape(v)}</Data>" for k, v in fields.items())
    payload = (
        f"<Event><System><EventID>{event_id}</EventID><Channel>{channel}</Channel>"
        f"<TimeCreated SystemTime='2024-01-01T00:00:00Z'/></System>"
        f"<EventData>{data}</EventData></Event>"
    ).encode()
    outcome = DETECTOR.process(payload)
    for match in outcome.matches:
        Aggregator(DETECTOR.rules, {}, WindowPolicy()).add(match, -math.inf, 0.0)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=120))
def test_any_search_text_compiles_or_fails_with_a_rule_error(search: str) -> None:
    with contextlib.suppress(RuleError):
        compile_search(search, {"m": Macro("a=1")})


def test_a_32_kib_script_block_part_passes() -> None:
    text = "Invoke-WMIExec -Target x; " + "A" * (32 * 1024)
    outcome = DETECTOR.process(script_block("ws1", 1_709_640_000.0, text, 1))
    assert outcome.rejected is None
    assert [m.rule_id for m in outcome.matches] == ["0734bd21-2769-4972-a5f1-78bb1e011224"]


def test_state_stays_bounded_with_many_distinct_dests() -> None:
    state: dict[str, DestState] = {}
    aggregator = Aggregator(DETECTOR.rules, state, WindowPolicy())
    for number in range(5000):
        payload = script_block(f"ws{number}", 1_709_640_000.0 + number, "Invoke-WMIExec", number)
        for match in DETECTOR.process(payload).matches:
            aggregator.add(match, -math.inf, 0.0)
    assert len(state) == 5000
    aggregator.advance(1_709_640_000.0 + 4 * 3600, 0.0, list(state))
    assert len(state) == 0
