"""Production settings on a three-node Apache Kafka cluster whose brokers require two in sync."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from pipeline.apache_kafka import KafkaCluster
from pipeline.broker import free_port
from pipeline.kafka import consumer, create_topics
from pipeline.settings import Settings
from tests.conftest import isolated_raw_topics
from tests.integration.test_crash_restart import Fleet, assert_counted_exactly, replay_with_steps
from tests.integration.test_stream import SEED_FINDINGS, seed_findings

pytestmark = pytest.mark.cluster
CLUSTER_CHUNK = 25_000  # five chunks of the fleet stream: 125,000 events


def replicated(cluster: KafkaCluster, tmp_path: Path) -> Settings:
    """Return settings of a deployment of its own on ``cluster``, replicated for production."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        bootstrap_servers=cluster.bootstrap,
        topic_prefix=f"t{tag}.",
        raw_topics=isolated_raw_topics(f"t{tag}."),
        group_id=f"wmiwatch-{tag}",
        data_dir=tmp_path / "worker",
        replication_factor=3,
        min_insync_replicas=2,
    )


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
    settings = replicated(kafka_cluster, tmp_path).model_copy(update={"metrics_port": free_port()})
    topics = settings.topics()
    create_topics(settings, topics, raw=True)
    assert seed_findings(settings, settings, topics, tmp_path / "worker.log") >= SEED_FINDINGS

    listed = AdminClient(settings.librdkafka_config()).list_topics(timeout=30).topics
    faust = {name for name in listed if name.startswith(f"{settings.group_id}-")}
    assert faust == {f"{settings.group_id}-__assignor-__leader"}  # the stages' state is ours
    owned = {topics.name(spec.name) for spec in topics.specs}  # the raw ones created here too
    assert set(replication(settings, owned | faust).values()) == {(3, "2", True)}


def leader_of_most(settings: Settings, topic_names: list[str]) -> int:
    """Return the node that leads the most partitions of ``topic_names``."""
    metadata = AdminClient(settings.librdkafka_config()).list_topics(timeout=30).topics
    leaders = Counter(
        partition.leader for name in topic_names for partition in metadata[name].partitions.values()
    )
    return leaders.most_common(1)[0][0]


def duplicates(settings: Settings, topic: str) -> tuple[int, int]:
    """Return (records, records identical to an earlier one) of the whole ``topic``."""
    reader = consumer(
        settings, f"dups-{uuid.uuid4().hex[:8]}", **{"isolation.level": "read_committed"}
    )
    reader.subscribe([topic])
    seen: Counter[bytes] = Counter()
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 5:
        batch = [m for m in reader.consume(1000, timeout=0.5) if m.error() is None]
        seen.update((m.key() or b"") + b"\0" + (m.value() or b"") for m in batch)
        if batch:
            idle_since = time.monotonic()
    reader.close()
    return sum(seen.values()), sum(seen.values()) - len(seen)


@pytest.mark.timeout(1500)
def test_worker_kills_a_leader_broker_kill_and_scaling_lose_and_double_nothing(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    """The crash scenario on three Kafka nodes, without the embedded broker's workarounds.

    Worker a is static (a StatefulSet pod); b and c are dynamic. Steps, each half-way through
    a chunk of the fleet stream: scale 1 -> 3, SIGKILL a while b and c share its groups,
    SIGKILL the node leading the most matches and findings partitions and start it again,
    then scale back to 1. Every finding detect finds must be there with its exact count, and a
    ``read_committed`` reader finds no record twice on the findings, risk and incidents topics.
    """
    settings = replicated(kafka_cluster, tmp_path).model_copy(
        update={"window_seconds": 60, "allowed_lateness_seconds": 5, "update_interval_seconds": 0}
    )
    topics = settings.topics()
    create_topics(settings, topics, raw=True)
    fleet = Fleet(settings, tmp_path)

    def scale_up() -> None:
        fleet.start("b", static=False)
        fleet.start("c", static=False)

    def kill_the_leading_node() -> None:
        node = leader_of_most(settings, [topics.matches, topics.findings])
        kafka_cluster.kill(node)
        time.sleep(10)  # leadership moves; writes go on with two in sync
        kafka_cluster.start_node(node)

    def scale_down() -> None:
        fleet.scale_down("b")
        fleet.scale_down("c")

    steps = [scale_up, lambda: fleet.kill("a"), kill_the_leading_node, scale_down]
    fleet.start("a")
    expected = replay_with_steps(fleet, topics, steps, tmp_path / "fleet.xml", CLUSTER_CHUNK)
    news = assert_counted_exactly(fleet, topics, expected)
    assert fleet.starts == 4  # a, b, c, a after its kill: no worker exited unplanned
    resent = {
        name: duplicates(settings, name)
        for name in (topics.findings, topics.risk, topics.incidents)
    }
    print(
        f"{len(expected)} findings, {fleet.starts} worker starts; "
        + ", ".join(
            f"{name}: {dups} of {total} duplicate" for name, (total, dups) in resent.items()
        )
    )
    assert {name: dups for name, (_, dups) in resent.items()} == dict.fromkeys(resent, 0)
    assert all(len(records) == 1 for records in news.values())  # one new record per finding
