"""Shared fixtures: a real broker per test session, and worker processes.

``WMIWATCH_TEST_BROKER`` chooses the broker the integration tests run on: ``embedded`` (the
default: the noida-db broker) or ``apache-kafka`` (a single Apache Kafka node). Tests marked
``cluster`` run on a three-node Apache Kafka cluster, started once per session. Apache Kafka
needs Java and Maven: without them a test fails in CI and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from pipeline.apache_kafka import KafkaCluster, Sasl, running_kafka
from pipeline.broker import free_port, running_broker, wait_for_port
from pipeline.kafka import consumer, create_topics
from pipeline.settings import Settings
from pipeline.topics import Topics, load_topics
from tests import PROJECT_ROOT

FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
ENGINE = os.environ.get("WMIWATCH_TEST_BROKER", "embedded")
MISSING_TOOL = {
    "java": "Java 17+ is missing: apt-get install openjdk-17-jre-headless (./setup.sh dev does)",
    "mvn": "Maven is missing: apt-get install maven (./setup.sh dev does)",
    "kubectl": "kubectl with kustomize v5 (on the machine image) is missing",
    "promtool": "promtool is missing: apt-get install prometheus (./setup.sh dev does)",
    "prometheus": "prometheus is missing: apt-get install prometheus (./setup.sh dev does)",
}


def tool(name: str) -> str:
    """Return the path of a required command-line tool; in CI fail, elsewhere skip, if absent."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING_TOOL[name])
        pytest.skip(MISSING_TOOL[name])
    return found


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield a broker address: $WMIWATCH_TEST_BOOTSTRAP, or a local broker started here."""
    external = os.environ.get("WMIWATCH_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    folder = tmp_path_factory.mktemp("broker")
    if ENGINE == "apache-kafka":
        with apache_kafka(folder, brokers=1) as cluster:
            yield cluster.bootstrap
        return
    with running_broker(free_port(), folder / "data", folder / "broker.log") as address:
        yield address


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Yield a three-node Apache Kafka cluster for the session's ``cluster`` tests.

    Its brokers default to ``min.insync.replicas=2``, as production clusters (Strimzi's
    examples among them) usually do.
    """
    with apache_kafka(tmp_path_factory.mktemp("cluster"), brokers=3, min_insync=2) as cluster:
        yield cluster


@contextmanager
def apache_kafka(
    folder: Path, brokers: int, min_insync: int = 1, sasl: Sasl | None = None
) -> Iterator[KafkaCluster]:
    """Run Apache Kafka for tests; without Java or Maven, fail in CI and skip elsewhere."""
    for name in ("java", "mvn"):
        tool(name)
    with running_kafka(folder, brokers, min_insync_replicas=min_insync, sasl=sasl) as cluster:
        yield cluster


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Return settings isolated to this test: own topic prefix, group id and data dir."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{tag}.",
        raw_topics=isolated_raw_topics(f"t{tag}."),
        group_id=f"wmiwatch-{tag}",
        data_dir=tmp_path / "worker",
        metrics_port=free_port(),
    )


def isolated_raw_topics(prefix: str) -> dict[str, str]:
    """Return raw topic names of a test's own (raw topics take no deployment prefix)."""
    defaults = load_topics(PROJECT_ROOT / "topics")
    return {s.source: f"{prefix}{s.name}" for s in defaults.specs if s.role == "raw" and s.source}


@pytest.fixture
def topics(settings: Settings) -> Topics:
    """Create this test's topics, raw ones included, and return them."""
    loaded = settings.topics()
    create_topics(settings, loaded, raw=True)
    return loaded


def settings_env(settings: Settings) -> dict[str, str]:
    """Return the WMIWATCH_* environment that reproduces ``settings`` in a child process."""
    values = settings.model_dump(exclude={"sasl_password"}, exclude_none=True)
    if settings.sasl_password is not None:
        values["sasl_password"] = settings.sasl_password.get_secret_value()
    encoded = {name: json.dumps(v) if isinstance(v, dict) else str(v) for name, v in values.items()}
    return {**os.environ, **{f"WMIWATCH_{name.upper()}": v for name, v in encoded.items()}}


