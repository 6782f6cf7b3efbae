"""The intake's delivery on a real broker: a batch's records and offsets commit together."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline import delivery as delivery_module
from pipeline.delivery import DELIVERIES, ExactlyOnce, rewind
from pipeline.kafka import consumer, producer
from pipeline.settings import Settings
from tests.conftest import incompressible

pytestmark = pytest.mark.integration
RECORDS = [b"one", b"two", b"three"]


def new_topic(settings: Settings, config: dict[str, str] | None = None, partitions: int = 1) -> str:
    name = f"{settings.topic_prefix}delivery-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(settings.librdkafka_config())
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
    admin.create_topics([topic])[name].result()
    return name


def read(settings: Settings, topic: str, count: int) -> list[Message]:
    """Return the first ``count`` records of ``topic`` a read_committed consumer sees (or all)."""
    reader = consumer(settings, f"read-{uuid.uuid4().hex[:6]}")
    reader.assign([TopicPartition(topic, 0, 0)])
    found: list[Message] = []
    for _ in range(20):
        found += [m for m in reader.consume(10, 0.5) if m.error() is None]
        if len(found) >= count:
            break
    reader.close()
    return found


def exactly_once(settings: Settings, reader: Consumer) -> ExactlyOnce:
    """Return an exactly-once delivery whose producers share one new transactional id."""
    transactional_id = f"test-{uuid.uuid4().hex[:6]}"
    return ExactlyOnce(lambda: producer(settings, **{"transactional.id": transactional_id}), reader)


def read_again(reader: Consumer) -> list[Message]:
    """Return the records ``reader`` reads next, up to as many as were produced."""
    again: list[Message] = []
    for _ in range(40):
        again += [m for m in reader.consume(10, 0.5) if m.error() is None]
        if len(again) == len(RECORDS):
            break
    return again


def assert_taken_over(
    settings: Settings, delivery: ExactlyOnce, reader: Consumer, out: str
) -> None:
    """Assert that after a take-over and a rewind the batch is read again and, committed, is
    seen once."""
    rewind(reader)
    again = read_again(reader)
    assert [m.value() for m in again] == RECORDS  # rewound: the same batch is read again
    delivery.begin()
    for message in again:
        delivery.producer.produce(out, message.value())
    assert delivery.end(delivery.offsets())
    assert [m.value() for m in read(settings, out, 2 * len(RECORDS))] == RECORDS  # once


def source_with_records(settings: Settings) -> tuple[str, Consumer, list[Message]]:
    """Return a filled source topic, a group consumer on it and the batch it read."""
    source = new_topic(settings)
    writer = producer(settings)
    for value in RECORDS:
        writer.produce(source, value)
    writer.flush(15)
    reader = consumer(settings, f"{settings.group_id}-intake")
    reader.subscribe([source])
    batch: list[Message] = []
    for _ in range(40):
        batch += [m for m in reader.consume(10, 0.5) if m.error() is None]
        if len(batch) == len(RECORDS):
            break
    return source, reader, batch


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_batch_commits_its_records_and_offsets_together(
    settings: Settings, guarantee: str
) -> None:
    source, reader, batch = source_with_records(settings)
    out = new_topic(settings)
    config = {"transactional.id": f"test-{uuid.uuid4().hex[:6]}"}
    delivery = DELIVERIES[guarantee](
        lambda: producer(settings, **(config if guarantee == "exactly_once" else {})),
        reader,
        lambda: None,
    )
    writer = delivery.producer
    delivery.begin()
    for message in batch:
        writer.produce(out, message.value())
    assert delivery.end(delivery.offsets())
    assert [m.value() for m in read(settings, out, len(RECORDS))] == RECORDS
    (committed,) = reader.committed([TopicPartition(source, 0)], timeout=15)
    assert committed.offset == len(RECORDS)
    reader.close()


def test_a_batch_that_cannot_commit_is_aborted_and_read_again(settings: Settings) -> None:
    source, reader, batch = source_with_records(settings)
    out = new_topic(settings)
    small = new_topic(settings, {"max.message.bytes": "1024"})
    delivery = exactly_once(settings, reader)
    writer = delivery.producer
    delivery.begin()
    for message in batch:
        writer.produce(out, message.value())
    writer.produce(small, incompressible(4096))  # refused by the broker: the transaction aborts
    assert not delivery.end(delivery.offsets())
    assert read(settings, out, 1) == []  # nothing of the batch is visible read_committed
    (committed,) = reader.committed([TopicPartition(source, 0)], timeout=15)
    assert committed.offset < 0  # no offset was committed
    rewind(reader)
    again = read_again(reader)
    assert [m.value() for m in again] == RECORDS  # rewound: the same batch is read again
    delivery.begin()
    for message in again:
        writer.produce(out, message.value())
    assert delivery.end(delivery.offsets())
    assert [m.value() for m in read(settings, out, len(RECORDS))] == RECORDS  # once, not twice
    reader.close()


def test_a_transaction_failed_while_its_records_are_added_is_aborted_and_read_again(
    settings: Settings,
) -> None:
    _, reader, batch = source_with_records(settings)
    out, small = new_topic(settings), new_topic(settings, {"max.message.bytes": "1024"})
    delivery = exactly_once(settings, reader)
    writer = delivery.producer
    delivery.begin()
    writer.produce(small, incompressible(4096))  # the broker refuses it: the transaction fails
    writer.flush(15)
    with pytest.raises(KafkaException) as refused:  # librdkafka takes no more records
        for message in batch:
            writer.produce(out, message.value())
    assert not refused.value.args[0].fatal()
    delivery.recover(refused.value)
    assert delivery.producer is writer  # aborted: the producer goes on
    assert_taken_over(settings, delivery, reader, out)
    reader.close()


def test_after_a_fatal_producer_error_a_new_producer_takes_over_and_the_batch_is_read_again(
    settings: Settings,
) -> None:
    _, reader, batch = source_with_records(settings)
    out = new_topic(settings)
    delivery = exactly_once(settings, reader)
    failed = delivery.producer
    delivery.begin()
    for message in batch:
        failed.produce(out, message.value())
    failed.flush(15)  # the records reach the broker inside the open transaction
    # What librdkafka raises when a failed-over coordinator refuses to end the transaction:
    error = KafkaError(KafkaError.INVALID_TXN_STATE, "Failed to end transaction", fatal=True)
    delivery.recover(KafkaException(error))
    assert delivery.producer is not failed
    assert_taken_over(settings, delivery, reader, out)
    reader.close()


def test_a_fenced_producer_stops_the_intake(settings: Settings) -> None:
    _, reader, _ = source_with_records(settings)
    delivery = exactly_once(settings, reader)
    ExactlyOnce(delivery.new_producer, reader)  # a newer instance with the same id
    delivery.begin()
    with pytest.raises(KafkaException) as fenced:
        delivery.producer.produce(new_topic(settings), b"x")
        delivery.end(None)
    with pytest.raises(KafkaException):
        delivery.recover(fenced.value)  # a newer instance owns the id: no take-over
    reader.close()


class HangingOffsets(Producer):
    """A real producer whose ``send_offsets_to_transaction`` hangs past its timeout, as
    librdkafka's does when the group coordinator's node is gone."""

    def send_offsets_to_transaction(self, *args: object) -> None:
        time.sleep(5)


def test_offsets_that_hang_give_the_producer_up_and_the_batch_is_read_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "OFFSETS_TIMEOUT", 0.5)
    monkeypatch.setattr(delivery_module, "OFFSETS_GRACE", 0.5)
    _, reader, batch = source_with_records(settings)
    out = new_topic(settings)
    transactional_id = f"test-{uuid.uuid4().hex[:6]}"
    kinds = iter([HangingOffsets, Producer])
    config = {**settings.librdkafka_config(), "transactional.id": transactional_id}
    delivery = ExactlyOnce(lambda: next(kinds)(config), reader)
    delivery.begin()
    for message in batch:
        delivery.producer.produce(out, message.value())
    started = time.monotonic()
    with pytest.raises(KafkaException) as hung:
        delivery.end(delivery.offsets())
    assert hung.value.args[0].fatal() and time.monotonic() - started < 3
    delivery.recover(hung.value)
    assert not isinstance(delivery.producer, HangingOffsets)
    assert_taken_over(settings, delivery, reader, out)
    reader.close()


class MovingCoordinator:
    """A real consumer whose first ``committed`` answers ``NOT_COORDINATOR``, as while the
    group's coordinator fails over to another broker."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer, self.refused = consumer, 0

    def committed(self, *args: object) -> list[TopicPartition]:
        if not self.refused:
            self.refused += 1
            raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))
        return self.consumer.committed(*args)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)


def test_a_rewind_while_the_coordinator_moves_asks_again(settings: Settings) -> None:
    _, reader, batch = source_with_records(settings)
    out = new_topic(settings)
    moving = MovingCoordinator(reader)
    delivery = exactly_once(settings, moving)  # type: ignore[arg-type]
    delivery.begin()
    for message in batch:
        delivery.producer.produce(out, message.value())
    failed = KafkaError(KafkaError._TIMED_OUT, "producer failed", fatal=True)
    delivery.recover(KafkaException(failed))
    rewind(moving)  # type: ignore[arg-type]
    assert moving.refused == 1
    assert_taken_over(settings, delivery, reader, out)
    reader.close()
