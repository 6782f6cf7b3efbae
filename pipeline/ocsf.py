"""Render a finding as an OCSF Detection Finding (class 2004, OCSF 1.1)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from pipeline.records import FINDING, Finding, to_builtins

OCSF_VERSION = "1.1.0"
DETECTION_FINDING = 2004
FINDINGS_CATEGORY = 2
ACTIVITY = {"new": 1, "update": 2, "final": 3}  # Create, Update, Close


def severity_id(score: int) -> int:
    """Map a 0-100 risk score to OCSF severity (1 informational .. 5 critical)."""
    return 1 + min(4, score // 20)


def _millis(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def to_ocsf(finding: Finding) -> dict[str, Any]:
    """Return the OCSF Detection Finding for a wmiwatch finding record."""
    activity = ACTIVITY[finding.status]
    return {
        "class_uid": DETECTION_FINDING,
        "category_uid": FINDINGS_CATEGORY,
        "activity_id": activity,
        "type_uid": DETECTION_FINDING * 100 + activity,
        "severity_id": severity_id(finding.risk_score),
        "status_id": 4 if finding.status == "final" else 1,  # Resolved / New
        "time": _millis(finding.last_time),
        "count": finding.count,
        "risk_score": finding.risk_score,
        "message": finding.title,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "wmiwatch", "vendor_name": "wmiwatch"},
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
                "type_id": 1,  # Rule
            },
            "attacks": [
                {"technique": {"uid": technique}, "tactics": [{"name": t} for t in finding.tactics]}
                for technique in finding.mitre_attack_id
            ],
            "types": [finding.rule_type],
        },
        "device": {"hostname": finding.dest, "type_id": 0},
        "evidences": [{"data": to_builtins(evidence)} for evidence in finding.evidence],
        "unmapped": {
            "group": finding.group,
            "late": finding.late,
            "time_clamped": finding.time_clamped,
            "analytic_story": list(finding.analytic_story),
        },
    }


def render_ocsf(finding: Finding) -> bytes:
    """Return the JSON bytes of the finding as an OCSF Detection Finding."""
    return orjson.dumps(to_ocsf(finding))


RENDERERS: dict[str, Callable[[Finding], bytes]] = {"native": FINDING.encode, "ocsf": render_ocsf}
