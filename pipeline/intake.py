"""Batched intake: raw topics -> detection core -> matches and dead letters (confluent-kafka).

The bulk of raw events never reach Faust: this loop reads them in batches, runs the pure
core, produces the few matches in one record per matches partition (that of their dest), and
commits its offsets only with (exactly-once) or after (at-least-once) the records it produced.
A transaction commits in a thread of its own while the next batches are read and processed;
their records go out together, in the next transaction, once the commit has returned (a broker
slow to commit gets fewer, larger transactions; a fast one one per batch), and when it was
aborted, all of them are read again. The worker runs the intake in a process of its own, so
parsing never waits for the Faust process's interpreter lock.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.synchronize import Event as ProcessEvent
from typing import NamedTuple

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from pipeline import metrics
from pipeline.batch import BatchProcessor, BatchResult, match_batches
from pipeline.delivery import DELIVERIES, Offsets, producer_config, rewind
from pipeline.engine import Detector
from pipeline.health import IntakeStatus
from pipeline.kafka import consumer, producer, within
from pipeline.logs import configure
from pipeline.records import TICK
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.suppress import Suppressions, known_fields
from pipeline.ticks import Position, TickReporter
from pipeline.topics import Topics

log = logging.getLogger(__name__)
CLOSE_SECONDS = 10.0
STACKS_SIGNAL = signal.SIGUSR1  # an intake told this writes every thread's stack to stderr
# Batches read while a commit is in flight are sent together, at most this many, yielding at
# most this many bytes (past it, at once: crafted events can make a batch's dead letters large).
MAX_TRANSACTION_BATCHES = 10
MAX_HELD_BYTES = 8 << 20


class Held(NamedTuple):
    """A batch processed, waiting for the transaction that sends what it yields."""

    result: BatchResult
    size: int  # the bytes of the records it yields
    started: float  # when its processing began
    read: bool  # it holds records read (not only a tick)
    tick: bool  # ticks are due with it


class SuppressionFollower:
    """Keeps the intake's suppressions in step with the suppressions topic."""

    def __init__(self, reader: Consumer, topic: str, suppressions: Suppressions) -> None:
        self.reader, self.topic, self.suppressions = reader, topic, suppressions

    def catch_up(self) -> None:
        """Read the whole topic (every partition to its end), then keep following it."""
        metadata = self.reader.list_topics(self.topic, timeout=30).topics[self.topic]
        partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        self.reader.assign(partitions)
        ends = {
            p.partition: self.reader.get_watermark_offsets(p, timeout=30)[1] for p in partitions
        }
        positions = dict.fromkeys(ends, 0)
        while any(positions[p] < end for p, end in ends.items()):
            for message in self.poll(timeout=0.5):
                positions[message.partition() or 0] = (message.offset() or 0) + 1

    def poll(self, timeout: float) -> list[Message]:
        """Apply the entries that arrived; return their messages."""
        messages = [m for m in self.reader.consume(100, timeout) if m.error() is None]
        for message in messages:
            key = (message.key() or b"").decode("utf-8", "replace")
            self.suppressions.apply(key, message.value())
        return messages


def send_now(held: int, size: int, read: bool, committed: bool) -> bool:
    """Return whether to send the ``held`` batches processed so far, yielding ``size`` bytes:
    once the commit before has returned, when the last read found nothing more, or when they
    are enough batches or bytes for one transaction."""
    enough = held >= MAX_TRANSACTION_BATCHES or size >= MAX_HELD_BYTES
    return held > 0 and (committed or not read or enough)


