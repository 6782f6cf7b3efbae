"""Run Apache Kafka on 127.0.0.1: KRaft nodes that are broker and controller in one, no ZooKeeper.

The broker's jars and their runtime dependencies are fetched once with Maven (a pinned version,
checksums verified) into a cache folder; nothing of Kafka is part of this project. Each node is
one JVM started with the options Kafka's own launcher gives a broker; the cluster remembers its
ports and cluster id in its data folder, so it can be stopped and started again on the same data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from pipeline.broker import BrokerUnavailable, free_port

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
STOP_TIMEOUT_SECONDS = 30.0
START_TIMEOUT_SECONDS = 90.0
# kafka-server-start.sh's heap and kafka-run-class.sh's performance options. A heap of
# 128-512 MiB ran 80 G1 cycles started by humongous allocations (large produce requests) in
# one worker bench run, 1.4 s of pauses against 0.4 s, and they showed in its p99 latency.
JVM_OPTIONS = (
    "-Xmx1G -Xms1G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20"
    " -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent"
    " -XX:MaxInlineLevel=15 -Djava.awt.headless=true"
)

POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>wmiwatch</groupId>
  <artifactId>apache-kafka-broker</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""
LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""


def new_cluster_id() -> str:
    """Return a random KRaft cluster id as Kafka makes them: base64url, never starting with '-'.

    The storage tool would read a leading '-' as an option.
    """
    candidate = "-"
    while candidate.startswith("-"):
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return candidate


def cache_dir() -> Path:
    """Return the folder the broker's jars are fetched into (``$XDG_CACHE_HOME``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "wmiwatch" / f"apache-kafka-{KAFKA_VERSION}"


