"""Running Apache Kafka locally: what can be checked without a JVM."""

from __future__ import annotations

import re

from pipeline.apache_kafka import new_cluster_id


def test_cluster_ids_are_base64url_uuids_the_storage_tool_cannot_mistake_for_options() -> None:
    ids = [new_cluster_id() for _ in range(5000)]  # about 78 would start with '-' unchecked
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cid) for cid in ids)
    assert len(set(ids)) == len(ids)