class Intake:
    """Consume raw topics in batches; process them while the transaction before commits."""

    def __init__(
        self, settings: Settings, topics: Topics, detector: Detector, status: IntakeStatus
    ) -> None:
        self.settings, self.topics, self.status = settings, topics, status
        membership = {"group.instance.id": settings.instance_id} if settings.instance_id else {}
        self.consumer = consumer(
            settings, f"{settings.group_id}-intake", error_cb=self._on_client_error, **membership
        )
        config = producer_config(settings)
        self.delivery = DELIVERIES[settings.processing_guarantee](
            lambda: producer(settings, **config), self.consumer, status.beat
        )
        suppressions = Suppressions(known_fields(detector.rules.values(), detector.normalizer))
        self.follower = SuppressionFollower(
            consumer(settings, f"{settings.group_id}-suppressions"),
            topics.suppressions,
            suppressions,
        )
        self.reporter = TickReporter(detector.event_time)
        self.batches = BatchProcessor(detector, topics, suppressions, self.reporter, time.time)
        self.tick_partitions: list[int] = []
        self.source_count = 0  # partitions of the raw topics, all intakes together
        self.committed_at_assign: dict[tuple[str, int], int] = {}
        self.committing = ThreadPoolExecutor(1, thread_name_prefix="intake-commit")
        self.in_flight: Future[bool] | None = None  # the commit of the transaction before
        self.held: list[Held] = []  # batches processed since: sent in the next transaction
        self.read_again = False  # a batch was aborted: what was read since it is read again

    def run(self, stop: ProcessEvent) -> None:
        """Process batches until ``stop`` is set, then close the consumers."""
        raw = list(self.topics.raw().values())
        self.consumer.subscribe(raw, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.source_count = sum(self._partitions(topic) for topic in raw)
        self.follower.catch_up()
        self.tick_partitions = list(range(self._partitions(self.topics.matches)))
        next_tick = 0.0
        try:
            while not stop.is_set():
                self.status.beat()
                self.follower.poll(timeout=0)
                wait = 0 if self.held else 0.2  # batches held: send them as soon as none is read
                batch = self.consumer.consume(self.settings.intake_batch_size, timeout=wait)
                tick = time.monotonic() >= next_tick
                if batch or tick:
                    self.hold(batch, tick)
                if tick:
                    next_tick = time.monotonic() + self.settings.tick_interval_seconds
                size = sum(held.size for held in self.held)
                if send_now(len(self.held), size, bool(batch), self._commit_returned()):
                    self.deliver()
        finally:
            self.held.clear()  # not committed: read again by the partitions' next owner
            self.settle()
            self.committing.shutdown()
            self.producer.flush(30)
            _close_within(CLOSE_SECONDS, self.consumer, self.follower.reader)

    @property
    def producer(self) -> Producer:
        """Return the delivery's producer (a new one after a fatal error)."""
        return self.delivery.producer

    def _partitions(self, topic: str) -> int:
        return len(self.producer.list_topics(topic, timeout=30).topics[topic].partitions)

    def _on_assign(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        self.status.joined = True
        self.status.broker_error = None
        for position in self.consumer.committed(partitions, timeout=30):
            self.committed_at_assign[(position.topic, position.partition)] = position.offset

    def _on_revoke(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        """Forget revoked partitions; commit the transaction in flight and deliver their ticks
        before the new owner sends its own. The batches held are dropped: every partition is
        revoked (eager assignment), so they are read again from the committed offsets."""
        self.held.clear()
        self.settle()
        self.producer.flush(30)
        revoked = [(p.topic, p.partition) for p in partitions]
        self.reporter.forget(revoked)
        for partition in revoked:
            self.committed_at_assign.pop(partition, None)
            metrics.forget_lag(*partition)

    def _on_client_error(self, error: KafkaError) -> None:
        log.warning("kafka client error: %s", error)
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.status.broker_error = error.str()

    def _positions(self) -> list[Position]:
        """Return where reading of each assigned partition stands, and export its lag."""
        positions = []
        for assigned in self.consumer.position(self.consumer.assignment()):
            low, high = self.consumer.get_watermark_offsets(assigned, cached=True)
            committed = self.committed_at_assign.get((assigned.topic, assigned.partition), -1)
            next_offset = next((o for o in (assigned.offset, committed) if o >= 0), low)
            position = Position(assigned.topic, assigned.partition, next_offset, high)
            metrics.consumer_lag.labels(position.topic, str(position.partition)).set(position.lag)
            positions.append(position)
        return positions

    def _produce_ticks(self) -> None:
        """Send every matches partition this intake's tick."""
        tick = self.reporter.tick(self._positions(), self.source_count, time.time())
        if tick is None:
            return
        value = TICK.encode(tick)
        for partition in self.tick_partitions:  # resolved once at start, not every tick
            self.producer.produce(self.topics.matches, value, partition=partition)

    def hold(self, batch: list[Message], tick: bool) -> None:
        """Process ``batch`` while the transaction before commits; hold what it yields."""
        self.status.broker_error = None
        started = time.perf_counter()
        result = self.batches.process(batch)
        self.held.append(Held(result, result.size(), started, bool(batch), tick))

    def deliver(self) -> None:
        """Wait for the transaction in flight; then send what the batches held yield (and the
        ticks when due) and start their commit, or read them again if it was aborted."""
        held, self.held = self.held, []
        self.settle()
        if self.read_again:  # the consumer is past records not committed
            self._rewind()
            return
        try:
            self.delivery.begin()
            for topic, key, value in (record for h in held for record in h.result.produce):
                self.producer.produce(topic, value, key=key)
            matches = [match for h in held for match in h.result.matches]
            for partition, value in match_batches(matches, len(self.tick_partitions)):
                self.producer.produce(self.topics.matches, value, partition=partition)
            if any(h.tick for h in held):
                self._produce_ticks()
            offsets = self.delivery.offsets() if any(h.read for h in held) else None
        except KafkaException as exception:
            self.delivery.recover(exception)
            self._rewind()
            return
        self.in_flight = self.committing.submit(self._end, offsets, held)

    def _end(self, offsets: Offsets | None, held: list[Held]) -> bool:
        """Commit the batches ``held`` and count them once committed (in the committing
        thread)."""
        committed = self.delivery.end(offsets)
        if committed:  # an aborted batch is counted when it is processed again
            metrics.intake_transaction_batches.observe(len(held))
            for batch in held:
                batch.result.count()
                if batch.read:
                    metrics.intake_batch_seconds.observe(time.perf_counter() - batch.started)
        return committed

    def _commit_returned(self) -> bool:
        return self.in_flight is None or self.in_flight.done()

    def settle(self) -> None:
        """Wait for the transaction in flight to commit; if it could not, have what was read
        since it began read again."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is None:
            return
        try:
            committed = in_flight.result()
        except KafkaException as exception:
            self.delivery.recover(exception)
            committed = False
        self.read_again = self.read_again or not committed

    def _rewind(self) -> None:
        rewind(self.consumer, self.status.beat)
        self.read_again = False


def run_intake_process(
    settings: Settings, status: IntakeStatus, stop: ProcessEvent, loglevel: int
) -> None:
    """Run the intake until ``stop`` is set or the worker process is gone (process target)."""
    for number in (signal.SIGINT, signal.SIGTERM):  # the worker stops the intake via ``stop``
        signal.signal(number, signal.SIG_IGN)
    faulthandler.register(STACKS_SIGNAL, all_threads=True)  # where a stalled loop is stuck
    configure(loglevel, settings.log_format)
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
    try:
        within(seconds, _close_all, clients)
    except TimeoutError:
        log.warning("consumers did not close within %.0fs; exiting without waiting", seconds)
    except KafkaException:
        log.exception("consumers did not close cleanly; exiting")


def _close_all(clients: tuple[Consumer, ...]) -> None:
    for client in clients:
        client.close()
