"""Prometheus metrics of every stage; label sets are bounded.

The worker runs its intakes in processes of their own, so it sets ``PROMETHEUS_MULTIPROC_DIR``
before this module is imported and serves the metrics of every process together. Each gauge is
set by one process only, so the most recent value is the one exposed.
"""

from __future__ import annotations

import collections
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Sample

events_consumed_total = Counter(
    "wmiwatch_events_consumed_total",
    "Raw records read from the raw topics.",
    ["topic", "event_code"],
)
events_routed_total = Counter(
    "wmiwatch_events_routed_total",
    "Events sent to at least one rule.",
    ["source"],
)
events_dropped_total = Counter(
    "wmiwatch_events_dropped_total",
    "Events no rule can match: no rule listens to their EventCode, or they lack every word the"
    " rules need (judged from the raw bytes, unparsed).",
    ["source"],
)
events_rejected_total = Counter(
    "wmiwatch_events_rejected_total",
    "Raw records the intake sent to the dead-letter topic.",
    ["reason"],
)
event_times_clamped_total = Counter(
    "wmiwatch_event_times_clamped_total",
    "Parsed events whose own time was outside the trusted bounds (too far in the future, or"
    " older than the maximum age) and was replaced by their arrival time.",
    ["source", "bound"],
)
rule_matches_total = Counter(
    "wmiwatch_rule_matches_total",
    "Events that passed a rule's filters.",
    ["rule"],
)
matches_suppressed_total = Counter(
    "wmiwatch_matches_suppressed_total",
    "Matches dropped by a suppression entry.",
    ["rule"],
)
suppressions_total = Counter(
    "wmiwatch_suppressions_total",
    "Suppression entries taken from the suppressions topic, by action (applied, removed,"
    " refused: malformed or broad without the flag; flagged: naming an unknown rule or field)"
    " and scope (values, whole_rule, all_rules).",
    ["action", "scope"],
)
late_matches_total = Counter(
    "wmiwatch_late_matches_total",
    "Matches whose window had closed when they arrived.",
    ["rule"],
)
incidents_emitted_total = Counter(
    "wmiwatch_risk_incidents_emitted_total",
    "Risk incidents produced.",
    ["kind"],
)
event_time_watermark_seconds = Gauge(
    "wmiwatch_event_time_watermark_seconds",
    "Newest event time the aggregation has seen.",
    multiprocess_mode="mostrecent",
)
raw_partitions_silent = Gauge(
    "wmiwatch_raw_partitions_silent",
    "Raw partitions no intake has reported on lately: read by no one, the watermark holds.",
    multiprocess_mode="mostrecent",
)
matches_aggregated_total = Counter(
    "wmiwatch_matches_aggregated_total",
    "Matches counted into the dest table.",
    ["rule"],
)
matches_redelivered_total = Counter(
    "wmiwatch_matches_redelivered_total",
    "Matches delivered again after a restart (at-least-once) and not counted twice.",
    ["rule"],
)
records_reread_total = Counter(
    "wmiwatch_records_reread_total",
    "Input records Faust skipped that a stage (aggregation, scoring) read again from the broker.",
    ["stage"],
)
records_passed_over_total = Counter(
    "wmiwatch_records_passed_over_total",
    "Input records delivered again that a stage's committed state already holds.",
    ["stage"],
)
partitions_taken_over_total = Counter(
    "wmiwatch_partitions_taken_over_total",
    "Input partitions a stage took over: producer fenced in, table and offset read back.",
    ["stage"],
)
read_ahead_full_total = Counter(
    "wmiwatch_read_ahead_full_total",
    "Times a stage held as many records read and not yet handled as it may, and paused fetching.",
    ["stage"],
)
findings_emitted_total = Counter(
    "wmiwatch_findings_emitted_total",
    "Finding records produced (status: new, update, final).",
    ["rule", "status"],
)
risk_events_emitted_total = Counter(
    "wmiwatch_risk_events_emitted_total",
    "Risk events produced to the risk topic.",
    ["rule"],
)
finding_latency_seconds = Histogram(
    "wmiwatch_finding_latency_seconds",
    "From the raw record's Kafka timestamp to its finding being produced.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
intake_batch_seconds = Histogram(
    "wmiwatch_intake_batch_seconds",
    "Time from processing one intake batch to its commit (parse to commit).",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
intake_transaction_batches = Histogram(
    "wmiwatch_intake_transaction_batches",
    "Intake batches one commit carries: more than one when reading outpaced the commit before.",
    buckets=(1, 2, 3, 5, 10),
)
transactions_aborted_total = Counter(
    "wmiwatch_transactions_aborted_total",
    "Commits that failed (stage: intake, aggregation, scoring); the records were handled again.",
    ["stage"],
)
consumer_lag = Gauge(
    "wmiwatch_consumer_lag",
    "Records not yet read by the intake, per raw partition (from the last fetch).",
    ["topic", "partition"],
    multiprocess_mode="mostrecent",
)
rule_watermark_seconds = Gauge(
    "wmiwatch_rule_watermark_seconds",
    "Newest event time of a match, per rule.",
    ["rule"],
    multiprocess_mode="mostrecent",
)
table_keys = Gauge(
    "wmiwatch_table_keys",
    "Keys this worker holds in each table (dests, risk objects).",
    ["table"],
    multiprocess_mode="mostrecent",
)
intake_idle_seconds = Gauge(
    "wmiwatch_intake_idle_seconds",
    "Seconds since the intake loop last went round (stuck on one record, or stopped).",
    multiprocess_mode="mostrecent",
)
aggregation_idle_seconds = Gauge(
    "wmiwatch_aggregation_idle_seconds",
    "Seconds since the aggregation last handled a record of the matches partitions it owns"
    " (every intake ticks each partition every second; 0 when it owns none).",
    multiprocess_mode="mostrecent",
)
agent_crashes_total = Counter(
    "wmiwatch_agent_crashes_total",
    "Faust agents that raised out of their loop and were restarted.",
    ["agent"],
)
aggregation_rejected_total = Counter(
    "wmiwatch_aggregation_rejected_total",
    "Records of an internal topic the aggregation could not handle, sent to the dead-letter topic.",
    ["topic"],
)
rules_loaded = Gauge(
    "wmiwatch_rules_loaded", "Rules compiled at start-up.", multiprocess_mode="mostrecent"
)
build_info = Gauge(
    "wmiwatch_build_info",
    "The wmiwatch version running (always 1).",
    ["version"],
    multiprocess_mode="mostrecent",
)
rule_info = Gauge(
    "wmiwatch_rule_info",
    "Each loaded rule's name, version and ATT&CK ids (always 1): join on the rule label.",
    ["rule", "rule_name", "rule_version", "mitre"],
    multiprocess_mode="mostrecent",
)


Labelled = TypeVar("Labelled", Counter, Gauge, Histogram)
_series: dict[tuple[int, tuple[str, ...]], Any] = {}


def series(metric: Labelled, *values: str) -> Labelled:
    """Return ``metric``'s series for the label ``values``, looked up once (for hot paths)."""
    key = (id(metric), values)
    found = _series.get(key)
    if found is None:
        found = _series[key] = metric.labels(*values)
    return found


# Counter increments gathered per (counter, label values), added once each by ``add``.
Tally = collections.Counter[tuple[Counter, tuple[str, ...]]]


def add(tally: Tally) -> None:
    """Add each gathered amount to its counter's series."""
    for (counter, labels), amount in tally.items():
        series(counter, *labels).inc(amount)


FORGOTTEN = math.nan  # a gauge set to this is left out of what is served (multiprocess mode)
_PROCESS_FILE = re.compile(r"_(\d+)\.db$")


def forget_lag(topic: str, partition: int) -> None:
    """Stop exporting the lag of a partition this process no longer reads."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # prometheus_client cannot remove there
        consumer_lag.labels(topic, str(partition)).set(FORGOTTEN)
    else:
        consumer_lag.remove(topic, str(partition))


class ProcessesCollector:
    """Serve the merged metrics of every process, and each live process's ``process_*``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.merged = multiprocess.MultiProcessCollector(None, str(folder))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        """Yield the merged metrics without forgotten series, then ``process_*`` by pid."""
        for metric in self.merged.collect():  # type: ignore[no-untyped-call]
            metric.samples = [s for s in metric.samples if not math.isnan(s.value)]
            yield metric
        yield from _per_process(self._live_pids())

    def _live_pids(self) -> list[int]:
        found = {_PROCESS_FILE.search(p.name) for p in self.folder.glob("*.db")}
        pids = sorted({int(m.group(1)) for m in found if m} | {os.getpid()})
        return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def _per_process(pids: Iterable[int]) -> Iterator[Metric]:
    """Yield prometheus_client's process metrics of each pid, labelled with it."""
    families: dict[str, Metric] = {}
    for pid in pids:
        for metric in _process_collector(pid).collect():
            family = families.setdefault(
                metric.name, Metric(metric.name, metric.documentation, metric.type)
            )
            family.samples += [
                Sample(s.name, {**s.labels, "pid": str(pid)}, s.value) for s in metric.samples
            ]
    yield from families.values()


def _process_collector(pid: int) -> ProcessCollector:
    """Return prometheus_client's collector of process ``pid``'s metrics (unregistered)."""
    return ProcessCollector(pid=lambda: pid, registry=None)


def exposed_registry() -> CollectorRegistry:
    """Return the registry to serve: every process's metrics in multiprocess mode."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder is None:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(ProcessesCollector(Path(folder)))
    return registry
