"""Each seed detection's finding on a fixture, expected from the upstream documentation alone.

The expected values are written from the detection as Splunk documents it (the pages in the
seed documents: its ``stats ... by`` fields, ``finding`` title and score, risk objects) and from
the raw event read by eye, with the CIM names the data source documents
(``reference/escu/data_sources``): not from ``wmiwatch detect``. Splunk semantics relied on:
``fillnull`` writes ``0`` into a missing by-field, ``security_content_ctime`` formats with
``%Y-%m-%dT%H:%M:%S``, ``drop_dm_object_name(Processes)`` strips the ``Processes.`` prefix, and
``_time`` of an XmlWinEventLog event is its ``TimeCreated/@SystemTime``.

Only the WMIC fixture is a real log (splunk/attack_data); no real 4104 log of the two PowerShell
techniques is available to the project (tests/fixtures/demo/SOURCES.md), so their fixtures are
the synthetic ones, built in the real 4104 layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.emit import build_risk_events
from pipeline.offline import detect_files
from pipeline.policy import WindowPolicy
from pipeline.rules.loader import load_rules
from tests import PROJECT_ROOT
from tests.conftest import FIXTURES

WMIC = 'wmic  /node:"localhost" process call create "cmd.exe /c esentutl.exe /y /vss c:\\windows\\ntds\\ntds.dit /d c:\\ntds.dit"'  # noqa: E501
WMIEXEC = (
    "Invoke-WMIExec -Target 10.0.0.12 -Domain CORP -Username admin "
    '-Hash F6F38B793DB6A94BA04A52F1D3EE92F0 -Command "net user backdoor P@ss /add" -verbose'
)
INVOKE_WMIMETHOD = (
    "Invoke-WmiMethod -ComputerName srv02.corp.example -Class Win32_Process -Name create "
    '-ArgumentList "cmd.exe /c whoami > C:\\Windows\\Temp\\o.txt"'
)
# The 4104 events' System fields, shared by both synthetic fixtures. signature: the Windows
# TA's name for task 2 of the PowerShell provider, "Execute a Remote Command".
POWERSHELL_4104 = {
    "signature": "Execute a Remote Command",
    "signature_id": "4104",
    "user_id": "S-1-5-21-4230534742-2542757381-3142984815-1111",
    "vendor_product": "Microsoft Windows PowerShell",
    "EventID": "4104",
    "Guid": "{a0c1853b-5c40-4b15-8766-3cf1c58f985a}",
    "Opcode": "15",
    "Name": "Microsoft-Windows-PowerShell",
    "Path": "0",  # <Data Name='Path'></Data>: no value, so fillnull's 0
    "ProcessID": "5112",
}


@dataclass(frozen=True)
class Expected:
    """What the documentation says the detection returns on one fixture."""

    fixture: Path
    rule_id: str
    title: str
    score: int
    first_time: str
    row: dict[str, str]
    risk_objects: list[tuple[str, str]]


SEEDS = {
    # Remote WMI Command Attempt v6: tstats by Processes.dest Processes.user
    # Processes.parent_process Processes.process_name Processes.process Processes.process_id
    # Processes.parent_process_id; message "A wmic.exe process $process$ contain node
    # commandline $process$ in host $dest$"; risk 36 on dest (Hostname) and user (User).
    # The log's one wmic.exe event with "node" is EventRecordID 1806.
    "remote_wmi_command_attempt": Expected(
        FIXTURES / "demo" / "sysmon_wmic_node_credential_dumping_via_copy.log",
        "272df6de-61f1-4784-877c-1fbc3e2d0838",
        f"A wmic.exe process {WMIC} contain node commandline {WMIC} in host ar-win-1",
        36,
        "2025-11-03T09:52:39.981Z",
        {
            "count": "1",
            "firstTime": "2025-11-03T09:52:39",
            "lastTime": "2025-11-03T09:52:39",
            "dest": "ar-win-1",
            "user": "AR-WIN-1\\Administrator",
            "parent_process": '"cmd.exe" /c wmic /node:"localhost" process call create '
            '"cmd.exe /c esentutl.exe /y /vss c:\\windows\\ntds\\ntds.dit /d c:\\ntds.dit"',
            "process_name": "WMIC.exe",
            "process": WMIC,
            "process_id": "2628",
            "parent_process_id": "3412",
        },
        [("system", "ar-win-1"), ("user", "AR-WIN-1\\Administrator")],
    ),
    # PowerShell Invoke WmiExec Usage v12: 4104 with *invoke-wmiexec*, fillnull, stats by
    # dest signature signature_id user_id vendor_product EventID Guid Opcode Name Path
    # ProcessID ScriptBlockId ScriptBlockText; title "PowerShell was identified running a
    # Invoke-WmiExec on $dest$."; score 50 on dest. The Invoke-SMBExec block does not count.
    "powershell_invoke_wmiexec_usage": Expected(
        FIXTURES / "demo" / "synthetic_4104_invoke_wmiexec.xml",
        "0734bd21-2769-4972-a5f1-78bb1e011224",
        "PowerShell was identified running a Invoke-WmiExec on ws07.corp.example.",
        50,
        "2024-03-05T11:02:44.000Z",
        {
            "count": "1",
            "firstTime": "2024-03-05T11:02:44",
            "lastTime": "2024-03-05T11:02:44",
            "dest": "ws07.corp.example",
            **POWERSHELL_4104,
            "ScriptBlockId": "0f6f2c1e-93a4-4d7e-b1f5-5a9d2e7c4b30",
            "ScriptBlockText": WMIEXEC,
        },
        [("system", "ws07.corp.example")],
    ),
    # Remote Process Instantiation via WMI and PowerShell Script Block v12: Invoke-WmiMethod
    # with -ComputerName, -Class Win32_Process and -Name create; the same by-fields; title
    # "A process was started on a remote endpoint from $dest$ by abusing WMI using
    # PowerShell.exe"; score 50 on dest. The fixture's WMI query without -Name create does not.
    "remote_process_instantiation_via_wmi_and_powershell_script_block": Expected(
        FIXTURES / "demo" / "synthetic_4104_invoke_wmimethod_remote_create.xml",
        "2a048c14-4634-11ec-a618-3e22fbd008af",
        "A process was started on a remote endpoint from ws01.corp.example by abusing WMI "
        "using PowerShell.exe",
        50,
        "2024-03-05T10:15:02.123Z",  # SystemTime 10:15:02.1234567, to the millisecond
        {
            "count": "1",
            "firstTime": "2024-03-05T10:15:02",
            "lastTime": "2024-03-05T10:15:02",
            "dest": "ws01.corp.example",
            **POWERSHELL_4104,
            "ScriptBlockId": "965150b4-b107-4cce-9d30-1d3c55a8a085",
            "ScriptBlockText": INVOKE_WMIMETHOD,
        },
        [("system", "ws01.corp.example")],
    ),
}


@pytest.mark.parametrize("name", SEEDS)
def test_the_seed_detection_returns_what_its_documentation_says(name: str) -> None:
    expected = SEEDS[name]
    rules = load_rules(PROJECT_ROOT / "rules")
    (rule,) = [r for r in rules if r.id == expected.rule_id]
    report = detect_files([expected.fixture], rules, WindowPolicy())
    (finding,) = [f for f in report.findings if f.rule_id == expected.rule_id]
    got: dict[str, Any] = {
        "title": finding.title,
        "score": finding.risk_score,
        "first_time": finding.first_time,
        "row": dict(finding.fields),
    }
    assert got == {
        "title": expected.title,
        "score": expected.score,
        "first_time": expected.first_time,
        "row": expected.row,
    }
    risk = [
        (r.risk_object_type, r.risk_object, r.risk_score) for r in build_risk_events(rule, finding)
    ]
    assert risk == [(kind, value, expected.score) for kind, value in expected.risk_objects]
