"""The broker behaves as Kafka where the pipeline depends on it (catches a wrong broker)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.kafka import consumer, producer
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


def new_topic(settings: Settings, partitions: int) -> str:
    name = f"{settings.topic_prefix}conformance-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(settings.librdkafka_config())
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name
    ].result()
    return name


def fill(settings: Settings, topic: str, count: int, partition: int = 0) -> None:
    client = producer(settings)
    for number in range(count):
        client.produce(topic, str(number).encode(), partition=partition)
    assert client.flush(10) == 0


def read(settings: Settings, group: str, topic: str, count: int) -> list[bytes]:
    reader = consumer(settings, group)
    reader.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < count and time.monotonic() < deadline:
        values += [
            m.value() or b"" for m in reader.consume(count - len(values), 0.5) if not m.error()
        ]
    reader.commit(asynchronous=False)
    reader.close()
    return values


def test_high_watermark_is_the_next_offset(settings: Settings) -> None:
    topic = new_topic(settings, 1)
    fill(settings, topic, 10)
    reader = consumer(settings, "watermarks")
    assert reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 10)
    reader.close()


def test_committed_offsets_resume_the_group(settings: Settings) -> None:
    topic = new_topic(settings, 1)
    fill(settings, topic, 10)
    assert read(settings, "resume", topic, 4) == [b"0", b"1", b"2", b"3"]
    assert read(settings, "resume", topic, 6) == [str(n).encode() for n in range(4, 10)]


def test_two_members_split_the_partitions(settings: Settings) -> None:
    topic = new_topic(settings, 4)
    members = [consumer(settings, "rebalance") for _ in range(2)]
    for member in members:
        member.subscribe([topic])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for member in members:
            member.poll(0.2)
        owned = [{tp.partition for tp in member.assignment()} for member in members]
        if all(owned) and set().union(*owned) == {0, 1, 2, 3}:
            break
    assert owned[0].isdisjoint(owned[1])
    assert owned[0] | owned[1] == {0, 1, 2, 3}
    for member in members:
        member.close()
