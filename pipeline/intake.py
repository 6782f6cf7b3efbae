"""Batched intake: raw topics -> detection core -> matches and dead letters (confluent-kafka).

The bulk of raw events never reach Faust: this loop reads them in batches, runs the pure
core, produces the few matches keyed by dest, and commits its offsets only after every
produced record is acknowledged (at-least-once). The worker runs it in a process of its own, so
parsing never waits for the Faust process's interpreter lock.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from collections import Counter
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import Counter as CounterMetric

from pipeline import metrics
from pipeline.engine import Detector, Outcome
from pipeline.health import IntakeStatus
from pipeline.kafka import consumer, producer
from pipeline.match import Origin
from pipeline.prefilter import Verdict
from pipeline.rejects import dead_letter_record
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.suppress import Suppressions, known_fields
from pipeline.topics import Topics
from pipeline.watermark import Watermark

log = logging.getLogger(__name__)
OTHER_CODE = "other"
CLOSE_SECONDS = 10.0


# The partitions moved in a rebalance (or nothing to commit): the new owner reads the batch
# again, and the aggregation does not count its matches twice.
UNCOMMITTABLE = frozenset(
    {
        KafkaError._NO_OFFSET,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._ASSIGNMENT_LOST,
    }
)


class Intake:
    """Consume raw topics in batches and produce matches and dead letters."""

    def __init__(
        self, settings: Settings, topics: Topics, detector: Detector, status: IntakeStatus
    ) -> None:
        self.settings, self.topics, self.detector, self.status = settings, topics, detector, status
        membership = {"group.instance.id": settings.instance_id} if settings.instance_id else {}
        self.consumer = consumer(
            settings, f"{settings.group_id}-intake", error_cb=self._on_client_error, **membership
        )
        self.producer = producer(settings)
        self.known_codes = {code for _, code in detector.router.routes}
        self.suppressions = Suppressions(known_fields(detector.rules.values(), detector.normalizer))
        self.suppression_reader = consumer(settings, f"{settings.group_id}-suppressions")
        self.watermark = Watermark()
        self.rule_times: dict[str, float] = {}
        self.tick_partitions: list[int] = []
        # Each partition's last record, with its Kafka timestamp, if it was screened out.
        self.tails: dict[tuple[str, int], tuple[bytes, float | None] | None] = {}
        self.source_count = 0  # partitions of the raw topics, all intakes together
        self.committed_at_assign: dict[tuple[str, int], int] = {}

    def run(self, stop: ProcessEvent) -> None:
        """Process batches until ``stop`` is set, then close the consumers."""
        raw = list(self.topics.raw().values())
        self.consumer.subscribe(raw, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.source_count = sum(
            len(self.producer.list_topics(topic, timeout=30).topics[topic].partitions)
            for topic in raw
        )
        self._follow_suppressions()
        matches = self.topics.matches
        self.tick_partitions = list(
            self.producer.list_topics(matches, timeout=30).topics[matches].partitions
        )
        next_tick = 0.0
        try:
            while not stop.is_set():
                self.status.beat()
                self._read_suppressions(timeout=0)
                batch = self.consumer.consume(self.settings.intake_batch_size, timeout=0.2)
                if batch:
                    self.process_batch(batch)
                if time.monotonic() >= next_tick:
                    self._send_ticks()
                    next_tick = time.monotonic() + self.settings.tick_interval_seconds
        finally:
            self.producer.flush(30)
            _close_within(CLOSE_SECONDS, self.consumer, self.suppression_reader)

    def _on_assign(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        self.status.joined = True
        self.status.broker_error = None
        for position in self.consumer.committed(partitions, timeout=30):
            self.committed_at_assign[(position.topic, position.partition)] = position.offset

    def _on_revoke(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        """Forget revoked partitions; deliver their ticks before the new owner sends its own."""
        self.producer.flush(30)
        revoked = [(p.topic, p.partition) for p in partitions]
        self.watermark.forget(revoked)
        for partition in revoked:
            self.committed_at_assign.pop(partition, None)
            self.tails.pop(partition, None)

    def _on_client_error(self, error: KafkaError) -> None:
        log.warning("kafka client error: %s", error)
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.status.broker_error = error.str()

    def _follow_suppressions(self) -> None:
        """Read the whole suppressions topic before the first batch, then keep following it."""
        topic = self.topics.suppressions
        metadata = self.suppression_reader.list_topics(topic, timeout=30).topics[topic]
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        self.suppression_reader.assign(partitions)
        ends = {
            p.partition: self.suppression_reader.get_watermark_offsets(p, timeout=30)[1]
            for p in partitions
        }
        positions = dict.fromkeys(ends, 0)
        while any(positions[p] < end for p, end in ends.items()):
            for message in self._read_suppressions(timeout=0.5):
                positions[message.partition() or 0] = (message.offset() or 0) + 1

    def _read_suppressions(self, timeout: float) -> list[Message]:
        messages = [m for m in self.suppression_reader.consume(100, timeout) if m.error() is None]
        for message in messages:
            key = (message.key() or b"").decode("utf-8", "replace")
            self.suppressions.apply(key, message.value())
        return messages

    def _sources(self) -> list[list[Any]]:
        """Return each assigned partition's report for the ticks.

        A report is [topic, partition, newest event time read or None, whether records remain
        unread (per the last fetch)].
        """
        sources = []
        for position in self.consumer.position(self.consumer.assignment()):
            low, high = self.consumer.get_watermark_offsets(position, cached=True)
            next_offset = self._next_offset(position, low)
            lag = metrics.consumer_lag.labels(position.topic, str(position.partition))
            lag.set(max(high - next_offset, 0) if high >= 0 else 0)
            newest = self.watermark.newest((position.topic, position.partition))
            backlog = high < 0 or next_offset < high
            sources.append([position.topic, position.partition, _finite(newest), backlog])
        return sources

    def _next_offset(self, position: TopicPartition, low: int) -> int:
        """Return the next offset to read: the position, else the commit seen at assignment."""
        committed = self.committed_at_assign.get((position.topic, position.partition), -1)
        return next((o for o in (position.offset, committed) if o >= 0), low)

    def _send_ticks(self) -> None:
        """Tell every aggregation partition how far event time has got in this intake's partitions.

        The aggregation merges the reports of all intakes into the watermark that closes windows.
        """
        self._observe_skipped_tails()
        sources = self._sources()
        if not sources:
            return
        tick = orjson.dumps(
            {
                "type": "tick",
                "sent_at": time.time(),
                "source_count": self.source_count,
                "sources": sources,
            }
        )
        for partition in self.tick_partitions:  # resolved once at start, not every tick
            self.producer.produce(self.topics.matches, tick, partition=partition)
        self.producer.poll(0)

    def process_batch(self, batch: list[Message]) -> None:
        """Handle one batch, wait for its records to be acknowledged, then commit."""
        started = time.perf_counter()
        self.status.broker_error = None
        counts: Counter[tuple[CounterMetric, tuple[str, ...]]] = Counter()
        screened: Counter[tuple[str, Verdict]] = Counter()
        for message in batch:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", error)
                continue
            topic, payload = str(message.topic()), message.value() or b""
            verdict = self.detector.screen(payload)  # most events end here, unparsed
            if verdict is None:
                self._count(counts, topic, self._handle(message, payload))
            else:
                screened[(topic, verdict)] += 1
            tail = None if verdict is None else (payload, received_at(message))
            self.tails[(topic, message.partition() or 0)] = tail
        for (topic, verdict), amount in screened.items():
            outcome = Outcome(source=verdict.source, event_code=verdict.event_code)
            self._count(counts, topic, outcome, amount)
        for (counter, labels), amount in counts.items():
            counter.labels(*labels).inc(amount)
        undelivered = self.producer.flush(30)
        if undelivered:
            raise KafkaException(f"{undelivered} produced record(s) not acknowledged")
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as error:
            if error.args[0].code() not in UNCOMMITTABLE:
                raise
            log.info("batch not committed, its partitions moved: %s", error.args[0].str())
        metrics.intake_batch_seconds.observe(time.perf_counter() - started)

    def _observe_skipped_tails(self) -> None:
        """Read the time of each partition's last event when it was skipped unparsed.

        Skipped events are never parsed, so without this a partition of events no rule wants
        would hold the watermark back; one parse per partition per tick keeps it moving. The
        time is bounded like any event time (``TimePolicy``), so one host's clock cannot move it.
        """
        for partition, tail in self.tails.items():
            if tail is not None:
                moment = self.detector.event_time(*tail)
                if moment is not None:
                    self.watermark.observe(partition, moment)
        self.tails.clear()

    def _handle(self, message: Message, payload: bytes) -> Outcome:
        origin = Origin(str(message.topic()), message.partition() or 0, message.offset() or 0)
        received = received_at(message)
        outcome = self.detector.detect(payload, origin, received)
        if outcome.rejected is not None:
            reason = outcome.rejected.reason
            detail = outcome.rejected.detail
            record = dead_letter_record(
                reason, detail, origin.topic, origin.partition, origin.offset, payload
            )
            self.producer.produce(
                self.topics.dead_letter, orjson.dumps(record), key=origin.topic.encode()
            )
            return outcome
        if outcome.event is not None:
            self.watermark.observe((origin.topic, origin.partition), outcome.event.time)
        ingested_at = received or time.time()
        for match in outcome.matches:
            fields = {**outcome.event.fields, **match.group} if outcome.event else match.group
            if self.suppressions.match(match.rule_id, fields, time.time()) is not None:
                metrics.matches_suppressed_total.labels(match.rule_id).inc()
                continue
            newest = self.rule_times[match.rule_id] = max(
                self.rule_times.get(match.rule_id, match.time), match.time
            )
            metrics.rule_watermark_seconds.labels(match.rule_id).set(newest)
            value = {"type": "match", **match.to_record(), "ingested_at": ingested_at}
            self.producer.produce(self.topics.matches, orjson.dumps(value), key=match.dest.encode())
        return outcome

    def _count(
        self,
        counts: Counter[tuple[CounterMetric, tuple[str, ...]]],
        topic: str,
        outcome: Outcome,
        amount: int = 1,
    ) -> None:
        """Tally ``amount`` alike outcomes; the batch adds the tallies to the metrics once."""
        code = outcome.event_code if outcome.event_code in self.known_codes else OTHER_CODE
        counts[(metrics.events_consumed_total, (topic, code))] += amount
        if outcome.rejected is not None:
            counts[(metrics.events_rejected_total, (outcome.rejected.reason,))] += amount
        elif outcome.routed:
            counts[(metrics.events_routed_total, (outcome.source,))] += amount
        else:
            counts[(metrics.events_dropped_total, (outcome.source,))] += amount
        if outcome.event is not None and outcome.event.clamped is not None:
            counts[
                (metrics.event_times_clamped_total, (outcome.source, outcome.event.clamped))
            ] += 1
        for match in outcome.matches:
            counts[(metrics.rule_matches_total, (match.rule_id,))] += 1


def run_intake_process(
    settings: Settings, status: IntakeStatus, stop: ProcessEvent, loglevel: int
) -> None:
    """Run the intake until ``stop`` is set or the worker process is gone (process target)."""
    for number in (signal.SIGINT, signal.SIGTERM):  # the worker stops the intake via ``stop``
        signal.signal(number, signal.SIG_IGN)
    logging.basicConfig(
        level=loglevel, format="[%(asctime)s] [%(process)s] [%(levelname)s] %(name)s: %(message)s"
    )
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_stop_with, args=(parent.sentinel, stop), daemon=True).start()
    detector = Detector(
        load_rules(settings.rules_dir),
        max_event_bytes=settings.max_event_bytes,
        time_policy=settings.time_policy(),
    )
    try:
        Intake(settings, settings.topics(), detector, status).run(stop)
    except Exception:
        log.exception("intake failed")
        raise SystemExit(1) from None


def _stop_with(sentinel: int, stop: ProcessEvent) -> None:
    """Set ``stop`` when the process behind ``sentinel`` ends (a killed worker's intake ends)."""
    multiprocessing.connection.wait([sentinel])
    stop.set()


def _close_within(seconds: float, *clients: Consumer) -> None:
    """Close the consumers (leaving their groups), giving up after ``seconds``.

    Closing waits for a rebalance in progress, which on Kafka can last until a dead member's
    session expires; the process is ending, and the broker drops the member then anyway.
    """

    def close_all() -> None:
        for client in clients:
            client.close()

    closing = threading.Thread(target=close_all, daemon=True)
    closing.start()
    closing.join(seconds)
    if closing.is_alive():
        log.warning("consumers did not close within %.0fs; exiting without waiting", seconds)


def received_at(message: Message) -> float | None:
    """Return the record's Kafka timestamp in epoch seconds, or None when it has none."""
    kind, milliseconds = message.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else milliseconds / 1000


def _finite(moment: float) -> float | None:
    """Return ``moment``, or None for -inf (JSON has no infinities)."""
    return None if moment == -math.inf else moment
