"""Replay log files into the raw topics, one record per event, keyed by host."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.files import read_records
from pipeline.kafka import producer
from pipeline.normalize import Normalizer, default_normalizer
from pipeline.parse import parse_event
from pipeline.rejects import Rejected
from pipeline.settings import Settings
from pipeline.topics import Topics


def replay_files(
    paths: Iterable[Path],
    settings: Settings,
    topics: Topics,
    on_record: Callable[[], None] = lambda: None,
    normalizer: Normalizer | None = None,
) -> Counter[str]:
    """Produce every event of ``paths`` to its source's raw topic; return counts per topic.

    Records whose source has no raw topic are counted under ``skipped:<reason>``.
    """
    normalizer = normalizer or default_normalizer()
    raw_topics = topics.raw()
    client = producer(settings)
    counts: Counter[str] = Counter()
    for path in paths:
        for record in read_records(path):
            on_record()
            try:
                fields = parse_event(record.payload).fields
                topic = raw_topics[normalizer.identify(fields).source]
            except Rejected as rejected:
                counts[f"skipped:{rejected.reason}"] += 1
                continue
            key = fields.get("Computer") or fields.get("dest") or ""
            client.produce(topic, value=record.payload, key=key.encode())
            client.poll(0)
            counts[topic] += 1
    remaining = client.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} record(s) were not delivered to the broker")
    return counts
