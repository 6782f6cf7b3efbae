"""Reading partitions again on a real broker (``RangeReader``): what the stages take over from."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaException

from pipeline.kafka import RangeReader, producer
from pipeline.settings import Settings
from tests.integration.test_delivery import new_topic

pytestmark = pytest.mark.integration


def write_committed_then_aborted(settings: Settings, topic: str) -> None:
    """Write b"a", b"b" committed, then b"x" aborted, then b"c" committed, to partition 0."""
    writer = producer(settings, **{"transactional.id": f"reread-{uuid.uuid4().hex[:6]}"})
    writer.init_transactions(30)
    for values, commit in (([b"a", b"b"], True), ([b"x"], False), ([b"c"], True)):
        writer.begin_transaction()
        for value in values:
            writer.produce(topic, value, partition=0)
        (writer.commit_transaction if commit else writer.abort_transaction)(30)


def test_a_partition_is_read_to_its_end_committed_records_only(settings: Settings) -> None:
    topic = new_topic(settings, partitions=2)
    write_committed_then_aborted(settings, topic)
    reader = RangeReader(settings, topic)
    assert [m.value() for m in reader.read_all(0)] == [b"a", b"b", b"c"]
    assert reader.read_all(1) == []  # empty: its end is reported, not waited for
    assert reader.first_offset(0) == 0


def test_a_range_passes_over_markers_and_aborted_records(settings: Settings) -> None:
    topic = new_topic(settings, partitions=2)
    write_committed_then_aborted(settings, topic)
    reader = RangeReader(settings, topic)
    offsets = [m.offset() for m in reader.read_all(0)]
    assert [m.value() for m in reader.read(0, 1, offsets[-1])] == [b"b"]
    with pytest.raises(KafkaException, match="ended before offset"):
        reader.read(0, 0, offsets[-1] + 10)


def test_a_partition_read_is_let_go(settings: Settings) -> None:
    """Nothing stays assigned after a read: an idle reader sends the broker no fetches."""
    topic = new_topic(settings, partitions=2)
    write_committed_then_aborted(settings, topic)
    reader = RangeReader(settings, topic)
    offsets = [m.offset() for m in reader.read_all(0)]
    assert reader.reader.assignment() == []
    reader.read(0, 0, offsets[1])  # stops early, at the record of offset ``end``
    assert reader.reader.assignment() == []
    assert reader.read_all(1) == []  # and reads on
