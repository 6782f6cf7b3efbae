"""Which partition a keyed record goes to, and values gathered per partition into batches."""

from __future__ import annotations

import zlib

from pipeline.partitions import key_partition, partitioned


def test_a_key_s_partition_is_its_crc32_modulo_the_partitions() -> None:
    """librdkafka's default (consistent_random) partitioner for a non-empty key; the
    integration test checks it against a real producer."""
    assert key_partition("ws01", 6) == zlib.crc32(b"ws01") % 6
    assert {key_partition(f"host{n}", 6) for n in range(60)} == set(range(6))


def runs(keyed: list[tuple[str, bytes]], limit: int) -> list[tuple[int, list[bytes]]]:
    return [(p, [bytes(v) for v in values]) for p, values in partitioned(keyed, 6, limit)]


def test_each_partition_s_values_keep_their_order_in_runs_of_at_most_the_limit() -> None:
    values = [b"[%02d]" % n for n in range(10)]  # 4 bytes each
    found = runs([("one", v) for v in values], limit=12)
    partition = key_partition("one", 6)
    assert found == [
        (partition, values[0:3]),
        (partition, values[3:6]),
        (partition, values[6:9]),
        (partition, values[9:10]),
    ]


def test_a_value_larger_than_the_limit_goes_alone() -> None:
    found = runs([("one", b"[1]"), ("one", b"[12345678]"), ("one", b"[2]")], limit=4)
    assert [values for _, values in found] == [[b"[1]"], [b"[12345678]"], [b"[2]"]]


def test_keys_of_different_partitions_go_apart() -> None:
    keyed = [(f"host{n}", b"%d" % n) for n in range(30)]
    found = runs(keyed, limit=1 << 20)
    assert sorted(p for p, _ in found) == sorted({key_partition(k, 6) for k, _ in keyed})
    for partition, values in found:
        assert values == [v for k, v in keyed if key_partition(k, 6) == partition]
