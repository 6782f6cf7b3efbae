"""Parsing raw records: XML and JSON shapes, times, and hostile input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.files import read_records
from pipeline.parse import MAX_ATTRIBUTES, MAX_DEPTH, MAX_FIELDS, json_fields, parse_event
from pipeline.rejects import Rejected, RejectReason
from tests.conftest import FIXTURES
from tests.synthetic_hostile import attribute_flood, nested_json, sysmon

SYSMON_LINE = (FIXTURES / "demo" / "sysmon_wmic_node_credential_dumping_via_copy.log").read_bytes()


def rejected(payload: bytes, **options: int) -> RejectReason:
    with pytest.raises(Rejected) as caught:
        parse_event(payload, **options)
    return caught.value.reason


def wmi_activity(user_data: bytes, message: bytes) -> bytes:
    """Return a WMI-Activity 5861 event with ``user_data`` and a rendered ``message``."""
    return (
        b"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        b"<EventID>5861</EventID><TimeCreated SystemTime='2024-01-01T00:00:00Z'/>"
        b"<Channel>Microsoft-Windows-WMI-Activity/Operational</Channel><Computer>h</Computer>"
        b"</System><UserData>" + user_data + b"</UserData><RenderingInfo Culture='en-US'>"
        b"<Message>" + message + b"</Message></RenderingInfo></Event>"
    )


def test_xml_system_attributes_and_event_data_become_fields() -> None:
    event = parse_event(SYSMON_LINE.splitlines()[0])
    assert event.fields["EventID"] == "1"
    assert event.fields["Computer"] == "ar-win-1"
    assert event.fields["UserID"] == "S-1-5-18"  # <Security UserID=...>
    assert event.fields["Name"] == "Microsoft-Windows-Sysmon"  # <Provider Name=...>
    assert event.fields["CommandLine"].startswith("esentutl.exe")
    assert event.time == pytest.approx(1762163560.0750725)


def test_user_data_leaves_and_rendered_message_become_fields() -> None:
    payload = wmi_activity(
        b"<Operation_ESStoConsumerBinding xmlns='x'><Namespace>//./root</Namespace>"
        b'<CONSUMER>CommandLineEventConsumer="e"</CONSUMER></Operation_ESStoConsumerBinding>',
        b"rendered text",
    )
    fields = parse_event(payload).fields
    assert fields["CONSUMER"] == 'CommandLineEventConsumer="e"'
    assert fields["Message"] == "rendered text"


def test_nxlog_json_aliases_fill_the_xml_names() -> None:
    payload = (
        b'{"Hostname":"ws1","EventID":4688,"Channel":"Security","RecordNumber":7,'
        b'"EventTime":"2020-08-01 07:53:24","NewProcessName":"C:\\\\w\\\\wmic.exe"}'
    )
    event = parse_event(payload)
    assert event.fields["Computer"] == "ws1"
    assert event.fields["EventID"] == "4688"
    assert event.fields["EventRecordID"] == "7"
    assert event.time == 1596268404.0


def test_winlogbeat_nesting_is_flattened() -> None:
    payload = (
        b'{"@timestamp":"2024-03-05T10:00:00.000Z","winlog":{"channel":"Security",'
        b'"computer_name":"dc1","event_id":4688,"event_data":{"CommandLine":"wmic os get"}}}'
    )
    fields = parse_event(payload).fields
    assert (fields["Channel"], fields["Computer"], fields["EventID"]) == ("Security", "dc1", "4688")
    assert fields["CommandLine"] == "wmic os get"


def test_epoch_milliseconds() -> None:
    assert parse_event(
        b'{"event_simpleName":"ProcessRollup2","timestamp":"1709640000123"}'
    ).time == (1709640000.123)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"hello", RejectReason.NOT_XML),
        (b"<Event><System>", RejectReason.NOT_XML),
        (b'{"a": ', RejectReason.NOT_JSON),
        (b"[1, 2]", RejectReason.NOT_XML),
        (b'{"EventID": 1}', RejectReason.MISSING_FIELD),
        (b'{"EventID": 1, "TimeCreated": "yesterday"}', RejectReason.BAD_TIMESTAMP),
        (b"\xff\xfe<Event/>", RejectReason.BAD_ENCODING),
        (
            b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<Event>&x;</Event>",
            RejectReason.XML_ENTITIES,
        ),
        (
            b'<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><Event>&b;</Event>',
            RejectReason.XML_ENTITIES,
        ),
        (b"<a>" * 300 + b"</a>" * 300, RejectReason.NOT_XML),
    ],
)
def test_bad_records_are_rejected_with_a_reason(payload: bytes, reason: RejectReason) -> None:
    assert rejected(payload) == reason


@pytest.mark.parametrize(
    "doctype",
    [b'<!DOCTYPE Event SYSTEM "http://attacker.example/x.dtd">', b"<!DOCTYPE Event>"],
    ids=["external-dtd", "bare"],
)
def test_a_doctype_without_entities_is_refused(doctype: bytes) -> None:
    event = SYSMON_LINE.splitlines()[0]
    assert parse_event(event).fields["EventID"] == "1"  # the same event parses without it
    assert rejected(doctype + event) == RejectReason.XML_ENTITIES


def test_oversized_records_are_rejected() -> None:
    assert rejected(SYSMON_LINE, max_bytes=100) == RejectReason.TOO_LARGE


@pytest.mark.parametrize(
    "payload",
    [nested_json(1000), nested_json(MAX_DEPTH + 1), attribute_flood(50_000)],
    ids=["json-1000-deep", "json-past-the-cap", "50k-attributes"],
)
def test_records_past_the_shape_caps_are_too_complex(payload: bytes) -> None:
    assert rejected(payload) == RejectReason.TOO_COMPLEX


def test_lists_nested_past_the_cap_are_too_complex_not_an_encoder_error() -> None:
    payload = b'{"timestamp":"1","x":' + b"[" * 300 + b"]" * 300 + b"}"  # orjson writes <= 255
    assert rejected(payload) == RejectReason.TOO_COMPLEX


def test_shapes_at_the_caps_pass() -> None:
    assert parse_event(nested_json(MAX_DEPTH - 2)).fields["event_simpleName"] == "ProcessRollup2"
    # attribute_flood(n) gives its element n + 2 attributes: SystemTime and a closing one
    assert parse_event(attribute_flood(MAX_ATTRIBUTES - 2)).fields["a0"] == "x"
    assert rejected(attribute_flood(MAX_ATTRIBUTES - 1)) == RejectReason.TOO_COMPLEX


def test_json_past_the_field_cap_is_too_complex() -> None:
    many = ",".join(f'"f{n}":{n}' for n in range(MAX_FIELDS + 1))
    assert rejected(f'{{"timestamp":"1",{many}}}'.encode()) == RejectReason.TOO_COMPLEX


def test_flattening_keeps_document_order_later_keys_win() -> None:
    fields = parse_event(b'{"timestamp":"1","a.b":"first","a":{"b":"second"}}').fields
    assert fields["a.b"] == "second"


def nested_xml(depth: int) -> bytes:
    """Return a Sysmon event whose EventData holds a chain of elements ``depth`` deep in all."""
    chain = b"<x>" * (depth - 3) + b"</x>" * (depth - 3)  # Event, EventData, Data are 1-3
    return sysmon("h", "2024-03-05T11:00:00Z", data=f"<Data Name='A'>{chain.decode()}</Data>")


def test_xml_nested_past_the_depth_cap_is_too_complex() -> None:
    assert parse_event(nested_xml(MAX_DEPTH)).fields["EventID"] == "1"
    assert rejected(nested_xml(MAX_DEPTH + 1)) == RejectReason.TOO_COMPLEX


def test_xml_past_the_element_cap_is_too_complex() -> None:
    comments = b"<!-- c -->" * MAX_FIELDS  # a tree walk visits comments too
    within = sysmon("h", "2024-03-05T11:00:00Z", data="<Data Name='A'>a</Data>")
    assert parse_event(within.replace(b"<EventData>", b"<EventData><!-- c -->")).fields["A"]
    assert rejected(within.replace(b"<EventData>", b"<EventData>" + comments)) == (
        RejectReason.TOO_COMPLEX
    )


def test_empty_values_are_not_extracted() -> None:
    empty = "<Data Name='User'/><Data Name='Parent'></Data><Data Name='Image'>x.exe</Data>"
    fields = parse_event(sysmon("h", "2024-03-05T11:00:00Z", data=empty)).fields
    assert "User" not in fields and "Parent" not in fields and fields["Image"] == "x.exe"


CLASSIC = FIXTURES / "rules" / "attack_data_4688_wmiprvse_classic_wineventlog.out"


def test_classic_wineventlog_text_gives_the_xml_field_names() -> None:
    first = next(r for r in read_records(CLASSIC) if b"WmiPrvSE.exe" in r.payload)
    event = parse_event(first.payload)
    fields = event.fields
    assert (fields["Channel"], fields["EventID"]) == ("Security", "4688")
    assert fields["Computer"] == "win-dc-4473022"
    assert fields["ParentProcessName"] == r"C:\Windows\System32\wbem\WmiPrvSE.exe"
    assert fields["NewProcessName"].endswith(r"\DismHost.exe")
    assert fields["SubjectUserName"] == "WIN-DC-4473022$"  # Creator Subject's, not Target's
    assert fields["TargetUserName"] == "-"
    assert "CommandLine" not in fields  # rendered empty: not extracted
    assert fields["Message"].startswith("A new process has been created.")
    assert first.payload.startswith(b"09/15/2020 11:14:23 PM\n")  # no zone: read as UTC
    assert event.time == datetime(2020, 9, 15, 23, 14, 23, tzinfo=UTC).timestamp()


def test_a_file_of_classic_events_is_read_one_event_per_record() -> None:
    records = [r.payload for r in read_records(CLASSIC)]
    assert len(records) == 8
    assert all(r.split(b"\n", 2)[1] == b"LogName=Security" for r in records)


@pytest.mark.parametrize(
    "hostile",
    [
        "LogName" + "a" * 500_000,  # a header line of letters and no "="
        "Message=x\n\tA:" + " " * 500_000 + "x",  # a labelled line of spaces
        "Message=x\n" + "A" * 500_000 + ":" + " " * 1000 + "x",  # a heading that is not one
    ],
    ids=["header-letters", "label-spaces", "heading"],
)
def test_hostile_classic_text_is_read_in_linear_time(hostile: str) -> None:
    text = f"09/15/2020 11:48:27 PM\nLogName=Security\nEventCode=4688\n{hostile}\n"
    assert parse_event(text.encode()).fields["Channel"] == "Security"  # within the test timeout


SCRIPT = 'powershell -Sta -Nop\r\n  -Window Hidden\r\n  -EncodedCommand "<blah>"'


def message_only_sysmon_20() -> bytes:
    """Return the fixture's nxlog Sysmon 20 line with only its rendered Message left, and a
    Destination script spanning three lines."""
    path = FIXTURES / "rules" / "covenant_persistwmi_otrf.json"
    line = next(json.loads(r) for r in path.read_bytes().splitlines() if b'"EventID":20' in r)
    kept = ("EventID", "Channel", "Hostname", "EventTime", "RecordNumber", "SourceName")
    message = line["Message"].replace(
        'Destination:  "powershell -Sta -Nop -Window Hidden -EncodedCommand <blah>"',
        f"Destination:  {SCRIPT}",
    )
    return json.dumps({**{k: line[k] for k in kept}, "Message": message}).encode()


def test_fields_only_in_the_rendered_message_are_recovered_whole() -> None:
    fields = parse_event(message_only_sysmon_20()).fields
    assert fields["Destination"] == SCRIPT  # all three lines
    assert (fields["Type"], fields["User"]) == ("Command Line", "shire\\pgustavo")
    assert fields["Name"] == "Microsoft-Windows-Sysmon"  # the provider's: a System name wins


def test_json_lists_and_scalars_become_json_text_and_nested_event_data_its_own_names() -> None:
    payload = (
        b'{"@timestamp": "2024-01-01T00:00:00Z", "ports": [1, [2]], "n": 5, "ok": true,'
        b' "none": null, "winlog": {"event_data": {"a.b": "x", "Image": "c.exe"}},'
        b' "Message": "Image: d.exe\\nNote: one\\ntwo"}'
    )
    fields = parse_event(payload).fields
    assert (fields["ports"], fields["n"], fields["ok"]) == ("[1,[2]]", "5", "true")
    assert "none" not in fields
    assert fields["winlog.event_data.a.b"] == fields["a.b"] == "x"  # split at the first two dots
    assert fields["Image"] == "c.exe"  # the event data wins over the rendered message
    assert fields["Note"] == "one\ntwo"  # a value runs on to the next "Name:" line


def test_json_rejections_say_why() -> None:
    with pytest.raises(Rejected) as caught:
        parse_event(b'{"a": ')
    assert caught.value.reason == RejectReason.NOT_JSON and caught.value.detail
    deep = b'{"timestamp":"1","x":' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}"
    with pytest.raises(Rejected) as caught:
        parse_event(deep)
    assert caught.value.detail == f"JSON nested deeper than {MAX_DEPTH}"
    many = ",".join(f'"f{n}":{n}' for n in range(MAX_FIELDS + 1))
    with pytest.raises(Rejected) as caught:
        parse_event(f'{{"timestamp":"1",{many}}}'.encode())
    assert caught.value.detail == f"more than {MAX_FIELDS} JSON fields"


def test_json_at_the_caps_passes() -> None:
    fields = ",".join(f'"f{n}":{n}' for n in range(MAX_FIELDS - 1))  # and the timestamp
    assert len(parse_event(f'{{"timestamp":"1",{fields}}}'.encode()).fields) == MAX_FIELDS

    def nested(opening: bytes, closing: bytes, levels: int) -> bytes:
        """Return a record whose field x holds ``levels`` containers, x itself at depth 2."""
        return b'{"timestamp":"1","x":' + opening * levels + b"1" + closing * levels + b"}"

    # the document is level 1 and x's value level 2: levels 2 to MAX_DEPTH pass
    assert parse_event(nested(b"[", b"]", MAX_DEPTH - 1)).fields["x"].startswith("[[")
    assert rejected(nested(b"[", b"]", MAX_DEPTH)) == RejectReason.TOO_COMPLEX
    assert parse_event(nested(b'{"a":', b"}", MAX_DEPTH - 2)).fields  # a leaf one level deeper
    assert rejected(nested(b'{"a":', b"}", MAX_DEPTH - 1)) == RejectReason.TOO_COMPLEX


def deep_xml(levels: int) -> bytes:
    """Return a Sysmon event with a Data element wrapped ``levels`` deep inside EventData."""
    inner = b"<x>" * levels + b"v" + b"</x>" * levels
    return SYSMON_LINE.splitlines()[0].replace(b"<EventData>", b"<EventData>" + inner, 1)


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"x" * 11, RejectReason.TOO_LARGE, "11 bytes > 10"),
        (b"<Event>\xff</Event>", RejectReason.BAD_ENCODING,
         "'utf-8' codec can't decode byte 0xff in position 7: invalid start byte"),
        (b"hello", RejectReason.NOT_XML,
         "record is neither XML, a JSON object nor WinEventLog text"),
        (b"<!DOCTYPE x><x/>", RejectReason.XML_ENTITIES,
         "DTDs and entity declarations are refused"),
        (deep_xml(40), RejectReason.TOO_COMPLEX, f"XML nested deeper than {MAX_DEPTH}"),
        (b"<Event>" + b"<a/>" * (MAX_FIELDS + 1) + b"</Event>", RejectReason.TOO_COMPLEX,
         f"more than {MAX_FIELDS} XML elements"),
        (attribute_flood(MAX_ATTRIBUTES), RejectReason.TOO_COMPLEX,
         f"over {MAX_ATTRIBUTES} attributes"),
    ],
    ids=["too-large", "encoding", "neither", "doctype", "deep", "elements", "attributes"],
)  # fmt: skip
def test_rejections_carry_their_detail(payload: bytes, reason: RejectReason, detail: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_event(payload, max_bytes=10 if reason == RejectReason.TOO_LARGE else 1 << 20)
    assert (caught.value.reason, caught.value.detail) == (reason, detail)


def test_a_syntax_error_says_where() -> None:
    with pytest.raises(Rejected) as caught:
        parse_event(b"<Event><System></Event>")
    assert "line 1" in caught.value.detail and "System" in caught.value.detail


def test_a_byte_order_mark_and_leading_blank_lines_are_skipped() -> None:
    line = SYSMON_LINE.splitlines()[0]
    assert parse_event("\ufeff \r\n".encode() + line).fields["EventID"] == "1"


def test_markup_inside_cdata_and_comments_is_not_counted_against_the_caps() -> None:
    noise = b"<![CDATA[" + b"<a x=1>" * (MAX_FIELDS + 1) + b"]]>"
    line = SYSMON_LINE.splitlines()[0]
    event = line.replace(
        b"<Data Name='RuleName'>-</Data>", b"<Data Name='RuleName'>" + noise + b"</Data>"
    )
    assert parse_event(event).fields["RuleName"].startswith("<a x=1>")
    commented = line.replace(b"<System>", b"<System><!-- a comment -->", 1)
    assert parse_event(commented).fields["EventID"] == "1"  # reading goes on past the comment


def test_user_data_keeps_non_empty_leaves_only_and_a_message_needs_text() -> None:
    payload = wmi_activity(
        b"<Op><Empty></Empty><Blank>  </Blank><!-- note --><Kept>v</Kept></Op>", b""
    )
    fields = parse_event(payload).fields
    assert fields["Kept"] == "v"
    assert not {"Empty", "Blank", "Op", "Message"} & set(fields)
    assert not [name for name in fields if "comment" in name.lower()]


def test_json_fields_refuse_a_value_that_is_not_an_object() -> None:
    with pytest.raises(Rejected) as caught:
        json_fields("[1, 2]")
    assert (caught.value.reason, caught.value.detail) == (
        RejectReason.NOT_JSON,
        "the JSON value is not an object",
    )


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("1709640000", 1709640000.0),  # epoch seconds
        ("1709640000123", 1709640000.123),  # epoch milliseconds
        ("2024-03-05 12:00:00 UTC", 1709640000.0),  # a trailing " UTC"
        ("2024-03-05T12:00:00", 1709640000.0),  # no zone: UTC
        ("2024-03-05T13:00:00+01:00", 1709640000.0),
    ],
)
def test_json_times_in_each_written_form(written: str, seconds: float) -> None:
    payload = orjson.dumps({"event_simpleName": "ProcessRollup2", "timestamp": written})
    assert parse_event(payload).time == pytest.approx(seconds)


def test_a_bad_time_names_its_field() -> None:
    with pytest.raises(Rejected) as caught:
        parse_event(b'{"event_simpleName": "x", "timestamp": "soon"}')
    assert (caught.value.reason, caught.value.detail) == (
        RejectReason.BAD_TIMESTAMP,
        "timestamp='soon'",
    )
