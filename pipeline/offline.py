"""Run the detection core over files with no broker: what ``wmiwatch detect`` does."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.aggregate import Aggregator
from pipeline.engine import Detector
from pipeline.files import read_records
from pipeline.policy import MAX_EVENT_BYTES, TimePolicy, WindowPolicy
from pipeline.records import DestState, Finding, Origin
from pipeline.rules.model import Rule


@dataclass
class DetectReport:
    """Findings produced from files, plus counts of what was read and rejected."""

    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def detect_files(
    paths: Iterable[Path],
    rules: tuple[Rule, ...],
    policy: WindowPolicy,
    max_event_bytes: int = MAX_EVENT_BYTES,
    time_policy: TimePolicy | None = None,
) -> DetectReport:
    """Return each finding's final record, in a stable order.

    Files hold all their events, so nothing is late here: windows close only at the end.
    """
    detector = Detector(rules, max_event_bytes=max_event_bytes, time_policy=time_policy)
    state: dict[str, DestState] = {}
    aggregator = Aggregator(detector.rules, state, policy)
    report = DetectReport()
    for path in paths:
        for record in read_records(path):
            report.events += 1
            outcome = detector.process(record.payload, Origin(record.location, 0, record.number))
            if outcome.rejected is not None:
                report.rejected[outcome.rejected.reason] += 1
            for match in outcome.matches:
                aggregator.add(match, -math.inf, 0.0)
    report.findings = aggregator.advance(math.inf, 0.0, list(state))
    report.findings.sort(key=lambda f: (f.first_time, f.rule_name, f.finding_id))
    return report
