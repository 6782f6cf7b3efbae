"""One intake batch without a broker: raw messages in, records to produce and tallies out.

The intake (``pipeline.intake``) consumes a batch, hands it here, produces what comes back,
waits for the acknowledgements and commits. Most events are screened out unparsed; their
metric counts are tallied per (topic, verdict) and added once per batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message

from pipeline import metrics
from pipeline.engine import Detector, Outcome
from pipeline.partitions import BATCH_BYTES, partitioned
from pipeline.records import DEAD_LETTER, MATCH, MATCH_BATCH, Match, MatchBatch, Origin
from pipeline.rejects import Rejected, RejectReason, dead_letter_record
from pipeline.suppress import Suppressions
from pipeline.ticks import TickReporter
from pipeline.topics import Topics

log = logging.getLogger(__name__)
OTHER_CODE = "other"


@dataclass
class BatchResult:
    """The records one batch produces: its matches as (dest, encoded match), its dead letters
    as (topic, key, value), and its metric tallies."""

    matches: list[tuple[str, bytes]] = field(default_factory=list)
    produce: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    tally: metrics.Tally = field(default_factory=Counter)
    screened: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # topic, source, code

    def count(self) -> None:
        """Add the tallies to the metrics."""
        metrics.add(self.tally)

    def size(self) -> int:
        """Return the bytes of the records the batch yields (its encoded matches and dead
        letters)."""
        return sum(len(value) for _, _, value in self.produce) + sum(
            len(match) for _, match in self.matches
        )


class BatchProcessor:
    """Runs the detection core over a batch of raw messages."""

    def __init__(
        self,
        detector: Detector,
        topics: Topics,
        suppressions: Suppressions,
        reporter: TickReporter,
        clock: Callable[[], float],
    ) -> None:
        self.detector, self.topics, self.suppressions = detector, topics, suppressions
        self.reporter, self.clock = reporter, clock
        self.known_codes = {code for _, code in detector.router.routes}
        self.rule_times: dict[str, float] = {}
        self._export_zeros()

    def _export_zeros(self) -> None:
        """Export every source's, reject reason's and rule's counters from zero (silence shows)."""
        for source, topic in self.topics.raw().items():
            metrics.events_consumed_total.labels(topic, OTHER_CODE)
            metrics.events_routed_total.labels(source)
            metrics.events_dropped_total.labels(source)
        for reason in RejectReason:
            metrics.events_rejected_total.labels(reason)
        for rule_id in self.detector.rules:
            metrics.rule_matches_total.labels(rule_id)
            metrics.matches_suppressed_total.labels(rule_id)

    def process(self, messages: Iterable[Message]) -> BatchResult:
        """Return what ``messages`` produce: matches with their dests, and dead letters."""
        result = BatchResult()
        last: dict[tuple[str, int], Message | None] = {}  # per partition: its record if screened
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", error)
                continue
            self._process_one(message, result, last)
        for partition, screened in last.items():
            tail = None if screened is None else (screened.value() or b"", received_at(screened))
            self.reporter.last_record(partition, tail)
        for (topic, source, code), amount in result.screened.items():
            self._tally(result.tally, topic, Outcome(source=source, event_code=code), amount)
        return result

    def _process_one(
        self, message: Message, result: BatchResult, last: dict[tuple[str, int], Message | None]
    ) -> None:
        topic, partition = str(message.topic()), message.partition() or 0
        payload = message.value() or b""
        verdict = self.detector.screen(payload)
        if verdict is not None and not isinstance(verdict, Rejected):
            # most events: tallied together at the end of the batch, nothing else made
            last[(topic, partition)] = message
            result.screened[(topic, verdict.source, verdict.event_code)] += 1
            return
        last[(topic, partition)] = None
        origin = Origin(topic, partition, message.offset() or 0)
        if verdict is None:
            outcome = self.detector.detect(payload, origin, received_at(message))
        else:
            outcome = Outcome(rejected=verdict)
        self._tally(result.tally, topic, outcome)
        if outcome.rejected is not None:
            letter = dead_letter_record(
                outcome.rejected.reason,
                outcome.rejected.detail,
                topic,
                partition,
                origin.offset,
                payload,
            )
            result.produce.append(
                (self.topics.dead_letter, topic.encode(), DEAD_LETTER.encode(letter))
            )
        if outcome.event is None:  # rejected whole; else only some rules could not decide
            return
        self.reporter.observe((topic, partition), outcome.event.time)
        for match in outcome.matches:
            fields = {**outcome.event.fields, **match.group}
            if self.suppressions.match(match.rule_id, fields, self.clock()) is not None:
                metrics.matches_suppressed_total.labels(match.rule_id).inc()
                continue
            self._observe_rule_time(match)
            result.matches.append((match.dest, MATCH.encode(match)))

    def _observe_rule_time(self, match: Match) -> None:
        newest = max(self.rule_times.get(match.rule_id, match.time), match.time)
        self.rule_times[match.rule_id] = newest
        metrics.rule_watermark_seconds.labels(match.rule_id).set(newest)

    def _tally(self, tally: metrics.Tally, topic: str, outcome: Outcome, amount: int = 1) -> None:
        code = outcome.event_code if outcome.event_code in self.known_codes else OTHER_CODE
        tally[(metrics.events_consumed_total, (topic, code))] += amount
        if outcome.rejected is not None:
            tally[(metrics.events_rejected_total, (outcome.rejected.reason,))] += amount
        elif outcome.routed:
            tally[(metrics.events_routed_total, (outcome.source,))] += amount
        else:
            tally[(metrics.events_dropped_total, (outcome.source,))] += amount
        if outcome.event is not None and outcome.event.clamped is not None:
            tally[(metrics.event_times_clamped_total, (outcome.source, outcome.event.clamped))] += 1
        for match in outcome.matches:
            tally[(metrics.rule_matches_total, (match.rule_id,))] += 1


def match_batches(
    matches: Iterable[tuple[str, bytes]], partitions: int, limit: int = BATCH_BYTES
) -> Iterator[tuple[int, bytes]]:
    """Yield (partition, record) for the (dest, encoded match) pairs ``matches``."""
    for partition, run in partitioned(matches, partitions, limit):
        yield partition, MATCH_BATCH.encode(MatchBatch(run))


def received_at(message: Message) -> float | None:
    """Return the record's Kafka timestamp in epoch seconds, or None when it has none."""
    kind, milliseconds = message.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else milliseconds / 1000
