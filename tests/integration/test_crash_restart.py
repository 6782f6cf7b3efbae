"""Crashes, a broker restart and scaling during a 210k-event replay: nothing lost or doubled.

One scenario on a broker of its own (so that it can be restarted with its data kept): the
fleet stream is produced in six chunks, and while the intake is half-way through each of the
first five the test takes one step: it SIGKILLs the worker twice, scales from one worker to
two and back to one, and SIGKILLs the last worker while restarting the broker. A supervisor
loop restarts any worker that died, as Kubernetes would. The SIGKILLs hit a worker alone in
its groups: the local broker names a restarted static member the leader of a stable group
(Kafka names the old leader and, since 3.2, tells it to skip assignment), so with a second,
dynamic member present its fresh assignment reaches only itself and half of the partitions
are owned by no one. At the end every finding
the offline ``detect`` finds over the same events is on the findings topic with the same
count (matches are counted exactly once despite redelivery), and no finding_id has two
different ``new`` records. (The Apache Kafka scenario in ``test_cluster`` also asserts that a
``read_committed`` reader sees no record twice: exactly-once outputs are proven there.)
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from bench.fleet import events
from pipeline.broker import free_port, start_broker, stop_broker
from pipeline.kafka import consumer, create_topics, producer
from pipeline.offline import detect_files
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.topics import Topics
from tests.conftest import WorkerProcess, intake_pids, launch_worker, wait_until_gone

pytestmark = pytest.mark.reliability

CHUNK = 35_000  # produced before each of the five steps, and once after the last: 210,000
T = TypeVar("T")


@dataclass
class Fleet:
    """The workers of the scenario, kept running by ``supervise`` like a StatefulSet."""

    settings: Settings
    folder: Path
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    crashed: set[str] = field(default_factory=set)  # killed by the test, to be restarted
    starts: int = 0

    def start(self, name: str, static: bool = True) -> None:
        """Launch worker ``name`` with its own data dir, metrics port and log; do not wait.

        A static worker keeps its group instance id across restarts (a StatefulSet pod);
        a dynamic one leaves the groups when stopped.
        """
        self.starts += 1
        own = self.settings.model_copy(
            update={
                "data_dir": self.folder / name,
                "metrics_port": free_port(),
                "instance_id": name if static else None,
            }
        )
        self.workers[name] = launch_worker(own, self.folder / f"{name}-{self.starts}.log")

    def kill(self, name: str) -> None:
        """SIGKILL worker ``name`` (no shutdown, no commit) and start it again."""
        self.crash(name)
        self.crashed.discard(name)
        self.start(name)

    def crash(self, name: str) -> None:
        """SIGKILL worker ``name`` and wait until its intake has finished too.

        ``supervise`` starts it again. The intake of a killed worker finishes its batch and
        flushes before it exits, so the topics only stop growing once it is gone.
        """
        worker = self.workers[name].process
        intakes = intake_pids(worker.pid)
        self.crashed.add(name)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert all(wait_until_gone(pid, 60) for pid in intakes), "an intake outlived its worker"

    def supervise(self) -> None:
        """Restart the workers the test crashed; fail on any other worker that exited."""
        for name, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is None:
                continue
            if name not in self.crashed:
                self.stop_all()
                tail = worker.log.read_text()[-3000:]
                raise AssertionError(f"worker {name} exited unplanned with code {code}:\n{tail}")
            self.crashed.discard(name)
            self.start(name)

    def wait(self, what: str, condition: Callable[[], T | None], timeout: float = 300) -> T:
        """Keep the workers running until ``condition`` returns a truthy value; return it."""
        deadline = time.monotonic() + timeout
        while not (outcome := condition()):
            assert time.monotonic() < deadline, f"not {what} within {timeout:.0f} s"
            self.supervise()
            time.sleep(0.5)
        return outcome

    def ready(self, name: str) -> bool:
        """Return True once worker ``name`` has finished recovery."""
        return b"Worker ready" in self.workers[name].log.read_bytes()

    def scale_down(self, name: str) -> None:
        """Stop worker ``name`` gracefully once it has finished recovery."""
        self.wait(f"{name} ready", lambda: self.ready(name))
        self.stop(name)

    def stop(self, name: str) -> None:
        """Stop worker ``name`` gracefully (scale down)."""
        self.workers.pop(name).stop()

    def stop_all(self) -> None:
        """Stop every worker (also when the scenario failed half-way)."""
        for name in list(self.workers):
            self.stop(name)


@dataclass
class LocalBroker:
    """A local broker that keeps its data across restarts."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker on its port with its data dir."""
        self.process = start_broker(self.port, self.folder / "data", self.folder / "broker.log")

    def stop(self) -> None:
        """Stop the broker's process group."""
        if self.process is not None:
            stop_broker(self.process)

    def restart(self) -> None:
        """Stop the broker gracefully, start it again on the same port and data, wait for it.

        The local broker writes its whole state to one file when it stops (a SIGKILL before
        that finishes would lose data a real broker keeps), and after a start it answers
        requests before that state is loaded; so wait until every partition's end offset is
        back to at least what it was (a transaction left open ends with a marker of its own).
        """
        assert self.process is not None
        began = time.monotonic()
        ends = self.end_offsets()
        assert ends is not None
        stop_broker(self.process, timeout=600)
        assert self.process.returncode == 0, f"broker exited with {self.process.returncode}"
        self.start()
        while not _at_least(self.end_offsets(), ends):
            assert time.monotonic() - began < 600, "the broker did not load its state"
            time.sleep(1)
        print(f"broker restarted in {time.monotonic() - began:.0f} s")

    def end_offsets(self) -> dict[tuple[str, int], int] | None:
        """Return every data partition's end offset (None while the broker cannot say).

        The broker's own topics are left out: the local broker does not keep
        ``__transaction_state`` across a restart (its end offsets fall back to 0).
        """
        reader = Consumer({"bootstrap.servers": f"127.0.0.1:{self.port}", "group.id": "ends"})
        try:
            return {
                (name, partition): reader.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=10
                )[1]
                for name, topic in reader.list_topics(timeout=10).topics.items()
                if not name.startswith("__")
                for partition in topic.partitions
            }
        except KafkaException:
            return None
        finally:
            reader.close()


