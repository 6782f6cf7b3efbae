"""Read raw event records from log files: XML lines, JSON lines, EVTX, and zip/tar.gz archives."""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import evtx

_XML_EVENT_START = re.compile(rb"<Event[\s>]")
_XML_EVENT_END = b"</Event>"
_EVENT_SUFFIXES = (".evtx", ".json", ".log", ".xml", ".txt", ".raw", ".out")


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One raw record and where in which file it was found."""

    payload: bytes
    location: str
    index: int


def read_records(path: Path) -> Iterator[FileRecord]:
    """Yield every raw event record in ``path`` (a file or an archive)."""
    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield from _member(f"{path}!{info.filename}", archive.read(info))
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as archive:
            for member in archive:
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None:
                    yield from _member(f"{path}!{member.name}", handle.read())
    else:
        yield from _member(str(path), path.read_bytes())


def _member(location: str, data: bytes) -> Iterator[FileRecord]:
    if location.lower().endswith(".evtx") or data.startswith(b"ElfFile\x00"):
        payloads: Iterator[bytes] = _evtx_payloads(data)
    elif not location.lower().endswith(_EVENT_SUFFIXES):
        return
    else:
        payloads = _text_payloads(data)
    for index, payload in enumerate(payloads):
        yield FileRecord(payload, location, index)


def _evtx_payloads(data: bytes) -> Iterator[bytes]:
    for record in evtx.PyEvtxParser(io.BytesIO(data)).records():
        if record is not None:
            yield str(record["data"]).encode()


def _xml_events(data: bytes) -> Iterator[bytes]:
    """Yield each ``<Event ...>...</Event>`` (a plain search: a lazy regex is slow on 2 KB)."""
    start = _XML_EVENT_START.search(data)
    while start is not None:
        end = data.find(_XML_EVENT_END, start.start())
        if end < 0:
            return
        end += len(_XML_EVENT_END)
        yield data[start.start() : end]
        start = _XML_EVENT_START.search(data, end)


def _text_payloads(data: bytes) -> Iterator[bytes]:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"<":
        yield from _xml_events(data)
    elif head == b"{" and data.lstrip().split(b"\n", 1)[0].rstrip().endswith(b"}"):
        yield from (line.strip() for line in data.splitlines() if line.strip())
