"""Windows, suppression and risk incidents on the real broker with a real worker."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.kafka import producer
from pipeline.settings import Settings
from pipeline.topics import Topics
from tests.conftest import WorkerProcess, read_topic, schema_validator, start_worker
from tests.integration.test_stream import scrape, total
from tests.synthetic import BENIGN, WMIEXEC, WMIEXEC_RULE, WMIMETHOD, script_block

pytestmark = pytest.mark.integration
T0 = 1_709_640_000.0  # 2024-03-05T12:00:00Z, on an hour boundary


def produce(settings: Settings, topic: str, payloads: list[bytes], key: str) -> None:
    client = producer(settings)
    for payload in payloads:
        client.produce(topic, payload, key=key.encode())
    assert client.flush(10) == 0


@pytest.fixture
def tuned(settings: Settings, topics: Topics, tmp_path: Path) -> Iterator[Settings]:
    """A worker with an hour of allowed lateness and one-second update throttling."""
    tuned = settings.model_copy(
        update={"allowed_lateness_seconds": 3600, "update_interval_seconds": 1.0}
    )
    worker = start_worker(tuned, tmp_path / "tuned.log")
    yield tuned
    worker.stop()


def final_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    return {r["finding_id"]: r["count"] for r in records if r["status"] == "final"}


def stream_of(host: str) -> list[bytes]:
    """Two rules firing (with a benign block between) every 7 minutes for 3 hours."""
    events = [
        script_block(host, T0 + k * 420, (WMIEXEC, WMIMETHOD, BENIGN)[k % 3], k) for k in range(26)
    ]
    return events


def test_out_of_order_within_lateness_gives_the_same_findings_and_finals(
    tuned: Settings, topics: Topics
) -> None:
    ordered, events = stream_of("ws-ordered"), stream_of("ws-shuffled")
    shuffled = []
    for start in range(0, len(events), 5):  # displaced by at most 28 minutes < the lateness
        block = events[start : start + 5]
        random.Random(start).shuffle(block)
        shuffled += block
    closer = [script_block("ws-a", T0 + 4 * 3600 + 3600, BENIGN, 99)]
    interleaved = [event for pair in zip(ordered, shuffled, strict=True) for event in pair]
    # one key, so one partition: the two hosts' event times advance together, as in a fleet
    produce(tuned, topics.name("windows.powershell"), interleaved + closer, "fleet")
    records = read_topic(
        tuned, topics.findings, expected=2 * 6, counting=lambda record: record["status"] == "final"
    )
    by_host: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        schema_validator("wmiwatch.findings").validate(record)
        by_host[record["dest"]].append(record)

    def shape(host: str) -> dict[tuple[str, str], int]:
        return {
            (r["rule_name"], r["window_start"]): r["count"]
            for r in by_host[host]
            if r["status"] == "final"
        }

    assert shape("ws-ordered") == shape("ws-shuffled")
    assert sum(shape("ws-ordered").values()) == 18  # 9 WMIExec + 9 WmiMethod events
    assert len(shape("ws-ordered")) == 6  # 2 rules x 3 hourly windows
    assert not any(r["late"] for r in records), [
        (r["dest"], r["status"], r["window_start"], r["count"]) for r in records if r["late"]
    ]
    for host in ("ws-ordered", "ws-shuffled"):
        ids = defaultdict(list)
        for record in by_host[host]:
            ids[record["finding_id"]].append(record["status"])
        assert all(
            statuses[0] == "new" and statuses[-1] == "final" and statuses.count("new") == 1
            for statuses in ids.values()
        )


def test_suppressions_added_while_running_take_effect(
    settings: Settings, topics: Topics, worker: WorkerProcess
) -> None:
    raw = topics.name("windows.powershell")
    env = {"WMIWATCH_TOPIC_PREFIX": settings.topic_prefix}
    add = (
        f"suppress add pentest --rule {WMIEXEC_RULE} --field dest --value build-* "
        f"--reason pen-test --author alice --bootstrap {settings.bootstrap_servers}"
    ).split()
    assert CliRunner().invoke(app, add, env=env).exit_code == 0
    listing = ["suppress", "list", "--bootstrap", settings.bootstrap_servers]
    listed = CliRunner().invoke(app, listing, env={**env, "COLUMNS": "200"})
    assert listed.exit_code == 0
    assert "pentest" in listed.stdout and "build-*" in listed.stdout and "alice" in listed.stdout
    time.sleep(2)  # the intake polls the suppressions topic between batches
    produce(settings, raw, [script_block("build-07", T0, WMIEXEC, 1)], "build-07")
    produce(settings, raw, [script_block("ws-09", T0, WMIEXEC, 2)], "ws-09")
    findings = read_topic(settings, topics.findings, expected=1)
    assert {f["dest"] for f in findings} == {"ws-09"}
    suppressed = ("wmiwatch_matches_suppressed_total", (("rule", WMIEXEC_RULE),))
    assert scrape(settings.metrics_port)[suppressed] == 1

    remove = ["suppress", "remove", "pentest", "--bootstrap", settings.bootstrap_servers]
    assert CliRunner().invoke(app, remove, env=env).exit_code == 0  # a tombstone lifts it
    assert "pentest" not in CliRunner().invoke(app, listing, env=env).stdout
    time.sleep(2)
    produce(settings, raw, [script_block("build-07", T0 + 60, WMIEXEC, 3)], "build-07")
    findings = read_topic(settings, topics.findings, expected=2)
    assert {f["dest"] for f in findings} == {"ws-09", "build-07"}


def test_the_risk_threshold_is_crossed_once_at_the_right_event(
    settings: Settings, topics: Topics, worker: WorkerProcess
) -> None:
    raw = topics.name("windows.powershell")
    sequence = [
        script_block("ws-risk", T0, WMIEXEC, 1),  # 50
        script_block("ws-risk", T0 + 60, WMIMETHOD, 2),  # +50 = 100: incident here
        script_block("ws-risk", T0 + 120, WMIEXEC, 3),  # same finding
        script_block("ws-risk", T0 + 7200, WMIEXEC, 4),  # new window, same rule: counted once
    ]
    for payload in sequence:  # one at a time, so each is in its own intake batch
        produce(settings, raw, [payload], "ws-risk")
        time.sleep(0.5)
    incidents = read_topic(settings, topics.incidents, expected=1)
    threshold = [i for i in incidents if i["kind"] == "risk_threshold"]
    assert len(threshold) == 1
    (incident,) = threshold
    schema_validator("wmiwatch.risk-incidents").validate(incident)
    assert (incident["risk_object"], incident["score"]) == ("ws-risk", 100)
    assert incident["time"] == "2024-03-05T12:01:00.000Z"
    assert sorted(c["rule_name"] for c in incident["contributing"]) == [
        "PowerShell Invoke WmiExec Usage",
        "Remote Process Instantiation via WMI and PowerShell Script Block",
    ]
    assert total(scrape(settings.metrics_port), "wmiwatch_risk_incidents_emitted_total") == 1