def _at_least(ends: dict[tuple[str, int], int] | None, before: dict[tuple[str, int], int]) -> bool:
    """Return True if every partition of ``before`` is back, with at least its end offset."""
    return ends is not None and all(ends.get(tp, -1) >= end for tp, end in before.items())


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[tuple[Settings, Topics, LocalBroker]]:
    """Yield settings and topics on a broker of this test's own, with short windows."""
    if os.environ.get("WMIWATCH_TEST_BOOTSTRAP"):
        pytest.skip("restarts the broker: needs the local broker, not an external cluster")
    broker = LocalBroker(free_port(), tmp_path / "broker")
    broker.start()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=f"127.0.0.1:{broker.port}",
        topic_prefix=f"c{tag}.",
        group_id=f"crash-{tag}",
        window_seconds=60,
        allowed_lateness_seconds=5,
        update_interval_seconds=0,
    )
    topics = settings.topics()
    create_topics(settings, topics, raw=True)
    try:
        yield settings, topics, broker
    finally:
        broker.stop()


def produce_chunk(
    settings: Settings,
    topics: Topics,
    stream: Iterator[tuple[str, str, bytes]],
    log: BinaryIO,
    size: int = CHUNK,
) -> int:
    """Produce the next ``size`` events of ``stream`` to the raw topics, append them to ``log``."""
    client, raw = producer(settings, **{"linger.ms": 50}), topics.raw()
    produced = 0
    for source, host, payload in itertools.islice(stream, size):
        client.produce(raw[source], payload, key=host.encode())
        log.write(payload + b"\n")
        produced += 1
        if produced % 10_000 == 0:
            client.poll(0)
    assert client.flush(60) == 0
    log.flush()
    return produced


def has_committed(settings: Settings, topics: Topics, count: int) -> bool:
    """Return True once the intake group has committed ``count`` raw records (or more)."""
    reader = consumer(settings, f"{settings.group_id}-intake")
    try:
        committed = 0
        for topic in topics.raw().values():
            partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
            wanted = [TopicPartition(topic, p) for p in partitions]
            committed += sum(max(p.offset, 0) for p in reader.committed(wanted, timeout=10))
        return committed >= count
    except KafkaException:  # the broker is restarting
        return False
    finally:
        reader.close()


def findings_by_id(settings: Settings, topics: Topics) -> dict[str, list[dict[str, object]]]:
    """Read the whole findings topic; return its records grouped by finding_id."""
    reader = consumer(settings, f"reader-{uuid.uuid4().hex[:8]}")
    reader.subscribe([topics.findings])
    grouped: dict[str, list[dict[str, object]]] = defaultdict(list)
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 5:
        batch = [m for m in reader.consume(1000, timeout=0.5) if m.error() is None]
        for message in batch:
            record = orjson.loads(message.value() or b"")
            grouped[record["finding_id"]].append(record)
        if batch:
            idle_since = time.monotonic()
    reader.close()
    return grouped


