"""A busy Windows fleet's event stream, for the benchmark and the crash/restart test.

Real events of each kind (tests/fixtures/fleet: Sysmon 1/3/5/7/10/11/12/13/22 and Security
4624/4688 from public logs), a little PowerShell 4104, and rare WMI attacks (wmic /node:,
Invoke-WMIExec) sprinkled in. Host names and times vary; each event keeps its own event code.
"""

from __future__ import annotations

import random
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from pipeline.files import read_records
from pipeline.normalize import default_normalizer
from pipeline.parse import parse_event

PROJECT_ROOT = Path(__file__).resolve().parent.parent

FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
BACKGROUND = FIXTURES / "fleet" / "real_sysmon_security_background_one_line.log"
SYSMON_MIX = {"1": 10, "3": 15, "5": 5, "7": 20, "10": 10, "11": 8, "12": 7, "13": 7, "22": 5}
SECURITY_MIX = {"4624": 6, "4688": 4}
POWERSHELL_SHARE, ATTACK_SHARE = 2.9, 0.1


def background() -> dict[tuple[str, str], list[bytes]]:
    """Return the real background events by (source, EventCode), as the normalizer reads them."""
    normalizer = default_normalizer()
    kinds: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for record in read_records(BACKGROUND):
        event = normalizer.normalize(parse_event(record.payload))
        kinds[event.source, event.fields["EventCode"]].append(record.payload)
    return kinds


def templates() -> dict[str, list[bytes]]:
    """Return the PowerShell event and the attacks to sprinkle in."""
    sysmon = FIXTURES / "demo" / "sysmon_wmic_node_credential_dumping_via_copy.log"
    lines = [record.payload for record in read_records(sysmon)]
    powershell = (FIXTURES / "demo" / "synthetic_4104_invoke_wmiexec.xml").read_bytes()
    return {
        "powershell": [powershell.splitlines()[1]],
        "attack": [line for line in lines if b"/node:" in line] + [powershell.splitlines()[0]],
    }


def events(
    count: int, seed: int = 1, per_second: int = 1000, hosts: int = 2000
) -> Iterator[tuple[str, str, bytes]]:
    """Yield (source, host, payload) for ``count`` events of the fleet mix from ``hosts``
    hosts, ``per_second`` events per second of event time."""
    pick = random.Random(seed)
    sprinkled = templates()
    base = {
        **background(),
        ("powershell", "4104"): sprinkled["powershell"],
        ("attack", ""): sprinkled["attack"],
    }
    kinds = [("sysmon", code) for code in SYSMON_MIX] + [("security", c) for c in SECURITY_MIX]
    kinds += [("powershell", "4104"), ("attack", "")]
    weights = [*SYSMON_MIX.values(), *SECURITY_MIX.values(), POWERSHELL_SHARE, ATTACK_SHARE]
    start = time.time() - count / per_second
    for number in range(count):
        kind = pick.choices(kinds, weights)[0]
        host = f"ws{pick.randrange(hosts):04d}.corp.example"
        payload = vary(pick.choice(base[kind]), host, start + number / per_second)
        source = {"attack": "powershell" if b"4104" in payload[:400] else "sysmon"}.get(kind[0])
        yield source or kind[0], host, payload


def vary(payload: bytes, host: str, moment: float) -> bytes:
    """Return ``payload`` from ``host`` at ``moment`` (epoch seconds, millisecond precision)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    payload = re.sub(
        rb"SystemTime=(['\"])[^'\"]+\1",
        f"SystemTime='{stamp}.{int(moment * 1000) % 1000:03d}0000Z'".encode(),
        payload,
    )
    return re.sub(rb"<Computer>[^<]*</Computer>", f"<Computer>{host}</Computer>".encode(), payload)


def flood(count: int, per_second: int = 1000) -> Iterator[tuple[str, str, bytes]]:
    """Yield ``count`` Sysmon events that match rules (``wmic /node:``), each from its own host."""
    attack = next(line for line in templates()["attack"] if b"/node:" in line)
    start = time.time() - count / per_second
    for number in range(count):
        host = f"flood{number:07d}.corp.example"
        yield "sysmon", host, vary(attack, host, start + number / per_second)
