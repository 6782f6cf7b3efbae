"""One hostile record at a time into a live worker: none may blind it.

After each hostile record a fresh canary (a real-format 4104 Invoke-WMIExec event from a host
of its own, stamped now) must come out as exactly one ``new`` finding within seconds, the worker
and its intake must never restart, and the probes must stay green. Each hostile record must
end as documented: dead-lettered with its reason, dropped (counted), or matched with its time
clamped.
"""

from __future__ import annotations

import base64
import socket
import time
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer

from pipeline.kafka import consumer, producer
from pipeline.settings import Settings
from pipeline.topics import Topics
from tests.conftest import WorkerProcess, read_topic, schema_validator, start_worker, the_intake
from tests.integration.test_stream import scrape
from tests.synthetic import WMIEXEC, WMIEXEC_RULE, script_block
from tests.synthetic_hostile import (
    AFTER_STATS,
    BEFORE_STATS,
    SLOW_RULES,
    TEST_MAX_EVENT_BYTES,
    slow_sysmon,
    suite,
    with_slow_rules,
)

pytestmark = pytest.mark.integration

CANARY_SECONDS = 30.0  # each canary's finding arrives within this (seconds on a loaded machine)


class Findings:
    """Follows the findings topic and counts records per (dest, status)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.reader: Consumer = consumer(settings, f"reader-{uuid.uuid4().hex[:8]}")
        self.reader.subscribe([topic])
        self.records: list[dict[str, Any]] = []

    def wait_for_new(self, dest: str, timeout: float = CANARY_SECONDS) -> dict[str, Any]:
        """Return the first ``new`` finding of ``dest``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.records if r["dest"] == dest and r["status"] == "new"]
            if found:
                return found[0]
            for message in self.reader.consume(100, timeout=0.5):
                if message.error() is None:
                    self.records.append(orjson.loads(message.value() or b"{}"))
        raise AssertionError(f"no new finding for {dest} within {timeout:.0f}s")

    def news(self) -> Counter[str]:
        """Return how many ``new`` records each dest has."""
        return Counter(r["dest"] for r in self.records if r["status"] == "new")


def send(client: Producer, topic: str, payload: bytes, key: str) -> tuple[int, int]:
    """Produce one record and return its partition and offset."""
    delivered: list[Message] = []
    client.produce(topic, payload, key=key.encode(), on_delivery=lambda _, m: delivered.append(m))
    assert client.flush(30) == 0
    (message,) = delivered
    return message.partition() or 0, message.offset() or 0


def assert_healthy(settings: Settings, worker: WorkerProcess, intake: int) -> None:
    """The worker and its first intake still run, and both probes answer 200."""
    assert worker.process.poll() is None, "the worker exited"
    assert the_intake(worker.process.pid) == intake, "the intake was restarted"
    for probe in ("healthz", "readyz"):
        url = f"http://127.0.0.1:{settings.metrics_port}/{probe}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200, answer.read()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Return the test's settings with a size cap records can exceed through the broker."""
    return settings.model_copy(update={"max_event_bytes": TEST_MAX_EVENT_BYTES})


def internal_hostiles(now: float) -> list[tuple[str, str, bytes]]:
    """Return forged records of internal topics: (topic base name, key, payload)."""
    match = {
        "type": "match",
        "rule_id": WMIEXEC_RULE,
        "dest": "forged",
        "time": 1e20,  # a time no finding can render
        "group": {"Computer": "forged"},
        "values": {},
        "origin": {"topic": "x", "partition": 0, "offset": 0, "record_id": ""},
        "ingested_at": now,
        "time_clamped": False,
    }
    tick = {"type": "tick", "sent_at": now, "source_count": 30, "sources": [["x", "y", 1, 0]]}
    unknown_rule = {**match, "rule_id": "no-such-rule"}
    return [
        ("wmiwatch.matches", "forged", b"\x00not json"),
        ("wmiwatch.matches", "forged", orjson.dumps(unknown_rule)),
        ("wmiwatch.matches", "forged", orjson.dumps(match)),
        ("wmiwatch.matches", "forged", orjson.dumps(tick)),
        ("wmiwatch.matches", "", orjson.dumps({"type": "matches", "matches": [unknown_rule]})),
        ("wmiwatch.risk-batches", "", b"{}"),
        ("wmiwatch.risk-batches", "", orjson.dumps({"risk_events": [{"risk_object": "forged"}]})),
    ]


