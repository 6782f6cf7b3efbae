"""Memory over a long run: one worker's RSS (all its processes) while it consumes N events.

    .venv/bin/python bench/memory.py [--events 10000000] [--hosts 100000] [--per-second 100]
        [--broker apache-kafka|embedded | --bootstrap HOST:PORT] [--json PATH]

Produces ``--events`` fleet-mix events from ``--hosts`` distinct hosts, ``--per-second`` of
them per second of event time (the aggregation keeps the groups of the last two windows, so the
state, and the memory, settle once two hours of event time have passed; compressed with lz4,
so that 10 million fit on a small disk) while one exactly-once worker consumes them, samples the
worker's RSS every few seconds with the events consumed so far and the aggregation table's
size, and prints the samples and the spread after the first tenth of the events (the warm-up:
imports, caches, librdkafka's buffers). The broker runs here on the same machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.fleet import events
from bench.run import fresh_settings, local_broker, produce, rss_mib, scrape, start_workers

SAMPLE_EVERY = 5.0
WARM_UP = 0.1  # the share of the events before the spread is measured


@dataclass(frozen=True)
class Sample:
    """The worker at one moment of the run."""

    seconds: float
    consumed: float
    rss_mib: float
    faust_mib: float  # the Faust process alone; the rest is its intake
    open_keys: float


def run(bootstrap: str, args: argparse.Namespace, folder: Path) -> list[Sample]:
    """Produce the events while one worker consumes them; return the samples."""
    count = args.events
    settings = fresh_settings(bootstrap, "memory", processing_guarantee="exactly_once")
    topics = settings.topics()
    ((worker, port),) = start_workers(settings, 1, folder)
    feed = threading.Thread(
        target=produce,
        args=(settings, topics, events(count, 3, args.per_second, args.hosts)),
        kwargs={"compression.type": "lz4"},
        daemon=True,
    )
    started = time.monotonic()
    feed.start()
    samples: list[Sample] = []
    try:
        while not samples or samples[-1].consumed < count:
            time.sleep(SAMPLE_EVERY)
            metrics = scrape(port)
            samples.append(
                Sample(
                    time.monotonic() - started,
                    metrics.get("wmiwatch_events_consumed_total", 0.0),
                    rss_mib(worker.pid),
                    rss_mib(worker.pid, tree=False),
                    metrics.get("wmiwatch_table_keys", 0.0),
                )
            )
            print(f"{samples[-1]}", flush=True)
    finally:
        worker.terminate()
        worker.wait(120)
    return samples


def spread(samples: list[Sample], count: int) -> tuple[float, float, float]:
    """Return the lowest and highest RSS after the warm-up and their spread around the mean."""
    settled = [s.rss_mib for s in samples if s.consumed >= WARM_UP * count]
    low, high = min(settled), max(settled)
    mean = sum(settled) / len(settled)
    return low, high, max(high - mean, mean - low) / mean


def main() -> None:
    """Run the long run on a broker started here (or ``--bootstrap``) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--per-second", type=int, default=100, help="events per event-time second")
    parser.add_argument("--broker", choices=["embedded", "apache-kafka"], default="apache-kafka")
    parser.add_argument("--bootstrap", help="an existing broker instead of one started here")
    parser.add_argument("--json", type=Path, help="also write the samples here as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, local_broker(args, Path(scratch)) as broker:
        samples = run(broker[0], args, Path(scratch))
    low, high, deviation = spread(samples, args.events)
    last = samples[-1]
    settled = next(s for s in samples if s.consumed >= WARM_UP * args.events)
    print(
        f"{args.events:,} events from {args.hosts:,} hosts in {last.seconds:.0f} s "
        f"({args.events / last.seconds:,.0f} events/s); worker RSS after the first "
        f"{WARM_UP:.0%}: {low:.0f}-{high:.0f} MiB, within ±{deviation:.1%} of its mean; "
        f"from then to the end, Faust process {settled.faust_mib:.0f} -> {last.faust_mib:.0f} "
        f"MiB, intake {settled.rss_mib - settled.faust_mib:.0f} -> "
        f"{last.rss_mib - last.faust_mib:.0f} MiB"
    )
    if args.json:
        args.json.write_text(json.dumps([s.__dict__ for s in samples], indent=1) + "\n")


if __name__ == "__main__":
    main()
