"""Throughput and latency benchmark: bare consumer vs. the wmiwatch worker vs. offline detect.

    .venv/bin/python bench/run.py [--events 200000] [--workers 1] [--bootstrap HOST:PORT]

Generates a busy-fleet mix of real-size XmlWinEventLog events (Sysmon 1/3/5/7/10/11/12/13/22
and Security 4624/4688 dominating, a little PowerShell 4104, rare WMI attacks from the test
fixtures), produces them to a fresh set of topics on a local broker (started here unless
--bootstrap is given), then measures in the same run:

  a) a bare aiokafka getmany loop over the raw topics (the ceiling),
  b) the full wmiwatch worker(s), all rules, until every event is consumed and the last finding
     is out; then p50/p99 latency (raw record -> finding) with events produced at half that rate,
  c) ``wmiwatch detect`` over the same events written as an XML file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.fleet import events
from pipeline.aggregate import WindowPolicy
from pipeline.broker import free_port, running_broker, wait_for_port
from pipeline.kafka import create_topics, producer
from pipeline.offline import detect_files
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.topics import Topics


def produce(
    settings: Settings, topics: Topics, batch: list[tuple[str, str, bytes]], rate: float = 0.0
) -> None:
    """Produce ``batch`` to the raw topics (at ``rate`` events/s when given)."""
    client, raw, started = producer(settings, **{"linger.ms": 20}), topics.raw(), time.monotonic()
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
    client.flush(120)


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


def scrape(port: int) -> dict[str, float]:
    """Return metric name -> sum over labels from a worker's /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


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


def rss_mib(pid: int) -> float:
    """Return the resident set size of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
            "WMIWATCH_GROUP_ID": settings.group_id,
            "WMIWATCH_DATA_DIR": str(logs / f"worker{number}"),
            "WMIWATCH_METRICS_PORT": str(port),
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


def run_worker(
    settings: Settings,
    topics: Topics,
    count: int,
    workers: int,
    logs: Path,
    matches_expected: float,
) -> tuple[float, float, float, float]:
    """Measure the workers over the backlog, then latency at half rate; return the figures."""
    running = start_workers(settings, workers, logs)
    ports = [port for _, port in running]

    def consumed() -> float:
        return sum(scrape(p).get("wmiwatch_events_consumed_total", 0) for p in ports)

    def aggregated() -> float:
        return sum(scrape(p).get("wmiwatch_matches_aggregated_total", 0) for p in ports)

    deadline = time.monotonic() + 1800
    while consumed() == 0:
        time.sleep(0.05)
    started = time.perf_counter()
    while consumed() < count:
        assert time.monotonic() < deadline, f"consumed only {consumed()} of {count}"
        time.sleep(0.05)
    done, last = time.perf_counter(), -1.0
    while aggregated() != last:  # the last matches reach the table
        last, done = aggregated(), time.perf_counter()
        time.sleep(0.5)
    rate = count / (done - started)
    print(f"(worker aggregated {last:.0f} matches; offline counted {matches_expected:.0f})")
    rss = max(rss_mib(process.pid) for process, _ in running)
    # latency: a fresh stream at half the measured rate for ~10 s
    half = rate / 2
    before = latency_buckets(ports[0])
    produce(settings, topics, list(events(int(half * 10), seed=2)), rate=half)
    time.sleep(3)
    after = latency_buckets(ports[0])
    p50, p99 = quantile(before, after, 0.5), quantile(before, after, 0.99)
    for process, _ in running:
        process.terminate()
        process.wait(60)
    return rate, p50, p99, rss


def main() -> None:
    """Run the three measurements and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.bootstrap:
            measure(args, args.bootstrap, folder)
        else:
            with running_broker(free_port(), folder / "broker") as address:
                measure(args, address, folder)


def measure(args: argparse.Namespace, bootstrap: str, folder: Path) -> None:
    """Generate, produce and measure against ``bootstrap``."""
    tag = uuid.uuid4().hex[:6]
    settings = Settings(
        bootstrap_servers=bootstrap, topic_prefix=f"bench{tag}.", group_id=f"bench-{tag}"
    )
    topics = settings.topics()
    create_topics(settings, topics)
    batch = list(events(args.events))
    log_file = folder / "events.xml"
    log_file.write_bytes(b"\n".join(payload for _, _, payload in batch) + b"\n")
    produce(settings, topics, batch)
    bare = asyncio.run(bare_consume(settings, topics, args.events))
    rules = load_rules(settings.rules_dir)
    started = time.perf_counter()
    report = detect_files([log_file], rules, WindowPolicy())
    detect_rate = args.events / (time.perf_counter() - started)
    matches = sum(f["count"] for f in report.findings)
    rate, p50, p99, rss = run_worker(settings, topics, args.events, args.workers, folder, matches)
    print(
        f"wmiwatch benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{args.events} events ({log_file.stat().st_size / args.events:.0f} B avg), "
        f"{len(report.findings)} findings, {args.workers} worker(s)"
    )
    print(f"{'measure':44} {'value':>14} {'vs a':>8}")
    print(f"{'a) bare aiokafka getmany (msg/s)':44} {bare:14,.0f} {1:8.2f}")
    print(f"{'b) wmiwatch worker end to end (events/s)':44} {rate:14,.0f} {rate / bare:8.2f}")
    print(
        f"{'c) wmiwatch detect on XML lines (events/s)':44} {detect_rate:14,.0f} "
        f"{detect_rate / bare:8.2f}"
    )
    print(f"{'b) latency p50 / p99 at half rate (s, <=)':44} {p50:>6} / {p99:<6}")
    print(f"{'b) worker RSS (MiB)':44} {rss:14,.0f}")


if __name__ == "__main__":
    main()
