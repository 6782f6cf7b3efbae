"""How the intake makes a batch durable: its records, then its raw offsets.

``exactly_once`` wraps each batch in one Kafka transaction holding its matches, dead letters
and ticks and its input offsets (``send_offsets_to_transaction``): a consumer reading
``read_committed`` sees all of a batch or none of it, and a batch processed again after a
crash or an aborted transaction leaves no second copy. The transactional id is the worker's
instance id when it has one, so a restarted worker fences its predecessor and aborts what it
left open at once; the consumer group's generation fences a zombie after a rebalance (KIP-447).
``at_least_once`` flushes the batch's records and then commits the offsets. A batch here is
what one commit carries: the intake sends the batches it read while the commit before was in
flight together (``pipeline.intake``).

A batch's offsets are read (``offsets``) before the next batch is, and ``end`` may then run in
another thread while the consumer reads on: librdkafka's clients are thread-safe, and a
consumer committing from one thread while another consumes is a supported use
(confluent-kafka-python issue 460). A batch that ``end`` aborts, and a producer that
``recover`` replaced, leave the consumer past records not committed: ``rewind`` it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import NamedTuple, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from pipeline import metrics
from pipeline.kafka import (
    CALL_TIMEOUT,
    COORDINATOR_MOVING,
    flush,
    retrying,
    transactional,
    within,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)
OFFSETS_TIMEOUT = 5.0  # longer only delays a rebalance that waits for this intake to poll
# librdkafka's send_offsets_to_transaction can block past its timeout for good when the group
# coordinator's node is gone (librdkafka issues 5456 and 5511, open in 2.16): past this much
# more, the producer is given up as failed, and a new one takes the transactional id over.
OFFSETS_GRACE = 10.0

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


REWIND_ATTEMPTS = 30  # a second apart: a failed-over coordinator answers within seconds

# A newer instance holds the transactional id: this one must stop.
FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


class Offsets(NamedTuple):
    """Where reading stood when a batch was read: the input offsets it commits."""

    positions: list[TopicPartition]
    group: object | None  # the consumer group's metadata (exactly_once)


class Delivery(Protocol):
    """Begin a batch, then make its records and (with ``offsets``) its input offsets durable."""

    producer: Producer

    def begin(self) -> None:
        """Start a batch."""

    def offsets(self) -> Offsets:
        """Return the consumer's offsets now, those of the batch just read."""

    def end(self, offsets: Offsets | None) -> bool:
        """Make the batch durable; return False when it was aborted (rewind, read it again)."""

    def recover(self, exception: KafkaException) -> None:
        """Get a usable producer after ``exception`` (then rewind), or re-raise it."""


class AtLeastOnce:
    """Flush the batch's records, then commit the consumer's offsets."""

    def __init__(
        self,
        new_producer: Callable[[], Producer],
        consumer: Consumer,
        waiting: Callable[[], None] = lambda: None,
    ) -> None:
        self.producer, self.consumer = new_producer(), consumer

    def begin(self) -> None:
        """Start a batch (nothing to do)."""

    def recover(self, exception: KafkaException) -> None:
        """Re-raise: a plain producer's failure is not the batch's."""
        raise exception

    def offsets(self) -> Offsets:
        """Return the consumer's positions now."""
        return Offsets(_positions(self.consumer), None)

    def end(self, offsets: Offsets | None) -> bool:
        """Wait for every record's acknowledgement, then commit ``offsets``."""
        flush(self.producer)
        if offsets is None or not offsets.positions:
            return True
        try:
            self.consumer.commit(offsets=offsets.positions, asynchronous=False)
        except KafkaException as error:
            if error.args[0].code() not in UNCOMMITTABLE:
                raise
            log.info("batch not committed, its partitions moved: %s", error.args[0].str())
        return True


