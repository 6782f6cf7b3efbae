"""Throughput and latency benchmark: bare consumer vs. the wmiwatch worker vs. offline detect.

    .venv/bin/python bench/run.py [--events 200000] [--workers 1] [--flood 20000]
        [--broker embedded|apache-kafka | --bootstrap HOST:PORT] [--json PATH]
        [--attack-data ../shared/data] [--escu ../shared/reference/escu/detections/endpoint]

Generates a busy-fleet mix of real XmlWinEventLog events (Sysmon 1/3/5/7/10/11/12/13/22
and Security 4624/4688 from public logs, each kind its own events, dominating; a little
PowerShell 4104, rare WMI attacks from the test fixtures), produces them to a fresh set of
topics on a local broker started here (the embedded broker, or a single Apache Kafka node; or
an existing one with --bootstrap), then measures in the same run:

  a) a bare aiokafka getmany loop over the raw topics (the ceiling),
  b) the full wmiwatch worker(s), all rules, until every event is consumed and the last finding
     is out; then p50/p99 latency (raw record -> finding) with events produced at half that rate;
     once with exactly-once processing and once with at-least-once, each with topics of its
     own (raw ones holding the same events),
  c) ``wmiwatch detect`` over the same events written as an XML file,
  d) the intake stage alone (a fresh consumer group, no Faust process, exactly-once), with one
     and with two intake processes: what a worker's intakes do when the Faust process leaves
     them the cores (timed from the first committed offsets to the last),
  e) a flood of matching Sysmon events, each from its own host, through one worker: matches
     aggregated per second, how long a matching event produced behind the flood waits for its
     finding, and the worker's memory growth per open group against the same table in a plain
     dict (tracemalloc),
  f) on an attack-sample mix (every XML event of the public sample logs, repeated to --events):
     a loop that parses every line with lxml and reads its Data fields, against ``detect``
     with one and with two jobs,
  g) ``detect`` over the fleet file and the attack mix with the story's rules and with every
     security_content endpoint detection ``wmiwatch rules import`` can run (--escu); and the
     worker (exactly-once) over the fleet events with those imported rules, as in b).

It also prints the CPU cores each process (Faust, intake, broker, this one) used during b),
while consuming the backlog and while events are produced at half rate. With
--json PATH it also writes the figures as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.attack import ESCU_ENDPOINT, SAMPLE_DATA, lxml_loop, write_mix
from bench.fleet import events, flood
from pipeline.aggregate import Aggregator
from pipeline.apache_kafka import KAFKA_VERSION, KafkaCluster
from pipeline.broker import free_port, start_broker, stop_broker, wait_for_port
from pipeline.engine import Detector
from pipeline.health import IntakeStatus
from pipeline.intake import run_intake_process
from pipeline.kafka import COORDINATOR_MOVING, consumer, create_topics, producer
from pipeline.offline import detect_files
from pipeline.policy import WindowPolicy
from pipeline.records import MATCH, DestState, Match
from pipeline.rules.importer import import_detections
from pipeline.rules.loader import load_rules
from pipeline.rules.model import Rule
from pipeline.settings import Settings
from pipeline.topics import Topics, load_topics

TOPICS = Path(__file__).resolve().parents[1] / "topics"
HYPERSCAN = version("hyperscan")  # its wheels' speed differs 100x between releases
SHIPPER = {"compression.type": "none"}  # the raw events as a shipper sends them: uncompressed
LXML_LOOP = "f) lxml parse-every-line loop (events/s)"


def produce(
    settings: Settings,
    topics: Topics,
    batch: Iterable[tuple[str, str, bytes]],
    rate: float = 0.0,
    **config: str | int,
) -> None:
    """Produce ``batch`` to the raw topics (at ``rate`` events/s when given), uncompressed."""
    client = producer(settings, **{"linger.ms": 20, **SHIPPER, **config})
    send(client, topics, batch, rate)
    client.flush(120)


def produce_hidden(
    settings: Settings, topics: Topics, batch: Iterable[tuple[str, str, bytes]]
) -> Producer:
    """Produce ``batch`` to the raw topics in one open transaction and return its producer:
    consumers (read_committed) see none of it until ``commit_transaction`` shows it all."""
    client = producer(
        settings, **{"linger.ms": 20, **SHIPPER, "transactional.id": uuid.uuid4().hex}
    )
    client.init_transactions(30)
    client.begin_transaction()
    send(client, topics, batch)
    client.flush(120)
    return client


def send(
    client: Producer, topics: Topics, batch: Iterable[tuple[str, str, bytes]], rate: float = 0.0
) -> None:
    """Hand ``batch`` to ``client`` for the raw topics, at ``rate`` events/s when given."""
    raw, started = topics.raw(), time.monotonic()
    for number, (source, host, payload) in enumerate(batch):
        while True:
            try:
                client.produce(raw[source], payload, key=host.encode())
                break
            except BufferError:
                client.poll(0.05)
        if rate and number % 100 == 0:
            ahead = number / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        client.poll(0)


async def bare_consume(settings: Settings, topics: Topics, count: int) -> float:
    """Return msg/s of a bare aiokafka getmany loop reading ``count`` records."""
    consumer = AIOKafkaConsumer(
        *topics.raw().values(),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    seen, started = 0, None
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if batches and started is None:
                started = time.perf_counter()
            seen += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    return count / (time.perf_counter() - (started or time.perf_counter()))


POLL_EVERY = 0.2  # seconds between progress readings or probes, at the least
POLL_SHARE = 0.02  # progress is polled every 2% of the time waited so far, at most every second


def pause(since: float) -> None:
    """Wait before the next progress reading of a measurement begun at ``since``
    (perf_counter)."""
    time.sleep(min(1.0, max(POLL_EVERY, POLL_SHARE * (time.perf_counter() - since))))


def counted(folders: Iterable[Path], metric: str) -> float:
    """Return the sum of counter ``metric``'s series over the workers whose data dirs are
    ``folders``, read from their processes' metric files (the values /metrics serves).

    Progress is read here rather than scraped: with the imported rules' ~8,400 series a scrape
    costs the Faust process ~180 ms of CPU and this process as much to parse, which polling
    every 0.2-1 s took from the worker measured (a production Prometheus scrapes every 30 s).
    """
    quoted = json.dumps(metric)
    total = 0.0
    for path in (p for folder in folders for p in (folder / "metrics").glob("counter_*.db")):
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if quoted in key and json.loads(key)[1] == metric:
                total += value
    return total


def scrape(port: int) -> dict[str, float]:
    """Return metric name -> sum over labels from a worker's /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def wait_ready(port: int, timeout: float = 300) -> None:
    """Wait until a worker's /readyz answers 200: intakes joined, Faust assigned and recovered."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).close()
            return
        except OSError:  # HTTPError (503: not ready yet) is an OSError
            assert time.monotonic() < deadline, f"worker on port {port} not ready"
            time.sleep(POLL_EVERY)


def latency_buckets(port: int) -> list[tuple[float, float]]:
    """Return the cumulative (upper bound, count) buckets of the finding latency histogram."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(body):
        if family.name == "wmiwatch_finding_latency_seconds":
            return [
                (float(s.labels["le"]), s.value)
                for s in family.samples
                if s.name.endswith("_bucket")
            ]
    return []


def quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """Return the q-quantile (bucket upper bound) of the findings between two snapshots."""
    buckets = [(bound, seen - dict(before).get(bound, 0.0)) for bound, seen in after]
    total = buckets[-1][1] if buckets else 0
    return next((bound for bound, seen in buckets if total and seen >= q * total), float("nan"))


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and every process under it (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def rss_mib(pid: int, tree: bool = True) -> float:
    """Return the resident set size of ``pid`` and (``tree``) the processes it started, MiB."""
    return sum(
        int(line.split()[1]) / 1024
        for process in (process_tree(pid) if tree else [pid])
        for line in Path(f"/proc/{process}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """Return the CPU time (user + system) each process has used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def start_workers(
    settings: Settings, count: int, logs: Path
) -> list[tuple[subprocess.Popen[bytes], int]]:
    """Start ``count`` workers; return (process, metrics port) pairs once all are ready."""
    started = []
    for number in range(count):
        port = free_port()
        env = {
            **os.environ,
            "WMIWATCH_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "WMIWATCH_TOPIC_PREFIX": settings.topic_prefix,
            "WMIWATCH_RAW_TOPICS": json.dumps(settings.raw_topics),
            "WMIWATCH_GROUP_ID": settings.group_id,
            "WMIWATCH_RULES_DIR": str(settings.rules_dir),
            "WMIWATCH_DATA_DIR": str(logs / f"worker{number}"),
            "WMIWATCH_METRICS_PORT": str(port),
            "WMIWATCH_PROCESSING_GUARANTEE": settings.processing_guarantee,
        }
        log = open(logs / f"worker{number}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker", "--loglevel", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, port))
    for number, (_, port) in enumerate(started):
        wait_for_port(port, timeout=120)
        while b"Worker ready" not in (logs / f"worker{number}.log").read_bytes():
            time.sleep(0.2)
    return started


@dataclass(frozen=True)
class WorkerRun:
    """What the worker measurement found."""

    rate: float
    p50: float
    p99: float
    rss: float
    cores: dict[str, float]  # CPU cores used while consuming the backlog, per process role
    intake_seconds: float  # until the intakes had consumed the backlog (the rest: aggregation)
    half_rate_cores: dict[str, float]  # the same while events are produced at half rate


def run_worker(
    settings: Settings,
    topics: Topics,
    batch: list[tuple[str, str, bytes]],
    workers: int,
    logs: Path,
    matches_expected: float,
    broker_pid: int | None,
) -> WorkerRun:
    """Measure the workers over ``batch``, which appears at once when they are ready (so
    Faust's start-up is not counted), then latency at half rate; return the figures."""
    running = start_workers(settings, workers, logs)
    ports = [port for _, port in running]
    for port in ports:
        wait_ready(port)
    count, backlog = len(batch), produce_hidden(settings, topics, batch)
    folders = [logs / f"worker{number}" for number in range(workers)]

    def consumed() -> float:
        return counted(folders, "wmiwatch_events_consumed_total")

    def aggregated() -> float:
        return counted(folders, "wmiwatch_matches_aggregated_total")

    deadline = time.monotonic() + 1800
    roles = {process.pid: "faust" for process, _ in running}  # the intakes run by now
    roles.update({child: "intake" for p, _ in running for child in process_tree(p.pid)[1:]})
    roles.update({broker_pid: "broker"} if broker_pid else {})
    roles[os.getpid()] = "bench"  # at half rate: the generator, librdkafka's threads included
    started, cpu_before = time.perf_counter(), cpu_seconds(list(roles))
    backlog.commit_transaction(120)
    intake_done = math.inf
    while aggregated() < matches_expected:  # every match of the backlog reached the table
        assert time.monotonic() < deadline, f"aggregated only {aggregated()} matches"
        if intake_done == math.inf and consumed() == count:
            intake_done = time.perf_counter()
        pause(started)
    done, last = time.perf_counter(), aggregated()
    while consumed() < count and time.monotonic() < deadline:  # counted once its commit returned,
        time.sleep(POLL_EVERY)  # which may be after its matches were aggregated
    intake_seconds = min(intake_done, done) - started
    assert consumed() == count, f"the workers consumed {consumed()} of {count} events"
    rate, cores = count / (done - started), cores_used(roles, cpu_before, done - started)
    print(f"(worker aggregated {last:.0f} matches; offline counted {matches_expected:.0f})")
    rss = max(rss_mib(process.pid) for process, _ in running)
    # latency: a fresh stream at half the measured rate for ~10 s
    half = rate / 2
    before, fresh = latency_buckets(ports[0]), list(events(int(half * 10), seed=2))
    producing, cpu_before = time.perf_counter(), cpu_seconds(list(roles))
    produce(settings, topics, fresh, rate=half)
    half_rate_cores = cores_used(roles, cpu_before, time.perf_counter() - producing)
    time.sleep(3)
    after = latency_buckets(ports[0])
    p50, p99 = quantile(before, after, 0.5), quantile(before, after, 0.99)
    for process, _ in running:
        process.terminate()
    for number, (process, _) in enumerate(running):
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            print(f"(worker {number} did not stop within 120 s of SIGTERM; killed)")
            process.kill()
            process.wait()
    return WorkerRun(rate, p50, p99, rss, cores, intake_seconds, half_rate_cores)


def cores_used(roles: dict[int, str], before: dict[int, float], seconds: float) -> dict[str, float]:
    """Return the CPU cores each role's processes used in the ``seconds`` since ``before``."""
    after, cores = cpu_seconds(list(roles)), {}
    for pid, role in roles.items():
        cores[role] = cores.get(role, 0.0) + (after[pid] - before[pid]) / seconds
    return cores


def main() -> None:
    """Run the three measurements and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--broker", choices=["embedded", "apache-kafka"], default="embedded")
    parser.add_argument("--bootstrap", help="an existing broker instead of one started here")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--flood", type=int, default=20_000, help="matching events in e)")
    parser.add_argument(
        "--attack-data", type=Path, default=SAMPLE_DATA, help="sample logs for the f) mix"
    )
    parser.add_argument(
        "--escu", type=Path, default=ESCU_ENDPOINT, help="security_content detections for g)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, local_broker(args, Path(scratch)) as broker:
        figures = measure(args, broker[0], Path(scratch), broker[1])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


@contextmanager
def local_broker(args: argparse.Namespace, folder: Path) -> Iterator[tuple[str, int | None]]:
    """Yield the bootstrap address and process id of ``--bootstrap`` (no pid) or of a broker
    started here in ``folder`` (``--broker``), stopped afterwards."""
    if args.bootstrap:
        yield args.bootstrap, None
    elif args.broker == "apache-kafka":
        cluster = KafkaCluster(folder / "kafka", 1, free_port())
        try:
            cluster.start()
            node = cluster.nodes[0].process
            yield cluster.bootstrap, node.pid if node else None
        finally:
            cluster.stop()
    else:
        port = free_port()
        broker = start_broker(port, folder / "broker")
        try:
            yield f"127.0.0.1:{port}", broker.pid
        finally:
            stop_broker(broker)


def fresh_settings(bootstrap: str, name: str, **overrides: object) -> Settings:
    """Return settings naming topics and a group of their own (created here) on ``bootstrap``."""
    tag = f"{name}{uuid.uuid4().hex[:6]}"
    raw = {s.source: f"{tag}.{s.name}" for s in load_topics(TOPICS).specs if s.source}
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"{tag}.",
        raw_topics=raw,
        group_id=f"{name}-{tag}",
        **overrides,  # type: ignore[arg-type]
    )
    create_topics(settings, settings.topics(), raw=True)
    return settings


def import_endpoint_rules(
    args: argparse.Namespace, folder: Path
) -> tuple[Path, tuple[Rule, ...]] | None:
    """Import ``--escu``'s detections into a rules folder; return it and its compiled rules
    (None: no detections)."""
    if not args.escu.is_dir():
        print(f"(no security_content detections at {args.escu}: g) skipped)")
        return None
    out = folder / "imported"
    started = time.perf_counter()
    report = import_detections([args.escu], out, TOPICS.parent / "rules" / "macros.yml")
    imported = load_rules(out)
    print(f"(g: {report.summary}; import and compile took {time.perf_counter() - started:.1f} s)")
    return out, imported


def imported_rules_rates(
    rules: tuple[Rule, ...], imported: tuple[Rule, ...], files: list[Path]
) -> tuple[dict[str, float], int]:
    """Return detect's events/s over ``files`` with the story rules and the imported ones, and
    the imported rules' matches in the first file."""
    rates, matches = {}, 0
    for path in files:
        for label, chosen in (("story", rules), (f"{len(imported)} imported", imported)):
            started = time.perf_counter()
            report = detect_files([path], chosen, WindowPolicy())
            rate = report.events / (time.perf_counter() - started)
            rates[f"g) detect, {path.stem}, {label} rules (events/s)"] = rate
            if chosen is imported and path == files[0]:
                matches = report.matches
    return rates, matches


def detect_attack_mix(
    args: argparse.Namespace, rules: tuple[Rule, ...], folder: Path
) -> dict[str, float]:
    """Return events/s of the lxml loop and of ``detect`` (1 and 2 jobs) on the attack mix."""
    if not args.attack_data.is_dir():
        print(f"(no attack-sample logs at {args.attack_data}: f) skipped)")
        return {}
    mix = folder / "attack.xml"
    write_mix(args.attack_data, args.events, mix)
    rates = {LXML_LOOP: lxml_loop(mix)}
    for jobs in (1, 2):
        started = time.perf_counter()
        detect_files([mix], rules, WindowPolicy(), jobs=jobs)
        rates[f"f) detect, attack mix, {jobs} job(s) (events/s)"] = args.events / (
            time.perf_counter() - started
        )
    return rates


def broker_name(args: argparse.Namespace) -> str:
    """Return the broker measured, as the table and the JSON name it."""
    if args.bootstrap:
        return f"external {args.bootstrap}"
    return f"apache-kafka {KAFKA_VERSION}" if args.broker == "apache-kafka" else "embedded"


class Committed:
    """Reads the offsets a group has committed on the raw topics, summed."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.reader = consumer(settings, group)  # never subscribes: it only reads offsets
        self.partitions = [
            TopicPartition(topic, number)
            for topic in settings.topics().raw().values()
            for number in self.reader.list_topics(topic, timeout=30).topics[topic].partitions
        ]

    def __call__(self) -> int:
        """Return the sum of the committed offsets (0 while the group has no coordinator)."""
        try:
            found = self.reader.committed(self.partitions, timeout=30)
        except KafkaException as error:
            if error.args[0].code() not in COORDINATOR_MOVING:
                raise
            return 0
        return sum(max(p.offset, 0) for p in found)


def intake_alone(settings: Settings, count: int, processes: int) -> float:
    """Return events/s of ``processes`` intake processes (no Faust process) over the backlog.

    Timed from the first committed offsets to the last, so start-up is not counted.
    """
    own = settings.model_copy(
        update={"group_id": f"{settings.group_id}-alone{processes}", "intake_processes": processes}
    )
    committed, spawn = (
        Committed(own, f"{own.group_id}-intake"),
        multiprocessing.get_context("spawn"),
    )
    stop = spawn.Event()
    running = [
        spawn.Process(
            target=run_intake_process,
            args=(own.intake_settings(number), IntakeStatus(), stop, logging.WARNING),
        )
        for number in range(processes)
    ]
    for process in running:
        process.start()
    deadline = time.monotonic() + 600
    while (first := committed()) == 0:
        assert time.monotonic() < deadline, "the intakes committed nothing"
        time.sleep(0.1)
    started = time.perf_counter()
    while (done := committed()) < count:
        assert time.monotonic() < deadline, f"the intakes committed only {done} offsets"
        time.sleep(0.1)
    rate = (count - first) / (time.perf_counter() - started)
    committed.reader.close()
    stop.set()
    for process in running:
        process.join(60)
    return rate


@dataclass(frozen=True)
class FloodRun:
    """What the matches-flood measurement found."""

    matches: int
    rate: float  # matches aggregated per second
    canary_seconds: float  # a matching event produced behind the flood -> its finding
    rss_per_group: float  # the worker's RSS growth per open group, bytes
    faust_per_group: float  # the same, the Faust process alone (where the groups are kept)
    plain_per_group: float  # the same groups in a plain in-memory table, bytes


def plain_table_bytes(matches: list[Match], rules: tuple[Rule, ...]) -> int:
    """Return the bytes the aggregation's table of ``matches`` takes in a plain dict.

    The matches are decoded from their bytes inside the measurement, as they come off the
    matches topic: the table holds the strings they bring.
    """
    encoded = [MATCH.encode(match) for match in matches]
    tracemalloc.start()
    state: dict[str, DestState] = {}
    aggregator = Aggregator({rule.id: rule for rule in rules}, state, WindowPolicy())
    for payload in encoded:
        aggregator.add(MATCH.decode(payload), -math.inf, 0.0)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size


def findings_of(settings: Settings, dest: str, found: threading.Event) -> Consumer:
    """Return a reader at the end of the findings topic that sets ``found`` on ``dest``'s."""
    reader = consumer(
        settings, f"bench-canary-{uuid.uuid4().hex[:6]}", **{"isolation.level": "read_committed"}
    )
    topic = settings.topics().findings
    count = len(reader.list_topics(topic, timeout=30).topics[topic].partitions)
    reader.assign([TopicPartition(topic, p, OFFSET_END) for p in range(count)])

    def watch() -> None:
        while not found.is_set():
            for message in reader.consume(1000, 0.2):
                if message.error() is None and dest.encode() in (message.value() or b""):
                    found.set()

    threading.Thread(target=watch, daemon=True).start()
    return reader


def run_flood(settings: Settings, count: int, rules: tuple[Rule, ...], logs: Path) -> FloodRun:
    """Flood one worker with matching events of distinct dests; measure the aggregation."""
    prefix = f"{settings.topic_prefix}flood."
    own = settings.model_copy(
        update={
            "topic_prefix": prefix,
            "raw_topics": {
                s.source: f"{prefix}{s.name}" for s in settings.topics().specs if s.source
            },
            "group_id": f"{settings.group_id}-flood",
        }
    )
    create_topics(own, own.topics(), raw=True)
    batch = list(flood(count + 1))
    canary = batch.pop()
    detector = Detector(rules)
    matches = [m for _, _, payload in batch for m in detector.process(payload).matches]
    logs.mkdir()
    [(process, _)] = start_workers(own, 1, logs)
    rss_before, faust_before = rss_mib(process.pid), rss_mib(process.pid, tree=False)
    found = threading.Event()
    reader = findings_of(own, canary[1], found)
    produce(own, own.topics(), batch)
    canary_at = time.perf_counter()
    produce(own, own.topics(), [canary])
    folders = [logs / "worker0"]
    while counted(folders, "wmiwatch_matches_aggregated_total") == 0:
        time.sleep(POLL_EVERY)
    started, deadline = time.perf_counter(), time.monotonic() + 1800
    while counted(folders, "wmiwatch_matches_aggregated_total") < len(matches):
        assert time.monotonic() < deadline, "the flood was not aggregated within 30 minutes"
        pause(started)
    rate = len(matches) / (time.perf_counter() - started)
    assert found.wait(600), "the canary's finding never came"
    canary_seconds = time.perf_counter() - canary_at
    growth = (rss_mib(process.pid) - rss_before) * (1 << 20)
    faust_growth = (rss_mib(process.pid, tree=False) - faust_before) * (1 << 20)
    found.set()
    reader.close()
    process.terminate()
    process.wait(120)
    plain = plain_table_bytes(matches, rules)
    n = len(matches)
    return FloodRun(n, rate, canary_seconds, growth / n, faust_growth / n, plain / n)


GUARANTEES = ("exactly_once", "at_least_once")
IMPORTED_WORKER = "exactly_once_imported_rules"  # b)'s worker with the g) rules


def measure(
    args: argparse.Namespace, bootstrap: str, folder: Path, broker_pid: int | None
) -> dict[str, object]:
    """Generate, produce and measure against ``bootstrap``; print the table, return figures."""
    settings = fresh_settings(bootstrap, "bench")
    topics = settings.topics()
    batch = list(events(args.events))
    log_file = folder / "events.xml"
    log_file.write_bytes(b"\n".join(payload for _, _, payload in batch) + b"\n")
    produce(settings, topics, batch)
    bare = asyncio.run(bare_consume(settings, topics, args.events))
    rules = load_rules(settings.rules_dir)
    started = time.perf_counter()
    report = detect_files([log_file], rules, WindowPolicy())
    detect_rate = args.events / (time.perf_counter() - started)
    matches = report.matches  # all of them, also those of groups no finding reports
    runs = {}
    for guarantee in GUARANTEES:  # each with topics of its own, raw ones holding the same events
        own = fresh_settings(bootstrap, f"bench{guarantee[0]}", processing_guarantee=guarantee)
        logs = folder / guarantee
        logs.mkdir()
        runs[guarantee] = run_worker(
            own, own.topics(), batch, args.workers, logs, matches, broker_pid
        )
    alone = {n: intake_alone(settings, args.events, n) for n in (1, 2)}  # after b)
    flooded = run_flood(settings, args.flood, rules, folder / "flood")
    attack = detect_attack_mix(args, rules, folder)
    mixes = [log_file] + ([folder / "attack.xml"] if attack else [])
    imported_rules = import_endpoint_rules(args, folder)
    with_imported: dict[str, float] = {}
    if imported_rules is not None:
        imported_folder, imported = imported_rules
        with_imported, imported_matches = imported_rules_rates(rules, imported, mixes)
        own = fresh_settings(bootstrap, "benchg", rules_dir=imported_folder)
        logs = folder / IMPORTED_WORKER
        logs.mkdir()
        runs[IMPORTED_WORKER] = run_worker(
            own, own.topics(), batch, args.workers, logs, imported_matches, broker_pid
        )
    print(
        f"wmiwatch benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"broker {broker_name(args)}, hyperscan {HYPERSCAN}, "
        f"{args.events} events ({log_file.stat().st_size / args.events:.0f} B avg), "
        f"{len(report.findings)} findings, {args.workers} worker(s)"
    )
    print(f"{'measure':44} {'value':>14} {'vs a':>8}")
    print(f"{'a) bare aiokafka getmany (msg/s)':44} {bare:14,.0f} {1:8.2f}")
    for guarantee, run in runs.items():
        print(f"{f'b) worker end to end, {guarantee} (events/s)':44} {run.rate:14,.0f}", end="")
        print(f" {run.rate / bare:8.2f}")
        print(f"{'   latency p50 / p99 at half rate (s, <=)':44} {run.p50:>6} / {run.p99:<6}")
        whole = len(batch) / run.rate
        label = "   intake done / last match aggregated (s)"
        print(f"{label:44} {run.intake_seconds:>6.1f} / {whole:<6.1f}")
        print(f"{'   worker RSS (MiB)':44} {run.rss:14,.0f}")
        for role, cores in sorted(run.cores.items()):
            print(f"{f'   CPU cores used by {role}':44} {cores:14.2f}")
        for role, cores in sorted(run.half_rate_cores.items()):
            print(f"{f'   ... at half rate, by {role}':44} {cores:14.2f}")
    for label, value in (
        ("c) wmiwatch detect on XML lines (events/s)", detect_rate),
        ("d) intake alone, 1 process (events/s)", alone[1]),
        ("d) intake alone, 2 processes (events/s)", alone[2]),
    ):
        print(f"{label:44} {value:14,.0f} {value / bare:8.2f}")
    print(f"{f'e) flood of {flooded.matches} matches, distinct dests (matches/s)':44}", end="")
    print(f" {flooded.rate:14,.0f}")
    print(f"{'   canary behind the flood -> finding (s)':44} {flooded.canary_seconds:14.1f}")
    print(f"{'   worker RSS growth per match (B)':44} {flooded.rss_per_group:14,.0f}")
    print(f"{'   of which the Faust process (B)':44} {flooded.faust_per_group:14,.0f}")
    print(f"{'   plain in-memory table per match (B)':44} {flooded.plain_per_group:14,.0f}")
    for label, value in attack.items():
        print(f"{label:44} {value:14,.0f} {value / attack[LXML_LOOP]:8.2f} (vs lxml)")
    for label, value in with_imported.items():
        print(f"{label:60} {value:14,.0f}")
    if IMPORTED_WORKER in runs:
        ratio = runs[IMPORTED_WORKER].rate / runs["exactly_once"].rate
        print(f"{'g) worker, imported rules / story rules (exactly-once)':60} {ratio:14.3f}")
    return {
        "broker": broker_name(args),
        "hyperscan": HYPERSCAN,
        "events": args.events,
        "getmany_eps": round(bare),
        "worker": {
            guarantee: {
                "eps": round(run.rate),
                "p50_latency_s": run.p50,
                "p99_latency_s": run.p99,
                "rss_mib": round(run.rss, 1),
                "intake_s": round(run.intake_seconds, 1),
                "cores": {role: round(c, 2) for role, c in run.cores.items()},
                "half_rate_cores": {role: round(c, 2) for role, c in run.half_rate_cores.items()},
            }
            for guarantee, run in runs.items()
        },
        "detect_eps": round(detect_rate),
        "intake_eps": {str(n): round(rate) for n, rate in alone.items()},
        "flood": {
            "matches": flooded.matches,
            "matches_per_s": round(flooded.rate),
            "canary_s": round(flooded.canary_seconds, 1),
            "rss_per_match_b": round(flooded.rss_per_group),
            "faust_rss_per_match_b": round(flooded.faust_per_group),
            "plain_per_match_b": round(flooded.plain_per_group),
        },
        "attack_mix": {label: round(value) for label, value in attack.items()},
        "imported_rules": {label: round(value) for label, value in with_imported.items()},
    }


if __name__ == "__main__":
    main()
