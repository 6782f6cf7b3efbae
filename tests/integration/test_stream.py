"""End to end on a real broker: replay real and synthetic samples through a real worker."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from pipeline import __version__
from pipeline.agents import READ_AHEAD_RECORDS
from pipeline.batch import match_batches
from pipeline.kafka import create_topics, producer
from pipeline.offline import detect_files
from pipeline.records import MATCH, Match
from pipeline.replay import replay_files
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.topics import Topics
from tests.conftest import (
    ENGINE,
    FIXTURES,
    WorkerProcess,
    intake_pids,
    read_topic,
    schema_validator,
    set_topic_config,
    settings_env,
    start_worker,
    the_intake,
    wait_until_gone,
)
from tests.synthetic import WMIC_NODE_RULE, WMIEXEC, WMIEXEC_RULE, script_block

pytestmark = pytest.mark.integration


SEED_SAMPLES = sorted((FIXTURES / "demo").glob("*.xml")) + sorted((FIXTURES / "demo").glob("*.log"))
ALL_SAMPLES = SEED_SAMPLES + sorted(p for p in (FIXTURES / "rules").iterdir() if p.suffix != ".md")

SEED_FINDINGS = {
    ("Remote WMI Command Attempt", "ar-win-1"),
    ("Remote Process Instantiation via WMI and PowerShell Script Block", "ws01.corp.example"),
    ("PowerShell Invoke WmiExec Usage", "ws07.corp.example"),
}


def seed_findings(
    worker: Settings, client: Settings, topics: Topics, log: Path
) -> set[tuple[str, str]]:
    """Run a worker as ``worker``, replay the seed samples and read the findings as ``client``;
    return the (rule name, dest) of the new findings."""
    running = start_worker(worker, log)
    try:
        replay_files(SEED_SAMPLES, client, topics)
        findings = read_topic(client, topics.findings, expected=6, timeout=90)
    finally:
        running.stop()
    return {(f["rule_name"], f["dest"]) for f in findings if f["status"] == "new"}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of the worker's /metrics, fetched over HTTP."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """Sum a metric over all its label sets."""
    return sum(value for (metric, _), value in metrics.items() if metric == name)


def test_seed_detections_fire_on_the_stream(
    settings: Settings, topics: Topics, worker: WorkerProcess
) -> None:
    counts = replay_files(SEED_SAMPLES, settings, topics)
    assert counts == {topics.name("windows.sysmon"): 17, topics.name("windows.powershell"): 4}

    records = read_topic(settings, topics.findings, expected=6)
    findings = [f for f in records if f["status"] == "new"]
    assert len(findings) == 6
    assert {(f["rule_name"], f["dest"]) for f in findings} >= SEED_FINDINGS
    wmiexec = next(f for f in findings if f["rule_name"] == "PowerShell Invoke WmiExec Usage")
    assert (
        wmiexec["title"]
        == "PowerShell was identified running a Invoke-WmiExec on ws07.corp.example."
    )
    assert wmiexec["rule_version"] == 12
    assert wmiexec["risk_score"] == 50
    assert wmiexec["entity"] == {"field": "dest", "type": "system", "value": "ws07.corp.example"}
    assert wmiexec["count"] == 1
    assert wmiexec["first_time"] == "2024-03-05T11:02:44.000Z"
    assert wmiexec["evidence"][0]["topic"] == topics.name("windows.powershell")
    assert wmiexec["evidence"][0]["record_id"] == "1207"

    risk = read_topic(settings, topics.risk, expected=10)
    for topic, output in (("wmiwatch.findings", records), ("wmiwatch.risk", risk)):
        validator = schema_validator(topic)
        for record in output:
            validator.validate(record)
    by_finding = {r["finding_id"] for r in risk}
    assert by_finding == {f["finding_id"] for f in findings}
    wmic = next(f for f in findings if f["rule_name"] == "Remote WMI Command Attempt")
    wmic_risk = sorted(
        (r["risk_object_type"], r["risk_object"], r["risk_score"])
        for r in risk
        if r["finding_id"] == wmic["finding_id"]
    )
    assert wmic_risk == [("system", "ar-win-1", 36), ("user", "AR-WIN-1\\Administrator", 36)]

    for probe in ("healthz", "readyz"):
        url = f"http://127.0.0.1:{settings.metrics_port}/{probe}"
        assert urllib.request.urlopen(url, timeout=5).read() == b"ok\n"
    metrics = scrape(settings.metrics_port)
    lag = (("partition", "0"), ("topic", topics.name("windows.sysmon")))
    assert ("wmiwatch_consumer_lag", lag) in metrics
    assert total(metrics, "wmiwatch_rule_watermark_seconds") > 0
    assert metrics[("wmiwatch_raw_partitions_silent", ())] == 0  # its intake reads them all
    consumed = (
        "wmiwatch_events_consumed_total",
        (("event_code", "4104"), ("topic", topics.name("windows.powershell"))),
    )
    assert metrics[consumed] == 4
    assert total(metrics, "wmiwatch_findings_emitted_total") == len(records)
    assert total(metrics, "wmiwatch_risk_events_emitted_total") == len(risk)
    assert total(metrics, "wmiwatch_finding_latency_seconds_count") == len(findings)
    assert metrics[("wmiwatch_build_info", (("version", __version__),))] == 1
    wmiexec_info = (
        ("mitre", "T1047"),
        ("rule", wmiexec["rule_id"]),
        ("rule_name", "PowerShell Invoke WmiExec Usage"),
        ("rule_version", "12"),
    )
    assert metrics[("wmiwatch_rule_info", wmiexec_info)] == 1
    assert total(metrics, "wmiwatch_rule_info") == total(metrics, "wmiwatch_rules_loaded") == 14


def test_the_worker_reads_topics_the_broker_compresses_in_any_codec(
    settings: Settings, tmp_path: Path
) -> None:
    """A cluster may set ``compression.type`` on a topic; Apache Kafka then rewrites each batch
    in that codec, whatever the producer sent. The Faust agents read the zstd and snappy
    batches (aiokafka decodes them with cramjam). The embedded broker keeps the producers'
    codec, lz4 by default, which aiokafka decodes with cramjam too."""
    loaded = settings.topics()
    create_topics(settings, loaded, raw=True)
    set_topic_config(settings, loaded.matches, "compression.type", "zstd")
    set_topic_config(settings, loaded.risk_batches, "compression.type", "snappy")
    assert seed_findings(settings, settings, loaded, tmp_path / "worker.log") >= SEED_FINDINGS
    risk = read_topic(settings, loaded.risk, expected=10)
    assert {r["risk_object"] for r in risk} >= {dest for _, dest in SEED_FINDINGS}


def test_stream_and_offline_detect_give_the_same_finding_ids(
    settings: Settings, topics: Topics, worker: WorkerProcess
) -> None:
    offline = detect_files(ALL_SAMPLES, load_rules(settings.rules_dir), settings.window_policy())
    assert len(offline.findings) >= 20
    replay_files(ALL_SAMPLES, settings, topics)
    streamed = read_topic(settings, topics.findings, expected=len(offline.findings))
    assert {f["finding_id"] for f in streamed} == {f.finding_id for f in offline.findings}
    first_emissions = sorted(f["finding_id"] for f in streamed if f["status"] == "new")
    assert first_emissions == sorted(f.finding_id for f in offline.findings)


def test_a_password_without_sasl_is_refused_without_printing_it(
    settings: Settings, tmp_path: Path
) -> None:
    secret = "s3cr3t-Pa55word-7f1c"
    env = settings_env(settings.model_copy(update={"sasl_password": SecretStr(secret)}))
    command = [sys.executable, "-m", "pipeline", "worker"]
    done = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2
    assert "sasl_password is set but PLAINTEXT uses no SASL" in " ".join(output.split())
    assert secret not in output


def test_bad_records_go_to_the_dead_letter_topic(
    settings: Settings, topics: Topics, worker: WorkerProcess
) -> None:
    bad = {
        b"not an event at all": "not_xml",
        b'{"EventID": 1,': "not_json",
        b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><Event>&a;</Event>": "xml_entities",
        b'{"Channel": "Application", "EventID": 1, "TimeCreated": "2024-01-01"}': "unknown_source",
    }
    client = producer(settings)
    for payload in bad:
        client.produce(topics.name("windows.sysmon"), payload)
    client.flush(10)
    letters = read_topic(settings, topics.dead_letter, expected=len(bad))
    assert {base64.b64decode(d["payload_base64"]): d["reason"] for d in letters} == bad
    assert all(d["topic"] == topics.name("windows.sysmon") for d in letters)
    for letter in letters:
        schema_validator("wmiwatch.dead-letter").validate(letter)
    metrics = scrape(settings.metrics_port)
    for reason in bad.values():
        assert metrics[("wmiwatch_events_rejected_total", (("reason", reason),))] == 1


def test_a_suppression_applies_in_the_stream_until_it_expires_by_the_clock(
    settings: Settings, topics: Topics, worker: WorkerProcess
) -> None:
    """An entry expiring in a few seconds drops the first event; after its expiry, an event
    stamped before it (by the event time, still inside the entry) gives a finding."""
    client, host, stamped = producer(settings), "ws-suppressed", time.time()
    expires = stamped + 8
    entry = {
        "rule_id": WMIEXEC_RULE,
        "field": "dest",
        "value": host,
        "reason": "maintenance window",
        "author": "soc",
        "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
    }
    client.produce(topics.suppressions, orjson.dumps(entry), key=b"window")
    client.flush(10)
    deadline = time.monotonic() + 30
    while b"suppression 'window' applied" not in worker.log.read_bytes():
        assert time.monotonic() < deadline, "the worker did not read the suppression"
        time.sleep(0.2)
    raw = topics.name("windows.powershell")
    client.produce(raw, script_block(host, stamped, WMIEXEC, 1), key=host.encode())
    client.flush(10)
    wait_for_metric(settings.metrics_port, "wmiwatch_matches_suppressed_total", 1)
    time.sleep(max(0.0, expires - time.time()) + 1)
    client.produce(raw, script_block(host, stamped + 1, WMIEXEC, 2), key=host.encode())
    client.flush(10)
    (finding,) = read_topic(settings, topics.findings, expected=1)
    assert (finding["dest"], finding["status"], finding["count"]) == (host, "new", 1)
    assert finding["evidence"][0]["record_id"] == "2"  # the event after the expiry
    assert total(scrape(settings.metrics_port), "wmiwatch_matches_suppressed_total") == 1


def wait_for_metric(port: int, name: str, value: float, timeout: float = 60) -> None:
    """Wait until the worker's metric ``name`` (summed over labels) reaches ``value``."""
    deadline = time.monotonic() + timeout
    while total(scrape(port), name) < value:
        assert time.monotonic() < deadline, f"{name} did not reach {value}"
        time.sleep(0.3)


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_restarted_worker_recovers_its_table_and_repeats_no_finding(
    settings: Settings, topics: Topics, tmp_path: Path, guarantee: str
) -> None:
    settings = settings.model_copy(update={"processing_guarantee": guarantee})
    samples = [path for path in SEED_SAMPLES if "4104" in path.name]  # one day's events
    first = start_worker(settings, tmp_path / "first.log")
    replay_files(samples, settings, topics)
    before = read_topic(settings, topics.findings, expected=2)
    matches = total(scrape(settings.metrics_port), "wmiwatch_matches_aggregated_total")
    first.stop()

    second = start_worker(settings, tmp_path / "second.log")
    try:
        replay_files(samples, settings, topics)  # the same events once more
        wait_for_metric(settings.metrics_port, "wmiwatch_matches_aggregated_total", matches)
        after = read_topic(settings, topics.findings, expected=len(before))
    finally:
        second.stop()
    assert [f["status"] for f in before] == ["new", "new"]
    first_emissions = sorted(f["finding_id"] for f in after if f["status"] == "new")
    assert first_emissions == sorted(f["finding_id"] for f in before)