@dataclass
class WorkerProcess:
    """A ``wmiwatch worker`` child process and its log."""

    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 60) -> None:
        """Stop the worker with SIGTERM and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch_worker(settings: Settings, log: Path, metrics_port: int | None = None) -> WorkerProcess:
    """Start a worker process and return at once."""
    env = settings_env(settings)
    if metrics_port is not None:
        env["WMIWATCH_METRICS_PORT"] = str(metrics_port)
    command = [sys.executable, "-m", "pipeline", "worker", "--loglevel", "info"]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    return WorkerProcess(process, log)


def start_worker(settings: Settings, log: Path, metrics_port: int | None = None) -> WorkerProcess:
    """Start a worker and wait until Faust reports it ready."""
    worker = launch_worker(settings, log, metrics_port)
    deadline = time.monotonic() + 90
    while b"Worker ready" not in log.read_bytes():
        if worker.process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise AssertionError(f"worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    wait_for_port(metrics_port or settings.metrics_port)
    return worker


@pytest.fixture
def worker(settings: Settings, topics: Topics, tmp_path: Path) -> Iterator[WorkerProcess]:
    """Run one worker for the test."""
    running = start_worker(settings, tmp_path / "worker.log")
    yield running
    running.stop()


def set_topic_config(settings: Settings, topic: str, name: str, value: str) -> None:
    """Set ``topic``'s config ``name`` to ``value`` on the broker."""
    entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient(settings.librdkafka_config())
    for done in admin.incremental_alter_configs([resource]).values():
        done.result()


def incompressible(size: int) -> bytes:
    """Return ``size`` random ASCII letters: no codec shrinks them much, so a record of them
    stays over a broker's size limit when its producer compresses it (lz4 by default)."""
    return "".join(random.Random(size).choices(string.ascii_letters, k=size)).encode()


def read_topic(
    settings: Settings,
    topic: str,
    expected: int,
    timeout: float = 60,
    counting: Callable[[Any], bool] = lambda record: True,
) -> list[Any]:
    """Read ``topic`` from the start until ``expected`` records for which ``counting`` holds
    arrived, then keep reading briefly to catch any extra record.

    Fails, saying what is missing, when fewer than ``expected`` arrive within ``timeout``.
    """
    reader = consumer(settings, f"reader-{uuid.uuid4().hex[:8]}")
    reader.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for message in reader.consume(500, timeout=0.5):
                if not message.error():
                    records.append(orjson.loads(message.value()))
            if sum(map(counting, records)) >= expected:
                deadline = min(deadline, time.monotonic() + 3)
    finally:
        reader.close()
    counted = sum(map(counting, records))
    assert counted >= expected, (
        f"{topic}: {counted} of the {expected} expected records within {timeout:.0f} s"
        f" ({len(records)} read in all; the last: {records[-3:]!r:.1000})"
    )
    return records


def schema_validator(topic: str) -> Draft202012Validator:
    """Return a validator for the value schema of ``topic`` (references resolved)."""
    loaded = load_topics(PROJECT_ROOT / "topics")
    resources = [
        (f"wmiwatch/{path.name}", Resource.from_contents(orjson.loads(path.read_bytes())))
        for path in (PROJECT_ROOT / "topics" / "schemas").glob("*.json")
    ]
    registry: Registry = Registry().with_resources(resources)
    return Draft202012Validator(loaded.schema(topic), registry=registry)


def intake_pids(pid: int) -> list[int]:
    """Return the processes worker ``pid`` spawned (not its resource tracker; Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in command_line(int(c))]


def command_line(pid: int) -> bytes:
    """Return the command line of process ``pid`` (empty once it has gone; Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def the_intake(pid: int, timeout: float = 30) -> int:
    """Return the intake process of worker ``pid``, waiting until its spawn has completed."""
    deadline = time.monotonic() + timeout
    while len(found := intake_pids(pid)) != 1:
        assert time.monotonic() < deadline, f"worker {pid} runs {len(found)} intake processes"
        time.sleep(0.1)
    return found[0]


def wait_until_gone(pid: int, timeout: float) -> bool:
    """Return whether process ``pid`` ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def is_running(pid: int) -> bool:
    """Return whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"  # after the command name, which may hold spaces
    except FileNotFoundError:
        return False
