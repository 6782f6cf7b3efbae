"""MITRE ATT&CK Enterprise ids: tactic names to ids, technique and sub-technique split."""

from __future__ import annotations

from typing import NamedTuple

TACTIC_IDS = {  # ATT&CK Enterprise v15 tactics, in kill-chain order
    "Reconnaissance": "TA0043",
    "Resource Development": "TA0042",
    "Initial Access": "TA0001",
    "Execution": "TA0002",
    "Persistence": "TA0003",
    "Privilege Escalation": "TA0004",
    "Defense Evasion": "TA0005",
    "Credential Access": "TA0006",
    "Discovery": "TA0007",
    "Lateral Movement": "TA0008",
    "Collection": "TA0009",
    "Command And Control": "TA0011",
    "Exfiltration": "TA0010",
    "Impact": "TA0040",
}
_BY_FOLDED_NAME = {name.casefold(): uid for name, uid in TACTIC_IDS.items()}


class Technique(NamedTuple):
    """An ATT&CK technique id, with its sub-technique id when it names one."""

    technique: str
    sub_technique: str | None


def tactic_id(name: str) -> str | None:
    """Return the id of tactic ``name`` (case-insensitive), or None if ATT&CK has none such."""
    return _BY_FOLDED_NAME.get(name.casefold())


def technique(uid: str) -> Technique:
    """Split ``T1218.010`` into technique ``T1218`` and sub-technique ``T1218.010``."""
    parent, dot, _ = uid.partition(".")
    return Technique(parent, uid if dot else None)
