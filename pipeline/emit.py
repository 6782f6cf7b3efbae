"""Build finding and risk-event records from an aggregated group."""

from __future__ import annotations

import functools
import hashlib
import math
import re
import uuid
from datetime import UTC, datetime

import orjson

from pipeline.attack import tactic_id
from pipeline.records import (
    Annotations,
    Entity,
    Finding,
    GroupState,
    MitreAnnotations,
    RiskEvent,
    Status,
)
from pipeline.rules.model import Rule

FINDING_NAMESPACE = uuid.UUID("5b0d2a4e-0f7c-4e5e-9a57-6d1f1f0f57a1")
_NAMESPACE = FINDING_NAMESPACE.bytes
_PLACEHOLDER = re.compile(r"\$([A-Za-z0-9_.]+)\$")


def iso_time(seconds: float) -> str:
    """Render epoch seconds as ISO-8601 UTC with millisecond precision.

    The same text as ``datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")``
    with "Z", rounded as it rounds (to microseconds, half to even), each second's date and time
    rendered once: a finding and its risk events render several times of the same seconds.
    """
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1_000_000)
    if micros >= 1_000_000:
        micros, whole = micros - 1_000_000, whole + 1
    elif micros < 0:
        micros, whole = micros + 1_000_000, whole - 1
    return f"{_iso_second(int(whole))}.{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=4096)  # bounded: event times come from endpoints
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).replace(tzinfo=None).isoformat()


def finding_id(rule_id: str, window_start: int, group: dict[str, str]) -> str:
    """Return the deterministic id of a (rule, group, window)."""
    key = orjson.dumps([rule_id, window_start, group], option=orjson.OPT_SORT_KEYS)
    return uuid5(key)


def uuid5(name: bytes) -> str:
    """Return ``str(uuid.uuid5(FINDING_NAMESPACE, name.decode()))``, without the UUID object
    (a third of the time, on every match)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = digest.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def render_title(template: str, row: dict[str, str]) -> str:
    """Fill ``$field$`` placeholders from the result row."""
    return _PLACEHOLDER.sub(lambda m: row.get(m.group(1), m.group(0)), template)


def build_finding(rule: Rule, stats: GroupState, row: dict[str, str], status: Status) -> Finding:
    """Return the finding record of one group."""
    spec, entity = rule.spec, rule.spec.finding.entity
    dest = row.get("dest") or stats.dest
    return Finding(
        finding_id=stats.finding_id,
        rule_id=spec.id,
        rule_name=spec.name,
        rule_version=spec.version,
        rule_type=spec.type,
        title=render_title(spec.finding.title, row),
        dest=dest,
        entity=Entity(entity.field, entity.type, row.get(entity.field) or dest),
        risk_score=entity.score,
        mitre_attack_id=tuple(spec.mitre_attack_id),
        tactics=tuple(spec.tactics),
        analytic_story=tuple(spec.analytic_story),
        count=stats.count,
        first_time=iso_time(stats.first),
        last_time=iso_time(stats.last),
        window_start=iso_time(stats.window_start),
        group=stats.group,
        fields=row,
        evidence=stats.evidence,
        time_clamped=stats.time_clamped,
        status=status,
        late=stats.late,
    )


def build_risk_events(rule: Rule, finding: Finding) -> list[RiskEvent]:
    """Return one risk event per risk object of the finding (entity first, no repeats)."""
    spec, row = rule.spec.finding, finding.fields
    objects = [(spec.entity.type, finding.entity.value)]
    objects += [(o.type, row[o.field]) for o in spec.risk_objects if row.get(o.field)]
    threats = [(row[name], name) for name in spec.threat_objects if row.get(name)]
    annotations = Annotations(
        MitreAnnotations(
            finding.mitre_attack_id,
            finding.tactics,
            tuple(uid for uid in map(tactic_id, finding.tactics) if uid),
        ),
        finding.analytic_story,
    )
    time = datetime.fromisoformat(finding.first_time).timestamp()
    return [
        RiskEvent(
            time=time,
            search_name=finding.rule_name,
            risk_object=value,
            risk_object_type=kind,
            risk_score=finding.risk_score,
            risk_message=finding.title,
            threat_object=tuple(value for value, _ in threats),
            threat_object_type=tuple(kind for _, kind in threats),  # the CIM field's name
            annotations=annotations,
            finding_id=finding.finding_id,
            rule_id=finding.rule_id,
        )
        for kind, value in dict.fromkeys(objects)
    ]
