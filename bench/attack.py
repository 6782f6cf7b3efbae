"""An attack-sample mix for ``detect``: the public sample logs' XML events, repeated.

Every XML event of the sample logs (their XML lines, and their EVTX rendered to XML), one per
line, repeated in order to the count asked for. Much of it is process creation and PowerShell
logging (routed to rules), and events of channels no mapping covers.
"""

from __future__ import annotations

import time
from pathlib import Path

from lxml import etree

from pipeline.files import read_records

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ESCU_ENDPOINT = SAMPLE_DATA.parent / "reference" / "escu" / "detections" / "endpoint"


def write_mix(data: Path, count: int, out: Path) -> int:
    """Write ``count`` XML events from the logs under ``data`` to ``out``; return the events."""
    events = [
        b" ".join(record.payload.split())  # one event per line
        for path in sorted(data.rglob("*"))
        if path.is_file()
        for record in read_records(path)
        if record.payload.lstrip()[:1] == b"<"
    ]
    with out.open("wb") as handle:
        for number in range(count):
            handle.write(events[number % len(events)] + b"\n")
    return len(events)


def lxml_loop(path: Path) -> float:
    """Return events/s of a loop that parses every line with lxml and reads its Data fields."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    count, fields, started = 0, 0, time.perf_counter()
    with path.open("rb") as lines:
        for line in lines:
            root = etree.fromstring(line, parser)
            fields += len({data.get("Name"): data.text for data in root.iter("{*}Data")})
            count += 1
    return count / (time.perf_counter() - started)