class ExactlyOnce:
    """One transaction per batch: its records and its input offsets commit together."""

    def __init__(
        self,
        new_producer: Callable[[], Producer],
        consumer: Consumer,
        waiting: Callable[[], None] = lambda: None,
    ) -> None:
        """``waiting`` is called between the attempts of a call a broker failing over delays:
        the intake reports it is waiting, not stuck."""
        self.new_producer, self.consumer, self.waiting = new_producer, consumer, waiting
        self.producer = self._initialised()

    def _initialised(self) -> Producer:
        """Return a new transactional producer, its predecessors fenced and their leftovers
        aborted."""
        created = self.new_producer()
        retrying(created.init_transactions, CALL_TIMEOUT, between=self.waiting)
        return created

    def begin(self) -> None:
        """Open the batch's transaction."""
        self.producer.begin_transaction()

    def offsets(self) -> Offsets:
        """Return the consumer's positions and its group's metadata now."""
        return Offsets(_positions(self.consumer), self.consumer.consumer_group_metadata())

    def end(self, offsets: Offsets | None) -> bool:
        """Commit the transaction with ``offsets``; abort it if it cannot commit.

        Offsets that cannot be sent at once abort the batch: the group is rebalancing, and the
        rebalance waits for this intake to poll again. A commit that times out (a broker failing
        over) is retried. Any failure that leaves the producer usable aborts the batch, which
        is read again; a fatal one is for ``recover``.
        """
        try:
            if offsets is not None:
                self._send_offsets(offsets.positions, offsets.group)
            retrying(self.producer.commit_transaction, CALL_TIMEOUT, between=self.waiting)
        except KafkaException as exception:
            if exception.args[0].fatal():
                raise
            self._abort(exception.args[0])
            return False
        return True

    def _abort(self, error: KafkaError) -> None:
        """Abort the batch's transaction after ``error``, which left the producer usable."""
        log.warning("intake transaction aborted, the batch is read again: %s", error.str())
        self.waiting()
        retrying(self.producer.abort_transaction, CALL_TIMEOUT, between=self.waiting)
        metrics.transactions_aborted_total.labels("intake").inc()

    def _send_offsets(self, positions: list[TopicPartition], metadata: object) -> None:
        """Add the offsets to the transaction; one that hangs fails like a fatal error."""
        send = self.producer.send_offsets_to_transaction
        try:
            within(OFFSETS_TIMEOUT + OFFSETS_GRACE, send, positions, metadata, OFFSETS_TIMEOUT)
        except TimeoutError:
            error = KafkaError(KafkaError._TIMED_OUT, "offsets not sent, past timeout", fatal=True)
            raise KafkaException(error) from None

    def recover(self, exception: KafkaException) -> None:
        """Make the producer usable after ``exception``, raised while the batch was sent: abort
        the transaction, or after a fatal error let a new producer take the transactional id
        over (which aborts it); re-raise when fenced.

        A transaction can fail while records are being added to it (a record the broker
        refused, sequence numbers that need the epoch bumped): librdkafka then refuses further
        records (``_STATE``) until it is aborted. A broker failing over can leave the
        transaction in a state its coordinator refuses (``INVALID_TXN_STATE``, fatal in
        librdkafka): the producer is unusable, the intake is not.
        """
        error = exception.args[0]
        if error.code() in FENCED:
            raise exception
        if not error.fatal():
            self._abort(error)
            return
        log.warning("intake producer failed, a new one takes over: %s", error.str())
        self.producer.purge()
        self.producer = self._initialised()
        metrics.transactions_aborted_total.labels("intake").inc()


def _positions(consumer: Consumer) -> list[TopicPartition]:
    return [p for p in consumer.position(consumer.assignment()) if p.offset >= 0]


def rewind(consumer: Consumer, waiting: Callable[[], None] = lambda: None) -> None:
    """Seek every assigned partition back to its committed offset, asking again while the
    group's coordinator moves (a broker failing over answers ``NOT_COORDINATOR`` meanwhile)."""

    def coordinator_moving() -> None:
        time.sleep(1.0)
        waiting()

    waiting()
    committed = retrying(
        consumer.committed,
        consumer.assignment(),
        CALL_TIMEOUT,
        attempts=REWIND_ATTEMPTS,
        between=coordinator_moving,
        also=COORDINATOR_MOVING,
    )
    for position in committed:
        if position.offset < 0:
            position.offset = OFFSET_BEGINNING
        consumer.seek(position)


def producer_config(settings: Settings) -> dict[str, str | int]:
    """Return the producer settings the processing guarantee needs."""
    return transactional(settings, f"intake-{settings.instance_id or uuid.uuid4().hex}")


DELIVERIES: dict[
    str, Callable[[Callable[[], Producer], Consumer, Callable[[], None]], Delivery]
] = {
    "at_least_once": AtLeastOnce,
    "exactly_once": ExactlyOnce,
}
