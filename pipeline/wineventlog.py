"""Classic WinEventLog text (Splunk's non-XML Windows format) into the XML event's fields.

One event is a time line, ``Key=Value`` header lines, then ``Message=`` and the rendered message
to the end::

    09/15/2020 11:48:27 PM
    LogName=Security
    EventCode=4688
    ComputerName=win-dc.example
    RecordNumber=528213
    Message=A new process has been created.

    Creator Subject:
        Account Name:		Administrator
    ...

The header names become the XML System names (``LogName`` is ``Channel``, ``EventCode`` is
``EventID``, ...), so the source mappings apply unchanged. The rendered message's ``Label: value``
lines become the EventData names where this module knows them (per event code, per section:
"Account Name" under "Creator Subject" is ``SubjectUserName``), otherwise the Splunk add-on's
name (``Account_Name``; the first value wins). The time line has no zone: it is read as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

CLASSIC_TIME = re.compile(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2} [AP]M")
_START = re.compile(r"\A[ \t\r\n\ufeff]*(" + CLASSIC_TIME.pattern + r")\r?\n(?=\w+=)")
_SECTION = re.compile(r"([A-Za-z][^:\t]*):\s*$")
_LABELLED = re.compile(r"\t+([A-Za-z][^:\t]*):(.*)")
HEADER_NAMES = {
    "LogName": "Channel",
    "EventCode": "EventID",
    "ComputerName": "Computer",
    "RecordNumber": "EventRecordID",
    "SourceName": "Name",
}
# (section, label) -> EventData name, per event code (Security 4688, process creation).
RENDERED_NAMES: dict[str, dict[tuple[str, str], str]] = {
    "4688": {
        ("Creator Subject", "Security ID"): "SubjectUserSid",
        ("Creator Subject", "Account Name"): "SubjectUserName",
        ("Creator Subject", "Account Domain"): "SubjectDomainName",
        ("Creator Subject", "Logon ID"): "SubjectLogonId",
        ("Target Subject", "Security ID"): "TargetUserSid",
        ("Target Subject", "Account Name"): "TargetUserName",
        ("Target Subject", "Account Domain"): "TargetDomainName",
        ("Target Subject", "Logon ID"): "TargetLogonId",
        ("Process Information", "New Process ID"): "NewProcessId",
        ("Process Information", "New Process Name"): "NewProcessName",
        ("Process Information", "Token Elevation Type"): "TokenElevationType",
        ("Process Information", "Mandatory Label"): "MandatoryLabel",
        ("Process Information", "Creator Process ID"): "ProcessId",
        ("Process Information", "Creator Process Name"): "ParentProcessName",
        ("Process Information", "Process Command Line"): "CommandLine",
    },
}


def is_classic(text: str) -> bool:
    """Return whether ``text`` starts like a classic WinEventLog event."""
    return _START.match(text) is not None


def classic_fields(text: str) -> dict[str, str]:
    """Return the fields of one classic event (empty values are not extracted)."""
    start = _START.match(text)
    assert start is not None, "not classic WinEventLog text: check is_classic first"
    moment = datetime.strptime(start.group(1), "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC)
    fields = {"SystemTime": moment.isoformat().replace("+00:00", "Z")}
    header, _, message = text[start.end() :].partition("Message=")
    for line in header.splitlines():
        name, equals, value = line.partition("=")
        if equals and name.isalpha() and value.strip():
            fields.setdefault(HEADER_NAMES.get(name, name), value.strip())
    if message:
        fields["Message"] = message.strip()
        names = RENDERED_NAMES.get(fields.get("EventID", ""), {})
        fields.update(_rendered(message, names, fields))
    return fields


def _rendered(
    message: str, names: dict[tuple[str, str], str], known: dict[str, str]
) -> dict[str, str]:
    """Return the ``Label: value`` lines of a rendered message under their field names."""
    found: dict[str, str] = {}
    section = ""
    for line in message.splitlines():
        labelled = _LABELLED.match(line)
        if labelled is None:
            heading = _SECTION.match(line)
            section = heading[1].strip() if heading else section
            continue
        label, value = labelled[1].strip(), labelled[2].strip()
        name = names.get((section, label), label.replace(" ", "_"))
        if value and name not in known:
            found.setdefault(name, value)
    return found
