"""confluent-kafka clients built from Settings: admin, producer, consumer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.settings import Settings
from pipeline.topics import Topics

# A transaction a dead producer left open holds back read_committed readers of its partitions
# this long unless a successor fences it first; outputs wait at most this long for a leader
# (a killed Kafka node's partitions move after its 9 s session timeout).
TRANSACTION_TIMEOUT_MS = 30_000
CALL_TIMEOUT = 30.0  # how long a blocking client call (flush, commit, init) may take
READ_TIMEOUT = 10.0  # a partition being read again that sends nothing for this long fails
RECEIVE_MAX_BYTES = 2_147_483_647  # librdkafka's maximum for receive.message.max.bytes
FETCH_QUEUE_BACKOFF_MS = 10  # librdkafka waits 1 s by default once its prefetch queue is full
REREAD_WAIT_MS = 10  # how long the broker may hold a re-reading fetch that finds nothing
T = TypeVar("T")
log = logging.getLogger(__name__)
# The group's coordinator is moving to another broker: asking again soon finds the new one.
COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def retrying(
    call: Callable[..., T],
    *args: Any,
    attempts: int = 3,
    between: Callable[[], object] = lambda: None,
    also: frozenset[int] = frozenset(),
) -> T:
    """Return ``call(*args)``, calling again while it fails with a retriable Kafka error or one
    whose code is in ``also`` (``between`` is called before each new attempt: the caller is
    waiting, not stuck)."""
    for _ in range(attempts - 1):
        try:
            return call(*args)
        except KafkaException as exception:
            error = exception.args[0]
            if not (error.retriable() or error.code() in also):
                raise
            log.info("retrying %s: %s", getattr(call, "__name__", call), exception.args[0].str())
            between()
    return call(*args)


def within(seconds: float, call: Callable[..., T], *args: Any) -> T:
    """Return ``call(*args)``, run in a thread of its own; raise ``TimeoutError`` when it has
    not returned within ``seconds`` (the thread is left to end when the call does)."""
    result: Future[T] = Future()

    def run() -> None:
        try:
            result.set_result(call(*args))
        except BaseException as error:  # handed to the caller, as the call would raise it
            result.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return result.result(timeout=seconds)


def transactional(settings: Settings, transactional_id: str) -> dict[str, str | int]:
    """Return the settings of a producer named ``transactional_id`` under exactly_once (none
    under at_least_once: its producer is plain)."""
    if settings.processing_guarantee == "at_least_once":
        return {}
    return {
        "transactional.id": f"{settings.group_id}-{transactional_id}",
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
    }


def flush(client: Producer) -> None:
    """Wait for every record's acknowledgement; raise if one is not acknowledged."""
    if undelivered := client.flush(CALL_TIMEOUT):
        error = KafkaError(KafkaError._MSG_TIMED_OUT, f"{undelivered} record(s) not acknowledged")
        raise KafkaException(error)


def producer(settings: Settings, **overrides: Any) -> Producer:
    """Return a Producer with idempotence on, small-batch latency and the settings'
    compression."""
    config = {
        **settings.librdkafka_config(),
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": settings.compression_type,
        **overrides,
    }
    return Producer(config)


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """Return a Consumer that commits only when told to.

    Fetches are bounded per partition and in total. The receive limit is librdkafka's largest:
    the local test broker ignores both bounds and answers a fetch with the whole backlog (561 MB
    seen), which a smaller limit refuses for ever; a real Kafka broker keeps to the bounds.
    When the prefetched records exceed librdkafka's queue bound (64 MiB), its next fetch waits
    ``fetch.queue.backoff.ms``, 1 s by default: a consumer behind a backlog then reads one queue
    per second (~30k events of 2 KB); 10 ms lets it read as fast as it processes.
    """
    config = {
        **settings.librdkafka_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "max.partition.fetch.bytes": 1 << 20,
        "fetch.max.bytes": 32 << 20,
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        "receive.message.max.bytes": RECEIVE_MAX_BYTES,
        **overrides,
    }
    return Consumer(config)