def test_no_hostile_record_blinds_the_worker(
    settings: Settings, topics: Topics, worker: WorkerProcess
) -> None:
    client = producer(settings)
    findings = Findings(settings, topics.findings)
    intake = the_intake(worker.process.pid)
    idle = [socket.create_connection(("127.0.0.1", settings.metrics_port)) for _ in range(4)]
    canaries = 0

    def canary() -> None:
        nonlocal canaries
        canaries += 1
        host = f"canary-{canaries}"
        payload = script_block(host, time.time(), WMIEXEC, canaries)
        send(client, topics.name("windows.powershell"), payload, host)
        assert findings.wait_for_new(host)["rule_id"] == WMIEXEC_RULE
        assert_healthy(settings, worker, intake)

    canary()  # the worker detects before anything hostile arrives
    now = time.time()
    placed = []
    for number, hostile in enumerate(suite(now)):
        topic = topics.name(hostile.topic)
        placed.append((hostile, topic, *send(client, topic, hostile.payload, f"hostile-{number}")))
        canary()
    internal = []
    for base, key, payload in internal_hostiles(now):
        topic = topics.name(base)
        internal.append((topic, *send(client, topic, payload, key)))
        canary()
    blanket = {"rule_id": "*", "field": "dest", "value": "*", "reason": "x", "author": "mallory"}
    send(client, topics.suppressions, orjson.dumps(blanket), "blanket")
    time.sleep(2)  # the intake reads suppressions between batches
    canary()  # the blanket entry was refused: detection goes on

    # Every canary gave exactly one new finding.
    assert all(findings.news()[f"canary-{n}"] == 1 for n in range(1, canaries + 1))

    # Each hostile raw record ended as documented.
    expected_letters = [h for h, *_ in placed if h.outcome not in ("dropped", "clamped", "matched")]
    letters = read_topic(
        settings, topics.dead_letter, expected=len(expected_letters) + len(internal), timeout=30
    )
    validator = schema_validator("wmiwatch.dead-letter")
    for letter in letters:
        validator.validate(letter)
    reasons = {(d["topic"], d["partition"], d["offset"]): d["reason"] for d in letters}
    for hostile, topic, partition, offset in placed:
        if hostile.outcome in ("dropped", "clamped", "matched"):
            assert (topic, partition, offset) not in reasons, hostile.name
        else:
            assert reasons.get((topic, partition, offset)) == hostile.outcome, hostile.name
    for topic, partition, offset in internal:
        assert reasons.get((topic, partition, offset)) == "unprocessable"
    assert len(letters) == len(expected_letters) + len(internal)  # nothing else

    clamped = [findings.wait_for_new(dest) for dest in ("h-y10k", "h-digits")]
    assert all(f["time_clamped"] for f in clamped)
    assert all(abs(_epoch(f["first_time"]) - now) < 120 for f in clamped)  # arrival time
    assert findings.wait_for_new("cs-host")["rule_name"]  # duplicate keys: the last one counts
    assert "forged" not in findings.news()

    metrics = scrape(settings.metrics_port)
    assert family(metrics, "wmiwatch_event_times_clamped_total") == {
        (("bound", "future"), ("source", "powershell")): 1.0,
        (("bound", "future"), ("source", "sysmon")): 1.0,
    }
    suppressions = family(metrics, "wmiwatch_suppressions_total")
    assert suppressions == {(("action", "refused"), ("scope", "")): 1.0}
    assert family(metrics, "wmiwatch_aggregation_rejected_total") == {
        (("topic", topics.matches),): 5.0,
        (("topic", topics.risk_batches),): 2.0,
    }
    assert sum(family(metrics, "wmiwatch_events_dropped_total").values()) >= 1  # Sysmon 3
    rejected = family(metrics, "wmiwatch_events_rejected_total")
    assert rejected[(("reason", "too_large"),)] == 2  # routed and unrouted, both counted
    assert metrics[("wmiwatch_event_time_watermark_seconds", ())] <= time.time() + 300
    assert metrics[("wmiwatch_intake_idle_seconds", ())] < 60
    assert metrics[("wmiwatch_aggregation_idle_seconds", ())] < 60
    assert sum(family(metrics, "wmiwatch_agent_crashes_total").values()) == 0
    log = worker.log.read_text()
    assert "suppression 'blanket' refused" in log

    # Idle connections to the probe port were closed by the server, not left holding it.
    for connection in idle:
        connection.settimeout(30)
        assert connection.recv(1) == b""
        connection.close()
    assert_healthy(settings, worker, intake)


def test_a_host_flooding_distinct_groups_is_bounded_and_blinds_no_one(
    settings: Settings, topics: Topics, worker: WorkerProcess
) -> None:
    """A host whose events open group after group (distinct 12 KB script blocks, grouped by
    their text) fills its own bound: each match past it is dead-lettered ``dest_full``, and
    other hosts are detected."""
    client = producer(settings)
    raw, now, sent = topics.name("windows.powershell"), time.time(), 2100  # ~9 MB of groups
    texts = [f"{WMIEXEC} # {n:04d} " + "A" * 12_000 for n in range(sent)]
    for number, text in enumerate(texts):
        client.produce(raw, script_block("flooded", now, text, number), key=b"flooded")
    assert client.flush(60) == 0
    send(client, raw, script_block("bystander", time.time(), WMIEXEC, 1), "bystander")
    assert Findings(settings, topics.findings).wait_for_new("bystander")["rule_id"] == WMIEXEC_RULE
    flooded = lambda record: record["dest"] == "flooded" and record["status"] == "new"  # noqa: E731
    full: list[Any] = []
    while not full or len(read_topic(settings, topics.dead_letter, len(full))) > len(full):
        full = read_topic(settings, topics.dead_letter, expected=1)  # until no more arrive
    news = read_topic(settings, topics.findings, expected=sent - len(full), counting=flooded)
    assert len(full) + sum(map(flooded, news)) == sent and sum(map(flooded, news)) > sent / 2
    assert {letter["reason"] for letter in full} == {"dest_full"}
    schema_validator("wmiwatch.dead-letter").validate(full[0])
    texts_out = [r["group"]["ScriptBlockText"] for r in news if flooded(r)]
    assert max(map(len, texts_out)) < 4096 + 64  # shortened, with their length and digest
    assert all(f"…[{len(texts[0])} characters, blake2b " in text for text in texts_out)
    assert sum(family(scrape(settings.metrics_port), "wmiwatch_agent_crashes_total").values()) == 0


