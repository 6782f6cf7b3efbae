"""Run the detection core over files with no broker: what ``wmiwatch detect`` does.

Files are read in order by one process; with ``jobs`` > 1, batches of their records are
detected in that many worker processes, and the matches come back in reading order, so the
aggregation (and every finding) is the same as with one process.
"""

from __future__ import annotations

import collections
import itertools
import math
import multiprocessing
import multiprocessing.pool
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.aggregate import Aggregator, Full
from pipeline.engine import Detector
from pipeline.files import FileRecord, read_records
from pipeline.policy import MAX_EVENT_BYTES, TimePolicy, WindowPolicy
from pipeline.records import DestState, Finding, Match, Origin
from pipeline.rejects import RejectReason
from pipeline.rules.loader import load_rules
from pipeline.rules.model import Rule

BATCH_RECORDS = 2000


@dataclass
class DetectReport:
    """Findings produced from files, plus counts of what was read and rejected."""

    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    matches: int = 0  # counted into groups, as a worker's wmiwatch_matches_aggregated_total
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass
class BatchDetected:
    """What one batch of records yields: its matches in order, its count and rejections."""

    matches: list[Match]
    events: int
    rejected: Counter[str]


def detect_batch(detector: Detector, records: list[FileRecord]) -> BatchDetected:
    """Run ``detector`` over ``records``."""
    done = BatchDetected([], len(records), Counter())
    for record in records:
        outcome = detector.process(record.payload, Origin(record.location, 0, record.number))
        if outcome.rejected is not None:
            done.rejected[outcome.rejected.reason] += 1
        done.matches.extend(outcome.matches)
    return done


def detect_files(
    paths: Iterable[Path],
    rules: tuple[Rule, ...],
    policy: WindowPolicy,
    max_event_bytes: int = MAX_EVENT_BYTES,
    time_policy: TimePolicy | None = None,
    jobs: int = 1,
) -> DetectReport:
    """Return each finding's final record, in a stable order.

    Files hold all their events, so nothing is late here: windows close only at the end.
    """
    detector = Detector(rules, max_event_bytes=max_event_bytes, time_policy=time_policy)
    state: dict[str, DestState] = {}
    aggregator = Aggregator(detector.rules, state, policy)
    report = DetectReport()
    batches = _batches(record for path in paths for record in read_records(path))
    with _Jobs(jobs, detector) as run:
        for done in run(batches):
            report.events += done.events
            report.rejected.update(done.rejected)
            for match in done.matches:
                try:
                    counted = aggregator.add(match, -math.inf, 0.0) is not None
                except Full as full:
                    report.rejected[full.reason] += 1
                else:
                    report.matches += counted
            aggregator.take_undecided()  # the report holds each group's last record: counted below
    report.findings = aggregator.advance(math.inf, 0.0, list(state))
    if undecided := aggregator.take_undecided():
        report.rejected[RejectReason.REGEX_TIMEOUT] += len(undecided)
    report.findings.sort(key=lambda f: (f.first_time, f.rule_name, f.finding_id))
    return report


def _batches(records: Iterator[FileRecord]) -> Iterator[list[FileRecord]]:
    while batch := list(itertools.islice(records, BATCH_RECORDS)):
        yield batch


_job_detector: Detector | None = None  # each job process's own detector


def _start_job(
    folders: tuple[str, ...],
    ids: frozenset[str],
    max_event_bytes: int,
    time_policy: TimePolicy | None,
) -> None:
    """Compile the rules ``ids`` from their folders (compiled plans hold closures: no pickle)."""
    global _job_detector  # a pool initializer's only way to hand state over
    rules = tuple(rule for folder in folders for rule in load_rules(Path(folder)) if rule.id in ids)
    _job_detector = Detector(rules, max_event_bytes=max_event_bytes, time_policy=time_policy)


def _detect_in_job(records: list[FileRecord]) -> BatchDetected:
    assert _job_detector is not None, "the job process was not started with a detector"
    return detect_batch(_job_detector, records)


class _Jobs:
    """Detect batches in this process, or in ``jobs`` processes, yielding in reading order.

    At most ``IN_FLIGHT_PER_JOB`` batches per job are read ahead: memory stays flat.
    """

    IN_FLIGHT_PER_JOB = 4

    def __init__(self, jobs: int, detector: Detector) -> None:
        self.jobs, self.detector = jobs, detector
        self.pool: multiprocessing.pool.Pool | None = None

    def __enter__(self) -> _Jobs:
        if self.jobs > 1:
            detector = self.detector
            folders = tuple(sorted({str(Path(r.path).parent) for r in detector.rules.values()}))
            arguments = (folders, frozenset(detector.rules), detector.max_event_bytes)
            context = multiprocessing.get_context("spawn")
            self.pool = context.Pool(self.jobs, _start_job, (*arguments, detector.time_policy))
        return self

    def __call__(self, batches: Iterator[list[FileRecord]]) -> Iterator[BatchDetected]:
        if self.pool is None:
            return (detect_batch(self.detector, batch) for batch in batches)
        return self._in_order(self.pool, batches)

    def _in_order(
        self, pool: multiprocessing.pool.Pool, batches: Iterator[list[FileRecord]]
    ) -> Iterator[BatchDetected]:
        pending: collections.deque[multiprocessing.pool.AsyncResult[BatchDetected]]
        pending = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(_detect_in_job, (batch,)))
            if len(pending) >= self.jobs * self.IN_FLIGHT_PER_JOB:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
