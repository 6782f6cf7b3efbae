"""OCSF Detection Findings: valid against the OCSF schema, open until reviewed, rich evidence."""

from __future__ import annotations

import msgspec
import orjson
import pytest
from jsonschema import Draft202012Validator, ValidationError

from pipeline.ocsf import to_ocsf
from pipeline.records import FINDING, Finding
from tests import PROJECT_ROOT

GOLDEN = PROJECT_ROOT / "tests" / "golden"
SCHEMA = orjson.loads(
    (PROJECT_ROOT / "topics" / "schemas" / "ocsf-detection-finding.json").read_bytes()
)
OCSF = Draft202012Validator(SCHEMA)


def golden_findings() -> list[Finding]:
    return [
        FINDING.decode(line)
        for path in sorted(GOLDEN.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def test_the_golden_findings_in_every_status_are_valid_ocsf_and_stay_new() -> None:
    findings = golden_findings()
    assert len(findings) >= 10
    for finding in findings:
        for status in ("new", "update", "final"):
            ocsf = to_ocsf(msgspec.structs.replace(finding, status=status))
            OCSF.validate(ocsf)
            assert (ocsf["status_id"], ocsf["status"]) == (1, "New")  # closing resolves nothing
            assert ocsf["activity_id"] == {"new": 1, "update": 2, "final": 3}[status]
            assert ocsf["type_uid"] == 200400 + ocsf["activity_id"]
            assert ocsf["is_alert"] is (status == "new")


def test_the_schema_refuses_what_ocsf_does_not_define() -> None:
    ocsf = to_ocsf(golden_findings()[0])
    for broken in (
        {**ocsf, "status_id": 7},
        {**ocsf, "evidences": [{"process": {"name": "x"}}]},  # neither name nor uid
        {**ocsf, "device": {"hostname": "h", "type_id": 0, "ip_address": "10.0.0.1"}},
        {k: v for k, v in ocsf.items() if k != "metadata"},
    ):
        with pytest.raises(ValidationError):
            OCSF.validate(broken)


def test_evidence_carries_the_process_its_parent_and_the_user() -> None:
    golden = GOLDEN / "attack_data_4688_wmiprvse_classic_wineventlog.out.jsonl"
    finding = FINDING.decode(golden.read_bytes().splitlines()[0])
    (evidence,) = to_ocsf(finding)["evidences"]
    fields = finding.fields
    assert evidence["process"]["name"] == fields["process_name"] == "DismHost.exe"
    assert evidence["process"]["pid"] == 3904
    assert evidence["process"]["parent_process"]["cmd_line"] == fields["parent_process"]
    assert evidence["process"]["parent_process"]["pid"] == 3704
    assert evidence["actor"]["user"]["name"] == fields["user"] == "NT AUTHORITY\\SYSTEM"
    origin = finding.evidence[0]
    assert evidence["uid"] == f"{origin.topic}:{origin.partition}:{origin.offset}"
    assert evidence["data"] == {"record_id": origin.record_id}


def test_sub_techniques_and_tactics_are_their_own_attack_objects() -> None:
    finding = msgspec.structs.replace(
        golden_findings()[0],
        mitre_attack_id=("T1218.010", "T1047"),
        tactics=("Defense Evasion", "Execution"),
    )
    ocsf = to_ocsf(finding)
    OCSF.validate(ocsf)
    attacks = [
        (a["technique"]["uid"], a.get("sub_technique", {}).get("uid"), a["tactic"]["uid"])
        for a in ocsf["finding_info"]["attacks"]
    ]
    assert attacks == [
        ("T1218", "T1218.010", "TA0005"),
        ("T1218", "T1218.010", "TA0002"),
        ("T1047", None, "TA0005"),
        ("T1047", None, "TA0002"),
    ]
    assert ocsf["attacks"] == ocsf["finding_info"]["attacks"]