def test_the_intake_process_lives_and_dies_with_its_worker(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    crashing = start_worker(settings, tmp_path / "crashing.log")
    intake = the_intake(crashing.process.pid)
    os.kill(intake, signal.SIGKILL)
    assert crashing.process.wait(60) != 0  # a worker without its intake stops (and is restarted)
    assert b"intake process 0 exited with code -9" in (tmp_path / "crashing.log").read_bytes()

    killed = start_worker(settings, tmp_path / "killed.log")
    intake = the_intake(killed.process.pid)
    os.kill(killed.process.pid, signal.SIGKILL)
    killed.process.wait(10)
    assert wait_until_gone(intake, timeout=30)  # no orphan intake keeps consuming


def test_a_worker_whose_intake_loop_stalls_stops(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"intake_stall_seconds": 3.0})
    worker = start_worker(settings, tmp_path / "stalled.log")
    intake = the_intake(worker.process.pid)
    os.kill(intake, signal.SIGSTOP)  # as if stuck in a call that never returns
    assert worker.process.wait(60) != 0  # it stops, to be restarted
    assert b"intake process 0 loop stalled for" in (tmp_path / "stalled.log").read_bytes()
    assert wait_until_gone(intake, timeout=30)


def test_json_logs_give_one_object_per_line(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"log_format": "json"})
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        replay_files(SEED_SAMPLES, settings, topics)
        read_topic(settings, topics.findings, expected=6)
    finally:
        worker.stop()
    lines = log.read_text().splitlines()
    records = [orjson.loads(line) for line in lines if line.startswith("{")]
    assert {"time", "process", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"] == "[^---Recovery]: Worker ready" for r in records)
    assert any(r["message"].startswith("aggregation took over partition") for r in records)
    assert not [line for line in lines if line.startswith("[20")]  # no text-format record


def intake_assignments(settings: Settings, expected_members: int) -> list[int]:
    """Wait until the intakes' group has ``expected_members``; return each one's partition count."""
    admin, group = AdminClient(settings.librdkafka_config()), f"{settings.group_id}-intake"
    deadline = time.monotonic() + 60
    while True:
        described = admin.describe_consumer_groups([group])[group].result(timeout=30)
        counts = [len(m.assignment.topic_partitions) for m in described.members]
        if (len(counts) == expected_members and all(counts)) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


@pytest.mark.skipif(
    ENGINE == "embedded",
    reason="embedded broker: two members joining one group at once were once left with no "
    "partitions for 60 s (a CI run); Apache Kafka is the reference (docs/testing.md)",
)
def test_two_intake_processes_share_the_raw_partitions(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"intake_processes": 2})
    running = start_worker(settings, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 30
        while len(intake_pids(running.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(intake_pids(running.process.pid)) == 2
        raw_partitions = sum(s.partitions for s in topics.specs if s.role == "raw" and s.source)
        shares = intake_assignments(settings, expected_members=2)
        assert len(shares) == 2 and all(shares) and sum(shares) == raw_partitions
        replay_files(SEED_SAMPLES, settings, topics)
        records = read_topic(settings, topics.findings, expected=6)
        consumed = total(scrape(settings.metrics_port), "wmiwatch_events_consumed_total")
    finally:
        running.stop()
    findings = [f for f in records if f["status"] == "new"]
    assert len(findings) == 6 and {(f["rule_name"], f["dest"]) for f in findings} >= SEED_FINDINGS
    assert consumed == 21  # 17 Sysmon and 4 PowerShell events, each read once


def test_a_backlog_of_matches_is_read_a_few_records_ahead(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    """A worker starting behind a backlog of matches batches holds only ``READ_AHEAD_RECORDS``
    of them read and not yet handled (Faust's own default, 4,096 records of up to 256 KiB,
    would read this backlog into the process whole), pauses fetching and counts it."""
    now, command = time.time(), "wmic /node:10.0.0.12 process call create " + "x" * 2_000
    pairs = [
        (dest, MATCH.encode(Match(WMIC_NODE_RULE, dest, now, group, {}, None, False, now)))
        for dest in (f"backlog{number:05d}.corp.example" for number in range(16_000))
        for group in [{"Processes.dest": dest, "Processes.process": command}]
    ]
    records = list(match_batches(pairs, topics.spec("wmiwatch.matches").partitions))
    assert len(records) > 2 * READ_AHEAD_RECORDS
    client = producer(settings)
    for partition, record in records:
        client.produce(topics.matches, record, partition=partition)
    assert client.flush(30) == 0
    running = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_for_metric(settings.metrics_port, "wmiwatch_matches_aggregated_total", len(pairs), 120)
        metrics = scrape(settings.metrics_port)
    finally:
        running.stop()
    assert metrics["wmiwatch_read_ahead_full_total", (("stage", "aggregation"),)] > 0
