"""Normalization to CIM from the mapping files."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.event import Event
from pipeline.normalize import TRANSFORMS, FieldSpec, SourceMapping, default_normalizer
from pipeline.parse import parse_event
from pipeline.rejects import Rejected, RejectReason
from tests.conftest import FIXTURES
from tests.synthetic_hostile import sysmon


def normalized(payload: bytes) -> dict[str, str]:
    return default_normalizer().normalize(parse_event(payload)).fields


def test_sysmon_1_maps_to_endpoint_processes() -> None:
    line = (FIXTURES / "demo" / "sysmon_wmic_node_credential_dumping_via_copy.log").read_bytes()
    fields = normalized(line.splitlines()[0])
    assert fields["_datamodel"] == "Endpoint.Processes"
    assert fields["dest"] == "ar-win-1"
    assert fields["process_name"] == "esentutl.exe"
    assert fields["parent_process_name"] == "cmd.exe"
    assert fields["parent_process"].startswith("cmd.exe /c esentutl.exe")
    assert fields["user"] == "AR-WIN-1\\Administrator"
    assert fields["source"] == "XmlWinEventLog:Microsoft-Windows-Sysmon/Operational"


def test_security_4688_maps_as_its_data_source_says() -> None:
    fields = normalized(
        b'{"Hostname":"dc1","EventID":4688,"Channel":"Security","EventTime":"2020-01-01 00:00:00",'
        b'"NewProcessId":"0x13d8","ProcessId":"0xd44","NewProcessName":"C:\\\\W\\\\WMIC.exe",'
        b'"ParentProcessName":"C:\\\\W\\\\cmd.exe","SubjectUserName":"bob",'
        b'"SubjectUserSid":"S-1-5-21-1-2-3-1104",'
        b'"SubjectDomainName":"CORP","CommandLine":"wmic /node:x os get"}'
    )
    assert (fields["process_id"], fields["parent_process_id"]) == ("5080", "3396")
    assert fields["user"] == "S-1-5-21-1-2-3-1104"  # SubjectUserSid: Processes.user
    assert fields["process_name"] == "WMIC.exe"
    assert "original_file_name" not in fields  # 4688 has none; Splunk's is null
    assert fields["process"] == "wmic /node:x os get"


def test_crowdstrike_processrollup2() -> None:
    payload = (
        FIXTURES / "rules" / "synthetic_crowdstrike_processrollup2_wmic_node.json"
    ).read_bytes()
    fields = normalized(payload)
    assert (fields["EventCode"], fields["dest"], fields["process_name"]) == (
        "ProcessRollup2",
        "ws08",
        "WMIC.exe",
    )
    assert (
        fields["user"] == "S-1-5-21-1111111111-2222222222-3333333333-1105"
    )  # UserSid, not UserName
    assert "original_file_name" not in fields  # the data source maps none


def test_wmi_activity_message_is_rebuilt_only_when_absent() -> None:
    base = (
        b"<Event><System><EventID>5861</EventID><TimeCreated SystemTime='2024-01-01T00:00:00Z'/>"
        b"<Channel>Microsoft-Windows-WMI-Activity/Operational</Channel><Computer>h</Computer>"
        b"</System><UserData><B><Namespace>//./root/subscription</Namespace><ESS>f</ESS>"
        b'<CONSUMER>CommandLineEventConsumer="e"</CONSUMER><PossibleCause>Binding x</PossibleCause>'
        b"</B></UserData>%s</Event>"
    )
    rebuilt = normalized(base % b"")["Message"]
    assert rebuilt.startswith("Namespace = //./root/subscription; Eventfilter = f (refer")
    assert 'Consumer = CommandLineEventConsumer="e"; PossibleCause = Binding x' in rebuilt
    kept = b"<RenderingInfo><Message>as rendered</Message></RenderingInfo>"
    assert normalized(base % kept)["Message"] == "as rendered"


def test_unknown_channels_are_rejected() -> None:
    with pytest.raises(Rejected) as caught:
        normalized(b'{"Channel":"Application","EventID":1000,"TimeCreated":"2024-01-01"}')
    assert caught.value.reason == RejectReason.UNKNOWN_SOURCE


def sysmon_event(code: int, data: str) -> bytes:
    """Return a Sysmon event of ``code`` (the XmlWinEventLog layout of the fixtures)."""
    return sysmon("ws01", "2024-05-01T10:00:00Z", code=code, data=data)


def test_sysmon_registry_events_map_to_endpoint_registry() -> None:
    data = (
        "<Data Name='EventType'>SetValue</Data><Data Name='ProcessGuid'>{1}</Data>"
        "<Data Name='ProcessId'>42</Data><Data Name='Image'>C:\\Windows\\regedit.exe</Data>"
        "<Data Name='TargetObject'>HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\evil"
        "</Data>"
        "<Data Name='Details'>C:\\evil.exe</Data><Data Name='User'>CORP\\ann</Data>"
    )
    fields = normalized(sysmon_event(13, data))
    assert fields["_datamodel"] == "Endpoint.Registry"
    assert (
        fields["registry_path"].endswith("\\Run\\evil") and fields["registry_value_name"] == "evil"
    )
    assert (fields["registry_value_data"], fields["process_name"], fields["user"]) == (
        "C:\\evil.exe",
        "regedit.exe",
        "CORP\\ann",
    )


def test_sysmon_file_events_map_to_endpoint_filesystem() -> None:
    data = (
        "<Data Name='Image'>C:\\Windows\\explorer.exe</Data>"
        "<Data Name='TargetFilename'>C:\\Users\\ann\\evil.hta</Data>"
    )
    created, deleted = normalized(sysmon_event(11, data)), normalized(sysmon_event(23, data))
    assert created["_datamodel"] == deleted["_datamodel"] == "Endpoint.Filesystem"
    assert (created["file_name"], created["action"], deleted["action"]) == (
        "evil.hta",
        "created",
        "deleted",
    )


def test_every_sysmon_event_code_routes() -> None:
    codes = {code for source, code, _ in default_normalizer().route_keys() if source == "sysmon"}
    assert {str(n) for n in range(1, 30)} <= codes


def security_event(code: int, data: str) -> bytes:
    """Return a Security event of ``code`` in the XmlWinEventLog layout."""
    return (
        f"<Event><System><EventID>{code}</EventID><TimeCreated SystemTime='2024-05-01T10:00:00Z'/>"
        f"<Channel>Security</Channel><Computer>dc1</Computer></System><EventData>{data}"
        "</EventData></Event>"
    ).encode()


def test_security_object_access_and_registry_events_map_to_their_datamodels() -> None:
    access = normalized(
        security_event(
            4663,
            "<Data Name='ObjectName'>C:\\\\secret\\\\plan.docx</Data>"
            "<Data Name='ProcessName'>C:\\\\Windows\\\\notepad.exe</Data>",
        )
    )
    assert (access["_datamodel"], access["file_name"], access["process_name"]) == (
        "Endpoint.Filesystem",
        "plan.docx",
        "notepad.exe",
    )
    registry = normalized(
        security_event(
            4657,
            "<Data Name='ObjectName'>\\\\REGISTRY\\\\MACHINE\\\\SOFTWARE\\\\Run</Data>"
            "<Data Name='ObjectValueName'>evil</Data><Data Name='NewValue'>C:\\\\e.exe</Data>",
        )
    )
    assert (registry["_datamodel"], registry["registry_value_name"]) == (
        "Endpoint.Registry",
        "evil",
    )


def test_the_security_event_codes_the_corpus_reads_route() -> None:
    codes = {code for source, code, _ in default_normalizer().route_keys() if source == "security"}
    assert {"4624", "4625", "4663", "4657", "4688", "4698", "4768", "4769", "5136", "5145"} <= codes


def test_system_service_installs_keep_their_fields() -> None:
    fields = normalized(
        b'{"Channel":"System","EventID":7045,"TimeCreated":"2024-01-01","Hostname":"ws1",'
        b'"ServiceName":"PSEXESVC","ImagePath":"%SystemRoot%\\\\PSEXESVC.exe",'
        b'"StartType":"demand start","AccountName":"LocalSystem"}'
    )
    assert (fields["EventCode"], fields["service_name"], fields["user"], fields["dest"]) == (
        "7045",
        "PSEXESVC",
        "LocalSystem",
        "ws1",
    )


@pytest.mark.parametrize(
    ("transform", "argument", "fields", "expected"),
    [
        ("hex_to_int", "pid", {"pid": "0x1f4"}, "500"),
        ("hex_to_int", "pid", {"pid": "19"}, "19"),  # decimal stays decimal
        ("hex_to_int", "pid", {"pid": "n/a"}, "n/a"),  # not a number: kept as written
        ("hex_to_int", "pid", {}, None),
        ("template", "{a}-{b}", {"a": "1", "b": "2"}, "1-2"),
        ("template", "{a}-{b}", {"a": "1"}, None),  # a missing input: no field
        ("basename", "image", {"image": "C:\\\\Windows\\\\wmic.exe"}, "wmic.exe"),
        ("basename", "image", {}, None),
        ("first", ["a", "b"], {"a": "", "b": "2"}, "2"),  # the first non-empty one
        ("first", ["a", "b"], {}, None),
        ("copy", "a", {"a": "1"}, "1"),
        ("value", "fixed", {}, "fixed"),
    ],
)
def test_each_transform(
    transform: str, argument: str | list[str], fields: dict[str, str], expected: str | None
) -> None:
    assert TRANSFORMS[transform](fields, argument) == expected


def test_a_field_spec_names_its_one_transform_and_its_inputs() -> None:
    spec = FieldSpec.model_validate({"template": "{Domain}\\\\{User}"})
    assert spec.transform_items() == [("template", "{Domain}\\\\{User}")]
    assert spec.inputs() == {"Domain", "User"} and not spec.keeps_substring
    assert spec.transform() == (TRANSFORMS["template"], "{Domain}\\\\{User}")
    assert FieldSpec.model_validate({"first": ["a", "b"]}).inputs() == {"a", "b"}
    assert FieldSpec.model_validate({"copy": "a"}).inputs() == {"a"}
    assert FieldSpec.model_validate({"value": "x"}).inputs() == set()
    assert FieldSpec.model_validate({"basename": "Image"}).keeps_substring
    with pytest.raises(ValidationError, match="give exactly one of copy, first, basename"):
        FieldSpec.model_validate({"copy": "a", "value": "b"})


def test_field_names_are_the_mapped_and_the_read_fields_of_a_code() -> None:
    security = default_normalizer().by_source("security")
    names = security.field_names("4688")
    assert {"EventID", "Channel", "process_name", "NewProcessName", "dest", "Computer"} <= names
    assert "ParentProcessName" in names and "CommandLine" in names
    assert "NewProcessName" not in security.field_names("no-such-code")  # the common ones only
    assert "dest" in security.field_names("no-such-code")


def test_an_event_code_without_its_own_fields_gets_the_common_ones() -> None:
    fields = normalized(sysmon("h", "2024-03-05T11:00:00Z", code=3, data=""))
    assert (fields["EventCode"], fields["dest"]) == ("3", "h")
    assert "_datamodel" not in fields


def test_route_keys_give_what_is_known_before_reading_an_event() -> None:
    keys = {(source, code): known for source, code, known in default_normalizer().route_keys()}
    sysmon_1 = keys["sysmon", "1"]
    assert sysmon_1["EventCode"] == sysmon_1["EventID"] == "1"
    assert sysmon_1["_datamodel"] == "Endpoint.Processes"
    assert sysmon_1["source"] == "XmlWinEventLog:Microsoft-Windows-Sysmon/Operational"
    assert keys["wmi_activity", "5861"]["_datamodel"] == ""
    assert "dest" not in sysmon_1  # copied from the event: not known before reading it


def mapping(**common: dict[str, object]) -> SourceMapping:
    """Return a one-source mapping with the ``common`` field specs."""
    return SourceMapping.model_validate(
        {
            "source": "test",
            "topic": "t",
            "identify": {"field": "Channel", "equals": "Test"},
            "event_code": "EventID",
            "common": common,
            "events": {"1": {"datamodel": "Endpoint.Processes"}},
        }
    )


def test_a_kept_field_skips_only_its_own_step() -> None:
    kept = mapping(a={"copy": "x", "keep_existing": True}, b={"copy": "y"})
    event = Event({"EventID": "1", "a": "mine", "x": "theirs", "y": "b"}, 0.0, "")
    kept.apply(event)
    assert (event.fields["a"], event.fields["b"], event.datamodel) == (
        "mine",
        "b",
        "Endpoint.Processes",
    )
    assert event.fields["_datamodel"] == "Endpoint.Processes" and event.source == "test"


def test_an_event_without_its_code_or_source_is_rejected_saying_so() -> None:
    with pytest.raises(Rejected) as caught:
        mapping().apply(Event({"Channel": "Test"}, 0.0, ""))
    assert (caught.value.reason, caught.value.detail) == (
        RejectReason.MISSING_FIELD,
        "test: no EventID",
    )
    for fields, named in (({"Channel": "Application"}, "Application"), ({}, "?")):
        with pytest.raises(Rejected) as caught:
            default_normalizer().identify(fields)
        assert caught.value.detail == f"no mapping for channel {named!r}"
