"""Which partition a keyed record goes to, and values gathered per partition into batches.

Matches go to the partition of their dest and risk events to that of their risk object, as
librdkafka's default partitioner places a record keyed by it, so that a batch of them lands
where each would have gone alone.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator

import msgspec

BATCH_BYTES = 256 * 1024  # the values of one batch record, well under Kafka's 1 MB default


def key_partition(key: str, partitions: int) -> int:
    """Return the partition librdkafka's default partitioner gives a record keyed by ``key``
    (CRC-32 of the key): matches go to their dest's, risk batches to their risk object's."""
    return zlib.crc32(key.encode()) % partitions


def partitioned(
    keyed: Iterable[tuple[str, bytes]], partitions: int, limit: int = BATCH_BYTES
) -> Iterator[tuple[int, tuple[msgspec.Raw, ...]]]:
    """Yield (partition, values) for the (key, JSON value) pairs ``keyed``: each partition's
    values in order, in runs of at most ``limit`` bytes (a larger value alone)."""
    by_partition: defaultdict[int, list[bytes]] = defaultdict(list)
    for key, value in keyed:
        by_partition[key_partition(key, partitions)].append(value)
    for partition, values in by_partition.items():
        for run in _runs(values, limit):
            yield partition, tuple(msgspec.Raw(value) for value in run)


def _runs(values: list[bytes], limit: int) -> Iterator[list[bytes]]:
    run: list[bytes] = []
    size = 0
    for value in values:
        if run and size + len(value) > limit:
            yield run
            run, size = [], 0
        run.append(value)
        size += len(value)
    if run:
        yield run
