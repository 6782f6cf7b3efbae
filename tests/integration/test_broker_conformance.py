"""The broker behaves as Kafka where the pipeline depends on it (catches a wrong broker).

These run on every engine. Where the embedded broker differs from Kafka, the test is marked
``differs_on_embedded`` with the difference: it must pass on Apache Kafka and fail on the
embedded broker (a strict xfail), so a fixed difference shows up.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.kafka import consumer, producer
from pipeline.settings import Settings
from tests.conftest import ENGINE

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


def differs_on_embedded(reason: str) -> pytest.MarkDecorator:
    """Mark a test of Kafka behaviour the embedded broker lacks: it must fail there."""
    return pytest.mark.xfail(ENGINE == "embedded", reason=f"embedded broker: {reason}", strict=True)


@differs_on_embedded("ignores fetch.max.wait.ms, so idle consumers spin")
def test_an_idle_fetch_waits_up_to_fetch_max_wait(settings: Settings) -> None:
    topic = new_topic(settings, 1)
    stats: list[dict[str, Any]] = []
    reader = consumer(
        settings,
        f"idle-{uuid.uuid4().hex[:6]}",
        **{"fetch.wait.max.ms": 500, "statistics.interval.ms": 1000},
        stats_cb=lambda text: stats.append(orjson.loads(text)),
    )
    reader.assign([TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        reader.poll(0.2)
    reader.close()
    fetches = [sum(b["req"].get("Fetch", 0) for b in s["brokers"].values()) for s in stats]
    assert len(fetches) >= 3
    per_second = (fetches[-1] - fetches[1]) / (len(fetches) - 2)
    assert per_second <= 4  # one fetch per 500 ms wait, not a spin


@differs_on_embedded("never expires the session of a member that died without leaving")
def test_a_dead_member_s_partitions_move_after_its_session_timeout(settings: Settings) -> None:
    topic, group = new_topic(settings, 2), f"dead-{uuid.uuid4().hex[:6]}"
    script = (
        "import sys, time\n"
        "from confluent_kafka import Consumer\n"
        "c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': sys.argv[2],"
        " 'session.timeout.ms': 6000, 'heartbeat.interval.ms': 1000})\n"
        "c.subscribe([sys.argv[3]])\n"
        "while True:\n"
        "    c.poll(0.2)\n"
        "    if c.assignment():\n"
        "        print('assigned', flush=True)\n"
    )
    command = [sys.executable, "-c", script, settings.bootstrap_servers, group, topic]
    member = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert member.stdout is not None and member.stdout.readline() == b"assigned\n"
    member.kill()  # no LeaveGroup: only the session timeout can free its partitions
    member.wait()
    survivor = consumer(settings, group, **{"session.timeout.ms": 6000})
    survivor.subscribe([topic])
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and len(survivor.assignment()) < 2:
        survivor.poll(0.2)
    owned = {tp.partition for tp in survivor.assignment()}
    survivor.close()
    assert owned == {0, 1}


def test_only_committed_transactions_are_read_committed(settings: Settings) -> None:
    topic = new_topic(settings, 1)
    writer = producer(settings, **{"transactional.id": f"tx-{uuid.uuid4().hex[:6]}"})
    writer.init_transactions(15)
    for value, commit in ((b"kept", True), (b"aborted", False), (b"also kept", True)):
        writer.begin_transaction()
        writer.produce(topic, value)
        if commit:
            writer.commit_transaction(15)
        else:
            writer.abort_transaction(15)
    reader = consumer(
        settings, f"tx-{uuid.uuid4().hex[:6]}", **{"isolation.level": "read_committed"}
    )
    reader.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    while len(values) < 2 and time.monotonic() < deadline:
        values += [m.value() or b"" for m in reader.consume(10, 0.5) if m.error() is None]
    reader.close()
    assert values == [b"kept", b"also kept"]
