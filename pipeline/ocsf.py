"""Render a finding as an OCSF Detection Finding (class 2004, OCSF 1.8, profiles host and
security_control); ``topics/schemas/ocsf-detection-finding.json`` is its JSON Schema."""

from __future__ import annotations

import ntpath
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from pipeline import __version__
from pipeline.attack import tactic_id, technique
from pipeline.records import FINDING, Finding

OCSF_VERSION = "1.8.0"
PROFILES = ("host", "security_control")
DETECTION_FINDING = 2004
FINDINGS_CATEGORY = 2
ACTIVITIES = {"new": (1, "Create"), "update": (2, "Update"), "final": (3, "Close")}
SEVERITIES = ("Informational", "Low", "Medium", "High", "Critical")  # severity_id 1..5
STATUS_NEW = 1  # nobody has reviewed it: a window closing is an activity, not a resolution
PROCESS_FIELDS = {"name": "process_name", "cmd_line": "process", "pid": "process_id"}
PARENT_FIELDS = {
    "name": "parent_process_name",
    "cmd_line": "parent_process",
    "pid": "parent_process_id",
}


def severity_id(score: int) -> int:
    """Map a 0-100 risk score to OCSF severity (1 informational .. 5 critical)."""
    return 1 + min(4, score // 20)


def _millis(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def to_ocsf(finding: Finding) -> dict[str, Any]:
    """Return the OCSF Detection Finding for a wmiwatch finding record."""
    activity, activity_name = ACTIVITIES[finding.status]
    severity = severity_id(finding.risk_score)
    attacks = _attacks(finding)
    return {
        "class_uid": DETECTION_FINDING,
        "class_name": "Detection Finding",
        "category_uid": FINDINGS_CATEGORY,
        "category_name": "Findings",
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": DETECTION_FINDING * 100 + activity,
        "type_name": f"Detection Finding: {activity_name}",
        "severity_id": severity,
        "severity": SEVERITIES[severity - 1],
        "status_id": STATUS_NEW,
        "status": "New",
        "is_alert": finding.status == "new",
        "time": _millis(finding.last_time),
        "count": finding.count,
        "risk_score": finding.risk_score,
        "message": finding.title,
        "metadata": {
            "version": OCSF_VERSION,
            "profiles": list(PROFILES),
            "product": {"name": "wmiwatch", "vendor_name": "wmiwatch", "version": __version__},
            "uid": finding.finding_id,
        },
        "finding_info": {
            "uid": finding.finding_id,
            "title": finding.title,
            "first_seen_time": _millis(finding.first_time),
            "last_seen_time": _millis(finding.last_time),
            "analytic": {
                "uid": finding.rule_id,
                "name": finding.rule_name,
                "version": str(finding.rule_version),
                "type_id": 1,
                "type": "Rule",
            },
            "attacks": attacks,
            "types": [finding.rule_type],
        },
        "attacks": attacks,  # the security_control profile's copy
        "device": _device(finding.dest),
        **({"actor": actor} if (actor := _actor(finding.fields)) else {}),
        "evidences": _evidences(finding),
        "unmapped": {
            "group": finding.group,
            "late": finding.late,
            "time_clamped": finding.time_clamped,
            "analytic_story": list(finding.analytic_story),
        },
    }


def _attacks(finding: Finding) -> list[dict[str, Any]]:
    """Return one ATT&CK object per technique and tactic (sub-techniques apart)."""
    tactics: list[dict[str, str | None] | None] = [
        {"name": name, "uid": tactic_id(name)} for name in finding.tactics
    ] or [None]
    attacks = []
    for uid in finding.mitre_attack_id:
        parent, sub = technique(uid)
        for tactic in tactics:
            attack: dict[str, Any] = {"technique": {"uid": parent}}
            if sub is not None:
                attack["sub_technique"] = {"uid": sub}
            if tactic is not None:
                attack["tactic"] = {k: v for k, v in tactic.items() if v is not None}
            attacks.append(attack)
    return attacks


def _evidences(finding: Finding) -> list[dict[str, Any]]:
    """Return each contributing event as evidence, with the process and user the rule saw."""
    device, artifacts = _device(finding.dest), _artifacts(finding.fields)
    evidences = []
    for origin in finding.evidence:
        evidence: dict[str, Any] = {
            "uid": f"{origin.topic}:{origin.partition}:{origin.offset}",
            "device": device,
        }
        if origin.record_id:
            evidence["data"] = {"record_id": origin.record_id}
        evidences.append({**evidence, **artifacts})
    return evidences


def _artifacts(fields: Mapping[str, str]) -> dict[str, Any]:
    """Return the process (with its parent) and the actor the result row names."""
    artifacts: dict[str, Any] = {}
    process = _process(fields, PROCESS_FIELDS)
    if process:
        parent = _process(fields, PARENT_FIELDS)
        artifacts["process"] = {**process, **({"parent_process": parent} if parent else {})}
    actor = _actor(fields)
    if actor:
        artifacts["actor"] = actor
    return artifacts


def _device(dest: str) -> dict[str, Any]:
    return {"hostname": dest, "name": dest, "type_id": 0}  # type Unknown


def _process(fields: Mapping[str, str], names: Mapping[str, str]) -> dict[str, Any]:
    process: dict[str, Any] = {}
    for attribute, field in names.items():
        value = fields.get(field)
        if value:
            process[attribute] = value
    if "pid" in process:
        pid = _pid(process.pop("pid"))
        if pid is not None:
            process["pid"] = pid
    if process and "name" not in process and "cmd_line" in process:
        process["name"] = _image_name(process["cmd_line"])  # OCSF wants a name or a uid
    return process if "name" in process else {}


def _image_name(cmd_line: str) -> str:
    """Return the file name of the program a command line starts (quoted or not)."""
    program = cmd_line[1:].partition('"')[0] if cmd_line[:1] == '"' else cmd_line.split(" ")[0]
    return ntpath.basename(program)


def _pid(text: str) -> int | None:
    """Return a process id written in decimal, or in hex as Security 4688 writes it."""
    hexadecimal = text[:2].lower() == "0x"
    try:
        return int(text[2:] if hexadecimal else text, 16 if hexadecimal else 10)
    except ValueError:
        return None


def _actor(fields: Mapping[str, str]) -> dict[str, Any] | None:
    user = fields.get("user")
    return {"user": {"name": user}} if user else None


def render_ocsf(finding: Finding) -> bytes:
    """Return the JSON bytes of the finding as an OCSF Detection Finding."""
    return orjson.dumps(to_ocsf(finding))


RENDERERS: dict[str, Callable[[Finding], bytes]] = {"native": FINDING.encode, "ocsf": render_ocsf}
