"""Parse one raw record (XmlWinEventLog text, a JSON object, classic WinEventLog text)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from lxml import etree

from pipeline.event import Event
from pipeline.policy import MAX_EVENT_BYTES
from pipeline.rejects import Rejected, RejectReason
from pipeline.wineventlog import classic_fields, is_classic

# Without huge_tree, libxml2 refuses nesting deeper than 256 and text nodes over 10 MB.
_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=False
)
_FORBIDDEN_XML = (b"<!DOCTYPE", b"<!ENTITY")
# Shape caps: Windows events hold a few dozen fields a few levels deep. Anything past these is
# refused (``too_complex``) before work that grows faster than its size (lxml reads an
# element's attributes in quadratic time).
MAX_DEPTH = 32
MAX_ATTRIBUTES = 64  # per element
MAX_FIELDS = 2048
# An element at depth MAX_DEPTH + 1 (the root is at 1); the nodes a tree walk would visit; an
# element with too many attributes. A tag or a node needs a '<', an attribute a '='.
_TOO_DEEP = etree.XPath("boolean(" + "/*" * (MAX_DEPTH + 1) + ")")
_TOO_MANY = etree.XPath(f"count(//* | //comment() | //processing-instruction()) > {MAX_FIELDS}")
_CROWDED = etree.XPath(f"boolean(//*[count(@*) > {MAX_ATTRIBUTES}])")

# JSON shippers name the XML System fields differently; first alias present wins.
_JSON_ALIASES: dict[str, tuple[str, ...]] = {
    "Computer": ("Hostname", "winlog.computer_name", "computer_name"),
    "EventID": ("winlog.event_id", "event_id"),
    "Channel": ("winlog.channel",),
    "EventRecordID": ("RecordNumber", "winlog.record_id"),
    "Name": ("SourceName", "winlog.provider_name"),
    "Guid": ("ProviderGuid", "winlog.provider_guid"),
    "Message": ("message",),
    "UserID": ("winlog.user.identifier",),
}
_JSON_NESTED_PREFIXES = ("winlog.event_data.", "winlog.user_data.")
# "Name: value" lines of a rendered Message (Sysmon style); nxlog drops EventData fields whose
# names differ from System fields only by case (ProcessId vs ProcessID), the Message keeps them,
# and some shippers keep only the Message. A value runs on over the lines up to the next name
# (a WMI consumer's Destination may be a multi-line script).
_MESSAGE_FIELD = re.compile(r"([A-Za-z]+): ?(.*)", re.DOTALL)
_TIME_FIELDS = ("SystemTime", "@timestamp", "TimeCreated", "EventTime", "timestamp")


def parse_event(payload: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse a raw record; raise Rejected with a reason when it cannot be read."""
    if len(payload) > max_bytes:
        raise Rejected(RejectReason.TOO_LARGE, f"{len(payload)} bytes > {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejected(RejectReason.BAD_ENCODING, str(error)) from None
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<"):
        fields = _xml_fields(payload)
    elif stripped.startswith("{"):
        fields = json_fields(stripped)
    elif is_classic(stripped):
        fields = classic_fields(stripped)
        if len(fields) > MAX_FIELDS:
            raise Rejected(RejectReason.TOO_COMPLEX, f"more than {MAX_FIELDS} fields")
    else:
        raise Rejected(
            RejectReason.NOT_XML, "record is neither XML, a JSON object nor WinEventLog text"
        )
    return Event(fields=fields, time=event_time(fields), raw=text)


@functools.lru_cache(maxsize=1024)  # events repeat a few dozen tag names; bounded: untrusted
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_fields(payload: bytes) -> dict[str, str]:
    if b"<!" in payload and any(marker in payload for marker in _FORBIDDEN_XML):
        raise Rejected(RejectReason.XML_ENTITIES, "DTDs and entity declarations are refused")
    try:
        root = etree.fromstring(payload.strip(), parser=_XML_PARSER)
    except etree.XMLSyntaxError as error:
        raise Rejected(RejectReason.NOT_XML, str(error)) from None
    _check_xml_shape(payload, root)
    fields: dict[str, str] = {}
    for section in root:
        if not isinstance(section.tag, str):
            continue  # a comment or processing instruction
        name = _local(section.tag)
        if name == "System":
            _system_fields(section, fields)
        elif name == "EventData":
            for data in section:
                key = data.get("Name")
                if key and (text := data.text):  # Splunk extracts no empty value
                    fields[key] = text
        elif name == "UserData":
            for leaf in section.iter():
                text = (leaf.text or "").strip()
                if len(leaf) == 0 and isinstance(leaf.tag, str) and text:
                    fields[_local(leaf.tag)] = text
        elif name == "RenderingInfo":
            message = section.find("{*}Message")
            if message is not None and message.text:
                fields["Message"] = message.text
    return fields


def _check_xml_shape(payload: bytes, root: etree._Element) -> None:
    """Refuse an element tree past the caps (compiled XPath); byte counts bound it cheaply first."""
    if payload.count(b"<") > MAX_DEPTH and _TOO_DEEP(root):
        raise Rejected(RejectReason.TOO_COMPLEX, f"XML nested deeper than {MAX_DEPTH}")
    if payload.count(b"<") > MAX_FIELDS and _TOO_MANY(root):
        raise Rejected(RejectReason.TOO_COMPLEX, f"more than {MAX_FIELDS} XML elements")
    if payload.count(b"=") > MAX_ATTRIBUTES and _CROWDED(root):
        raise Rejected(RejectReason.TOO_COMPLEX, f"over {MAX_ATTRIBUTES} attributes")


def _system_fields(system: etree._Element, fields: dict[str, str]) -> None:
    for child in system:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        text = child.text
        if text and (text := text.strip()):
            fields[_local(tag)] = text
        attributes = child.attrib
        if attributes:
            for attribute, value in attributes.items():
                fields.setdefault(str(attribute), str(value))


def json_fields(text: str) -> dict[str, str]:
    """Return the flat fields of a JSON record, as ``parse_event`` reads them."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise Rejected(RejectReason.NOT_JSON, str(error)) from None
    if not isinstance(document, dict):
        raise Rejected(RejectReason.NOT_JSON, "the JSON value is not an object")
    flat = _flatten(document)
    for name, aliases in _JSON_ALIASES.items():
        if name not in flat:
            found = next((flat[a] for a in aliases if a in flat), None)
            if found is not None:
                flat[name] = found
    for key in [k for k in flat if k.startswith(_JSON_NESTED_PREFIXES)]:
        flat.setdefault(key.split(".", 2)[2], flat[key])
    for name, value in _message_fields(flat.get("Message", "")):
        if len(flat) >= MAX_FIELDS:
            break
        flat.setdefault(name, value)
    return flat


def _message_fields(message: str) -> Iterator[tuple[str, str]]:
    """Yield the ``Name: value`` fields of a rendered message, multi-line values whole."""
    name, value = "", []
    for line in message.splitlines(keepends=True):
        field = _MESSAGE_FIELD.fullmatch(line)
        if field is None:
            value.append(line)
            continue
        if name:
            yield name, "".join(value).strip()
        name, value = field[1], [field[2]]
    if name:
        yield name, "".join(value).strip()


def _flatten(document: dict[str, Any]) -> dict[str, str]:
    """Flatten nested objects to dotted keys (lists stay JSON text), iteratively, within caps."""
    flat: dict[str, str] = {}
    stack: list[tuple[str, Any, int]] = [("", document, 1)]
    while stack:
        prefix, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Rejected(RejectReason.TOO_COMPLEX, f"JSON nested deeper than {MAX_DEPTH}")
        if isinstance(value, dict):
            items = [(f"{prefix}{key}.", item, depth + 1) for key, item in value.items()]
            stack.extend(reversed(items))  # depth first, in document order: later keys win
        elif isinstance(value, list):
            _check_depth(value, depth)
            flat[prefix[:-1]] = orjson.dumps(value).decode()
        elif value is not None:
            flat[prefix[:-1]] = value if isinstance(value, str) else orjson.dumps(value).decode()
        if len(flat) > MAX_FIELDS:
            raise Rejected(RejectReason.TOO_COMPLEX, f"more than {MAX_FIELDS} JSON fields")
    return flat


def _check_depth(value: list[Any], depth: int) -> None:
    """Refuse a list holding containers nested past the depth cap (iteratively)."""
    stack: list[tuple[list[Any] | dict[str, Any], int]] = [(value, depth)]
    while stack:
        node, level = stack.pop()
        if level > MAX_DEPTH:
            raise Rejected(RejectReason.TOO_COMPLEX, f"JSON nested deeper than {MAX_DEPTH}")
        items = node.values() if isinstance(node, dict) else node
        stack.extend((item, level + 1) for item in items if isinstance(item, dict | list))


def event_time(fields: dict[str, str]) -> float:
    """Return the event time in epoch seconds from the first time field present."""
    for name in _TIME_FIELDS:
        value = fields.get(name)
        if value:
            return _to_epoch(name, value)
    raise Rejected(RejectReason.MISSING_FIELD, f"no time field (one of {', '.join(_TIME_FIELDS)})")


def _to_epoch(name: str, value: str) -> float:
    try:
        if value.isdigit():
            number = int(value)
            return number / 1000 if number > 100_000_000_000 else float(number)
        return _parse_iso(value)
    except (ValueError, OverflowError):
        raise Rejected(RejectReason.BAD_TIMESTAMP, f"{name}={value[:64]!r}") from None


def _parse_iso(value: str) -> float:
    moment = datetime.fromisoformat(value.strip().removesuffix(" UTC"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