class RangeReader:
    """Reads a topic's partitions again, committed records only, with one long-lived consumer.

    It never commits, and reports a partition's end when it gets there. The broker holds a
    fetch that finds nothing for ``fetch.wait.max.ms`` (500 ms by default) before the end can
    be reported, which made reading an empty partition back take a second; here it answers
    within ``REREAD_WAIT_MS``, and the partition is unassigned once read, so the consumer does
    not keep fetching while idle.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        ends = {"enable.partition.eof": True, "fetch.wait.max.ms": REREAD_WAIT_MS}
        self.reader = consumer(settings, f"{settings.group_id}-reread", **ends)

    def first_offset(self, partition: int) -> int:
        """Return the oldest offset still held in ``partition``."""
        low, _ = self.reader.get_watermark_offsets(TopicPartition(self.topic, partition), 30)
        return int(low)

    def read(self, partition: int, start: int, end: int) -> list[Message]:
        """Return the records of ``partition`` with offsets in [start, end).

        A record at ``end`` must exist: reading stops when it arrives, so offsets that hold no
        record (transaction markers, aborted records) are passed over, never waited for.
        """
        records: list[Message] = []
        for message in self._follow(partition, start):
            if (message.offset() or 0) >= end:
                return records
            records.append(message)
        raise KafkaException(f"{self.topic}[{partition}] ended before offset {end}")

    def read_all(self, partition: int) -> list[Message]:
        """Return every committed record ``partition`` holds, up to its end."""
        return list(self._follow(partition, OFFSET_BEGINNING))

    def _follow(self, partition: int, start: int) -> Iterator[Message]:
        """Yield the records of ``partition`` from ``start`` until its end."""
        self.reader.assign([TopicPartition(self.topic, partition, start)])
        try:
            yield from self._until_end(partition)
        finally:
            self.reader.unassign()

    def _until_end(self, partition: int) -> Iterator[Message]:
        deadline = time.monotonic() + READ_TIMEOUT
        while time.monotonic() < deadline:
            for message in self.reader.consume(10_000, 0.05):  # returns when full or timed out
                deadline = time.monotonic() + READ_TIMEOUT
                error = message.error()
                if error is None:
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    return
                else:
                    raise KafkaException(error)
        raise KafkaException(f"{self.topic}[{partition}] sent neither records nor its end")


def create_topics(
    settings: Settings, topics: Topics, *, raw: bool = False, timeout: float = 30.0
) -> dict[str, str]:
    """Create the topics wmiwatch owns (with ``raw``, the raw ones too) that do not exist yet.

    Return name -> 'created' | 'exists'. An existing topic is never altered.
    """
    wanted = [
        NewTopic(
            topics.name(spec.name),
            num_partitions=spec.partitions,
            replication_factor=settings.replication_factor,
            config={**spec.config, **settings.topic_config()},
        )
        for spec in topics.deployed(raw=raw)
    ]
    return _create(settings, wanted, timeout)


def create_leader_topic(settings: Settings, timeout: float = 30.0) -> dict[str, str]:
    """Create Faust's leader topic with the deployment's replication before Faust would.

    Faust creates it with the replication factor but no topic config, so it would get the
    broker's ``min.insync.replicas`` rather than the deployment's.
    """
    name = f"{settings.group_id}-__assignor-__leader"
    leader = NewTopic(
        name,
        num_partitions=1,
        replication_factor=settings.replication_factor,
        config=settings.topic_config(),
    )
    return _create(settings, [leader], timeout)


def _create(settings: Settings, wanted: list[NewTopic], timeout: float) -> dict[str, str]:
    admin = AdminClient(settings.librdkafka_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    status = {topic.topic: "exists" for topic in wanted if topic.topic in existing}
    missing = [topic for topic in wanted if topic.topic not in existing]
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout).items():
            try:
                future.result()
                status[name] = "created"
            except KafkaException as error:
                if "TOPIC_ALREADY_EXISTS" not in str(error):
                    raise
                status[name] = "exists"
    return status


def watched_admin(settings: Settings) -> tuple[AdminClient, list[KafkaError]]:
    """Return an admin client and the list its refused logins are collected in.

    librdkafka reports an authentication failure only to the error callback: after a failed
    call, ``admin.poll(0)`` serves it and the list says whether the login was refused.
    """
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            refused.append(error)

    config: dict[str, Any] = {
        **settings.librdkafka_config(),
        "error_cb": on_error,
        "log_level": 0,  # the errors are reported to the caller, not logged per retry
    }
    return AdminClient(config), refused


def denied_topics(settings: Settings, topics: Topics, timeout: float = 30.0) -> list[str]:
    """Return the topics this worker needs that its principal may not even describe.

    Raise KafkaException when the cluster cannot be asked: down, or the login refused (then
    with the authentication error).
    """
    admin, refused = watched_admin(settings)
    denied = []
    for spec in topics.deployed(raw=True):
        name = topics.name(spec.name)
        try:
            metadata = admin.list_topics(topic=name, timeout=timeout)
        except KafkaException:
            admin.poll(0)
            if refused:
                raise KafkaException(refused[0]) from None
            raise
        error = metadata.topics[name].error
        if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            denied.append(name)
    return denied