@pytest.mark.timeout(1200)
def test_crashes_a_broker_restart_and_scaling_lose_and_double_nothing(
    scenario: tuple[Settings, Topics, LocalBroker], tmp_path: Path
) -> None:
    settings, topics, broker = scenario
    fleet = Fleet(settings, tmp_path)

    def crash_a_and_restart_the_broker() -> None:
        fleet.crash("a")
        broker.restart()

    steps: list[Callable[[], None]] = [
        lambda: fleet.kill("a"),
        lambda: fleet.kill("a"),
        lambda: fleet.start("b", static=False),
        lambda: fleet.scale_down("b"),
        crash_a_and_restart_the_broker,
    ]
    fleet.start("a")
    expected = replay_with_steps(fleet, topics, steps, tmp_path / "fleet.xml", CHUNK)
    found = assert_counted_exactly(fleet, topics, expected)
    assert fleet.starts == 5  # a, two kills of a, b, a after the crash: no other start
    resent = sum(len(r) - 1 for r in found.values() if r)  # printed for the run log
    print(f"{len(expected)} findings, {fleet.starts} worker starts, {resent} records re-sent")


def replay_with_steps(
    fleet: Fleet, topics: Topics, steps: list[Callable[[], None]], path: Path, chunk: int
) -> dict[str, int]:
    """Produce the fleet stream in ``len(steps) + 1`` chunks, take each step once the intake
    has committed half of its chunk, and return detect's finding counts over the same events."""
    settings = fleet.settings
    stream, produced = events((len(steps) + 1) * chunk), 0
    try:
        with path.open("wb") as log:
            for step in steps:  # each step lands while the intake is inside a fresh chunk
                produced += produce_chunk(settings, topics, stream, log, chunk)
                target = produced - chunk // 2
                fleet.wait(
                    f"{target} records committed",
                    functools.partial(has_committed, settings, topics, target),
                )
                step()
            produced += produce_chunk(settings, topics, stream, log, chunk)
        fleet.wait("all committed", functools.partial(has_committed, settings, topics, produced))
    except BaseException:
        fleet.stop_all()  # no worker outlives a failed scenario
        raise
    report = detect_files([path], load_rules(settings.rules_dir), settings.window_policy())
    return {f.finding_id: f.count for f in report.findings}


def assert_counted_exactly(
    fleet: Fleet, topics: Topics, expected: dict[str, int]
) -> dict[str, list[dict[str, object]]]:
    """Wait until every expected finding is counted, stop the workers, and assert the counts
    are exact, no other finding exists, and no finding id has two different ``new`` records.
    Return the findings topic grouped by id."""
    assert len(expected) >= 100, "the replay gave detect almost nothing to find"
    try:
        found = fleet.wait(
            "every finding counted",
            lambda: findings_once_counted(fleet.settings, topics, expected),
        )
    except AssertionError:
        counts = highest_counts(findings_by_id(fleet.settings, topics))
        short = {f: (counts.get(f, 0), n) for f, n in expected.items() if counts.get(f, 0) < n}
        raise AssertionError(
            f"{len(short)} of {len(expected)} findings short of their count (found, expected): "
            f"{dict(itertools.islice(short.items(), 10))}"
        ) from None
    finally:
        fleet.stop_all()
    assert highest_counts(found) == expected
    news = {fid: [r for r in records if r["status"] == "new"] for fid, records in found.items()}
    assert all(len(records) >= 1 for records in news.values())
    differing = {
        fid: records
        for fid, records in news.items()
        if len({orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records}) > 1
    }
    assert differing == {}
    return news


def findings_once_counted(
    settings: Settings, topics: Topics, expected: dict[str, int]
) -> dict[str, list[dict[str, object]]] | None:
    """Return the findings grouped by id once each expected one has reached its count, else None.

    The test then asserts the counts are exact and no other finding is there.
    """
    found = findings_by_id(settings, topics)
    counts = highest_counts(found)
    return found if all(counts.get(fid, 0) >= count for fid, count in expected.items()) else None


def highest_counts(found: dict[str, list[dict[str, object]]]) -> dict[str, int]:
    """Return each finding id's highest count among its records."""
    return {fid: max(int(str(r["count"])) for r in records) for fid, records in found.items()}
