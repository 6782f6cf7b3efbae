"""Read raw event records from log files: XML lines, JSON lines, EVTX, and zip/tar.gz archives.

Files are streamed in chunks: memory stays flat however large the file (an XML event or a JSON
line is held whole, nothing more).
"""

from __future__ import annotations

import itertools
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

import evtx

from pipeline.wineventlog import CLASSIC_TIME, is_classic

CHUNK_BYTES = 1 << 20
_XML_EVENT_START = re.compile(rb"<Event[\s>]")
_XML_EVENT_END = b"</Event>"
_EVENT_SUFFIXES = (".evtx", ".json", ".log", ".xml", ".txt", ".raw", ".out")
_EVTX_MAGIC = b"ElfFile\x00"
_CLASSIC_TIME_LINE = re.compile(CLASSIC_TIME.pattern.encode() + rb"\r?\Z")


class FileRecord(NamedTuple):  # a tuple: one is made per event
    """One raw record and where in which file it was found."""

    payload: bytes
    location: str
    number: int  # the record's place in its file, from 0


def read_records(path: Path) -> Iterator[FileRecord]:
    """Yield every raw event record in ``path`` (a file or an archive)."""
    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    with archive.open(info) as handle:
                        yield from _member(f"{path}!{info.filename}", handle)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as archive:
            for member in archive:
                extracted = archive.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    yield from _member(f"{path}!{member.name}", extracted)
    else:
        with path.open("rb") as handle:
            yield from _member(str(path), handle)


def _member(location: str, handle: IO[bytes]) -> Iterator[FileRecord]:
    first = handle.read(CHUNK_BYTES)
    if location.lower().endswith(".evtx") or first.startswith(_EVTX_MAGIC):
        handle.seek(0)
        payloads: Iterator[bytes] = _evtx_payloads(handle)
    elif not location.lower().endswith(_EVENT_SUFFIXES):
        return
    else:
        rest = iter(lambda: handle.read(CHUNK_BYTES), b"")
        payloads = _text_payloads(first, itertools.chain([first], rest))
    for number, payload in enumerate(payloads):
        yield FileRecord(payload, location, number)


def _evtx_payloads(handle: IO[bytes]) -> Iterator[bytes]:
    for record in evtx.PyEvtxParser(handle).records():
        if record is not None:
            yield str(record["data"]).encode()


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield each line across chunk boundaries, the last one included."""
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    yield rest


def _xml_events(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield each ``<Event ...>...</Event>``: from an event's start to the first end after it."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        position = 0
        while (start := _XML_EVENT_START.search(buffer, position)) is not None:
            end = buffer.find(_XML_EVENT_END, start.start())
            if end < 0:
                position = start.start()
                break
            position = end + len(_XML_EVENT_END)
            yield buffer[start.start() : position]
        else:  # no start left: keep what could begin one
            position = max(position, len(buffer) - len(b"<Event"))
        buffer = buffer[position:]


def _classic_events(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield each classic WinEventLog event: from a time line to the next one."""
    event: list[bytes] = []
    for line in _lines(chunks):
        if _CLASSIC_TIME_LINE.match(line) and event:
            yield b"\n".join(event).strip()
            event = []
        event.append(line)
    if b"".join(event).strip():
        yield b"\n".join(event).strip()


def _text_payloads(first: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    head = first.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"<":
        yield from _xml_events(chunks)
    elif is_classic(first[:4096].decode("utf-8", "replace")):
        yield from _classic_events(chunks)
    elif head == b"{" and first.lstrip().split(b"\n", 1)[0].rstrip().endswith(b"}"):
        yield from (line.strip() for line in _lines(chunks) if line.strip())