def test_a_flood_of_forged_dests_stops_at_the_table_s_bound(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    """Past ``WMIWATCH_MAX_OPEN_DESTS`` a match of a new dest is dead-lettered ``table_full``
    (the worker's memory stays bounded), and the dests held are still detected."""
    bounded = start_worker(settings.model_copy(update={"max_open_dests": 3}), tmp_path / "w.log")
    hosts = {f"forged-{number}" for number in range(5)}
    try:
        client, raw, now = producer(settings), topics.name("windows.powershell"), time.time()
        for number, host in enumerate(sorted(hosts)):
            send(client, raw, script_block(host, now, WMIEXEC, number), host)
        letters = read_topic(settings, topics.dead_letter, expected=2)
        refused = {orjson.loads(base64.b64decode(d["payload_base64"]))["dest"] for d in letters}
        held = sorted(hosts - refused)  # which three: the order the matches partitions ran in
        send(client, raw, script_block(held[0], now + 1, f"{WMIEXEC} again", 9), held[0])
        news = read_topic(settings, topics.findings, expected=4)
    finally:
        bounded.stop()
    assert [letter["reason"] for letter in letters] == ["table_full"] * 2
    for letter in letters:
        schema_validator("wmiwatch.dead-letter").validate(letter)
    assert len(held) == 3 and sorted(r["dest"] for r in news) == sorted([*held, held[0]])
    assert {r["status"] for r in news} == {"new"}  # a held dest opens new groups


def test_a_value_a_lookaround_runs_out_of_time_on_costs_only_its_rules(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    """A rule's bounded expression runs out of time on one event's value, once in the intake
    and once after stats: both are dead-lettered regex_timeout, the event's other rules find,
    and the worker goes on detecting."""
    rules = with_slow_rules(tmp_path / "rules")
    slowed = start_worker(settings.model_copy(update={"rules_dir": rules}), tmp_path / "w.log")
    try:
        client, findings = producer(settings), Findings(settings, topics.findings)
        raw, when = topics.name("windows.sysmon"), datetime.now(UTC).isoformat()
        at = send(client, raw, slow_sysmon("slow-1", when.replace("+00:00", "Z")), "slow-1")
        letters = read_topic(settings, topics.dead_letter, expected=2)
        findings.wait_for_new("slow-1")
        payload = script_block("after-slow", time.time(), WMIEXEC, 1)
        send(client, topics.name("windows.powershell"), payload, "after-slow")
        assert findings.wait_for_new("after-slow")["rule_id"] == WMIEXEC_RULE
        found = {r["rule_id"] for r in findings.records if r["dest"] == "slow-1"}
        metrics = scrape(settings.metrics_port)
    finally:
        slowed.stop()
    assert "272df6de-61f1-4784-877c-1fbc3e2d0838" in found  # Remote WMI Command Attempt
    assert found.isdisjoint(SLOW_RULES)
    for letter in letters:
        schema_validator("wmiwatch.dead-letter").validate(letter)
    where = {(d["topic"], d["reason"]): d for d in letters}
    assert len(letters) == 2 and set(where) == {
        (raw, "regex_timeout"),
        (topics.matches, "regex_timeout"),
    }
    assert (where[raw, "regex_timeout"]["partition"], where[raw, "regex_timeout"]["offset"]) == at
    assert where[raw, "regex_timeout"]["error"].startswith(f"rule {BEFORE_STATS}: regex: ")
    assert where[topics.matches, "regex_timeout"]["error"].startswith(f"rule {AFTER_STATS}: ")
    rejected = family(metrics, "wmiwatch_events_rejected_total")
    assert rejected[(("reason", "regex_timeout"),)] == 1
    assert family(metrics, "wmiwatch_aggregation_rejected_total") == {
        (("topic", topics.matches),): 1.0
    }


def family(metrics: dict[tuple[str, Any], float], name: str) -> dict[Any, float]:
    """Return the samples of metric ``name`` by their labels."""
    return {labels: value for (metric, labels), value in metrics.items() if metric == name}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