def require_tools() -> None:
    """Raise BrokerUnavailable naming what is missing when Java 17+ or Maven is not installed."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise BrokerUnavailable(
            f"Apache Kafka needs Java 17+ and Maven; missing: {', '.join(missing)}"
            " (Debian: apt-get install openjdk-17-jre-headless maven)"
        )
    version = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    found = re.search(r'version "(\d+)', version)
    if found is None or int(found.group(1)) < 17:
        raise BrokerUnavailable(f"Apache Kafka {KAFKA_VERSION} needs Java 17+: {version!r}")


def fetch() -> Path:
    """Return the folder of the broker's jars, fetching them with Maven the first time."""
    folder = cache_dir()
    libs, manifest = folder / "libs", folder / "SHA256SUMS"
    if manifest.exists():
        return libs
    require_tools()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pom.xml").write_text(POM)
    staging = folder / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        "mvn",
        "-q",
        "-B",
        "--strict-checksums",  # refuse an artifact whose checksum does not match
        "-f",
        str(folder / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerUnavailable(
            f"Maven could not fetch Apache Kafka {KAFKA_VERSION}:\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    sums = [f"{_sha256(jar)}  {jar.name}" for jar in sorted(libs.glob("*.jar"))]
    manifest.write_text("\n".join(sums) + "\n")
    return libs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Sasl:
    """Clients must use SASL_SSL with SCRAM-SHA-512, and ACLs are enforced (StandardAuthorizer).

    ``keystore`` is a PEM file with the brokers' unencrypted PKCS#8 key and certificate,
    ``truststore`` the PEM of the CA that signed it. The super user ``admin`` is created with
    ``admin_password`` when the storage is formatted; brokers and controllers talk over
    plaintext listeners on loopback, as the super user ANONYMOUS.
    """

    keystore: Path
    truststore: Path
    admin_password: str


@dataclass
class Node:
    """One KRaft node: broker and controller in one JVM."""

    node_id: int
    port: int
    controller_port: int
    internal_port: int  # broker to broker, and this module's probes (plaintext)
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Return the node's client address."""
        return f"127.0.0.1:{self.port}"


@dataclass
class KafkaCluster:
    """N Apache Kafka nodes on 127.0.0.1 over ``data_dir``; the first listens on ``port``."""

    data_dir: Path
    brokers: int = 1
    port: int = 9092
    min_insync_replicas: int = 1  # the brokers' default for topics that do not set it
    sasl: Sasl | None = None
    nodes: list[Node] = field(default_factory=list)
    cluster_id: str = ""

    @property
    def bootstrap(self) -> str:
        """Return the bootstrap servers of every node."""
        return ",".join(node.address for node in self.nodes)

    def start(self) -> None:
        """Fetch Kafka if needed, format new storage, start every node, wait for all brokers."""
        libs = fetch()
        self._plan()
        for node in self.nodes:
            self._configure(node)
            if not (node.folder / "data" / "meta.properties").exists():
                formatting = self._java(
                    libs,
                    node,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    self.cluster_id,
                    "-c",
                    str(node.folder / "server.properties"),
                    *self._scram_users(),
                )
                if formatting.wait() != 0:
                    raise BrokerUnavailable(f"formatting failed; see {node.folder / 'stdout.log'}")
        for node in self.nodes:
            self.start_node(node.node_id, libs, wait=False)
        self.wait_for_brokers(self.brokers)

    def start_node(self, node_id: int, libs: Path | None = None, wait: bool = True) -> None:
        """Start node ``node_id`` (again)."""
        node = self.node(node_id)
        node.process = self._java(
            libs or fetch(), node, "kafka.Kafka", str(node.folder / "server.properties")
        )
        if wait:
            self.wait_for_brokers(self.brokers)

    def node(self, node_id: int) -> Node:
        """Return node ``node_id``."""
        return next(node for node in self.nodes if node.node_id == node_id)

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (no controlled shutdown) and wait until it is gone."""
        process = self.node(node_id).process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        """Stop every node: SIGTERM (controlled shutdown), SIGKILL after a timeout."""
        running = [
            n.process for n in self.nodes if n.process is not None and n.process.poll() is None
        ]
        for process in running:
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def wait_for_brokers(self, count: int, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Block until the cluster's metadata names ``count`` brokers."""
        # A probe: its connection failures while nodes start are expected, so it logs nothing.
        internal = ",".join(f"127.0.0.1:{node.internal_port}" for node in self.nodes)
        admin = AdminClient({"bootstrap.servers": internal, "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise BrokerUnavailable(
                        f"Kafka node {node.node_id} exited ({node.process.returncode}); see "
                        f"{node.folder / 'server.log'}"
                    )
            try:
                if len(admin.list_topics(timeout=2).brokers) >= count:
                    return
            except Exception:  # the cluster is not answering yet
                pass
            time.sleep(0.5)
        raise BrokerUnavailable(f"Kafka did not show {count} brokers within {timeout:.0f}s")

    def _plan(self) -> None:
        """Choose node ports and the cluster id, or read them back from an earlier run."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        saved = self.data_dir / "cluster.json"
        if saved.exists():
            plan = json.loads(saved.read_text())
        else:
            ports = [self.port] + [free_port() for _ in range(self.brokers - 1)]
            plan = {
                "cluster_id": new_cluster_id(),
                "nodes": [
                    [n + 1, port, free_port(), free_port() if self.sasl else port]
                    for n, port in enumerate(ports)
                ],
            }
            saved.write_text(json.dumps(plan))
        self.cluster_id = plan["cluster_id"]
        self.brokers = len(plan["nodes"])
        self.port = plan["nodes"][0][1]
        self.nodes = [
            Node(node_id, port, controller, internal, self.data_dir / f"node-{node_id}")
            for node_id, port, controller, internal in plan["nodes"]
        ]

    def _configure(self, node: Node) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas = min(3, self.brokers)
        settings: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            **(self._sasl_settings(node, self.sasl) if self.sasl else {}),
            "log.dirs": node.folder / "data",
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min(2, replicas),
            "default.replication.factor": 1,
            "min.insync.replicas": self.min_insync_replicas,
            "group.initial.rebalance.delay.ms": 0,
            "num.partitions": 1,
            "log.segment.bytes": 64 << 20,
        }
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        (node.folder / "server.properties").write_text(text)
        (node.folder / "log4j2.properties").write_text(LOG4J2)

    def _scram_users(self) -> list[str]:
        """Return the format arguments that create the SCRAM super user, if SASL is on."""
        if self.sasl is None:
            return []
        return ["--add-scram", f"SCRAM-SHA-512=[name=admin,password={self.sasl.admin_password}]"]

    @staticmethod
    def _sasl_settings(node: Node, sasl: Sasl) -> dict[str, object]:
        """Return the settings of a SASL_SSL client listener beside plaintext internal ones."""
        client, internal = f"127.0.0.1:{node.port}", f"127.0.0.1:{node.internal_port}"
        return {
            "listeners": f"SASL_SSL://{client},INTERNAL://{internal},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"SASL_SSL://{client},INTERNAL://{internal}",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,"
            "CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": sasl.keystore,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": sasl.truststore,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:admin;User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _java(self, libs: Path, node: Node, main: str, *arguments: str) -> subprocess.Popen[bytes]:
        """Start ``main`` of the Kafka jars for ``node``, output appended to its stdout.log."""
        command = [
            "java",
            *JVM_OPTIONS.split(),
            f"-Dkafka.logs.dir={node.folder}",
            f"-Dlog4j2.configurationFile={node.folder / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *arguments,
        ]
        with open(node.folder / "stdout.log", "ab") as output:
            return subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )


@contextmanager
def running_kafka(
    data_dir: Path,
    brokers: int = 1,
    port: int | None = None,
    min_insync_replicas: int = 1,
    sasl: Sasl | None = None,
) -> Iterator[KafkaCluster]:
    """Run an Apache Kafka cluster for the duration of the block."""
    cluster = KafkaCluster(data_dir, brokers, port or free_port(), min_insync_replicas, sasl)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
