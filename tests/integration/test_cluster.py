"""Production settings on a three-node Apache Kafka cluster whose brokers require two in sync."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from pipeline.apache_kafka import KafkaCluster
from pipeline.broker import free_port
from pipeline.kafka import create_topics
from pipeline.replay import replay_files
from pipeline.settings import Settings
from tests.conftest import isolated_raw_topics, read_topic, start_worker
from tests.integration.test_stream import SEED_FINDINGS, SEED_SAMPLES

pytestmark = pytest.mark.cluster


def replication(settings: Settings, names: set[str]) -> dict[str, tuple[int, str, bool]]:
    """Return each topic's replication factor, ``min.insync.replicas``, and whether the topic
    sets it itself (not the brokers' default)."""
    admin = AdminClient(settings.librdkafka_config())
    metadata = admin.list_topics(timeout=30).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in sorted(names)]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    entries = {name: configs[name]["min.insync.replicas"] for name in names}
    return {
        name: (
            len(metadata[name].partitions[0].replicas),
            entries[name].value,
            entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
        )
        for name in names
    }


def test_every_topic_wmiwatch_creates_is_replicated_as_configured(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=kafka_cluster.bootstrap,
        topic_prefix=f"t{tag}.",
        raw_topics=isolated_raw_topics(f"t{tag}."),
        group_id=f"wmiwatch-{tag}",
        data_dir=tmp_path / "worker",
        metrics_port=free_port(),
        replication_factor=3,
        min_insync_replicas=2,
    )
    topics = settings.topics()
    create_topics(settings, topics, raw=True)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        replay_files(SEED_SAMPLES, settings, topics)
        findings = read_topic(settings, topics.findings, expected=6, timeout=90)
    finally:
        worker.stop()
    assert {(f["rule_name"], f["dest"]) for f in findings if f["status"] == "new"} >= SEED_FINDINGS

    listed = AdminClient(settings.librdkafka_config()).list_topics(timeout=30).topics
    faust = {name for name in listed if name.startswith(f"{settings.group_id}-")}
    assert f"{settings.group_id}-__assignor-__leader" in faust
    assert len([name for name in faust if name.endswith("-changelog")]) == 3
    owned = {topics.name(spec.name) for spec in topics.specs}  # the raw ones created here too
    assert set(replication(settings, owned | faust).values()) == {(3, "2", True)}
