"""One intake batch without a broker: real Kafka messages in, records to produce out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, Message

from pipeline import metrics
from pipeline.batch import BatchProcessor, match_batches
from pipeline.engine import Detector
from pipeline.partitions import key_partition
from pipeline.records import AGGREGATION_INPUT, DEAD_LETTER, MATCH, MatchBatch
from pipeline.rules.loader import load_rules
from pipeline.suppress import Suppressions
from pipeline.ticks import TickReporter
from pipeline.topics import Topics, load_topics
from tests import PROJECT_ROOT
from tests.synthetic import BENIGN, WMIC_NODE_RULE, WMIEXEC, WMIEXEC_RULE, script_block
from tests.synthetic_hostile import AFTER_STATS, BEFORE_STATS, slow_sysmon, with_slow_rules
from tests.unit.conftest import shared

POWERSHELL = "windows.powershell"
EVENT_TIME = 1_790_000_000.0
CLOCK = EVENT_TIME + 60


@pytest.fixture(scope=shared)
def detector() -> Detector:
    return Detector(load_rules(PROJECT_ROOT / "rules"), clock=lambda: CLOCK)


@pytest.fixture(scope=shared)
def topics() -> Topics:
    return load_topics(PROJECT_ROOT / "topics")


@pytest.fixture
def reporter(detector: Detector) -> TickReporter:
    return TickReporter(detector.event_time)


@pytest.fixture
def suppressions() -> Suppressions:
    return Suppressions()


@pytest.fixture
def batches(
    detector: Detector, topics: Topics, suppressions: Suppressions, reporter: TickReporter
) -> BatchProcessor:
    return BatchProcessor(detector, topics, suppressions, reporter, lambda: CLOCK)


def message(payload: bytes, offset: int, kafka_time: float | None = CLOCK) -> Message:
    timestamp = (
        (TIMESTAMP_NOT_AVAILABLE, 0)
        if kafka_time is None
        else (TIMESTAMP_CREATE_TIME, int(kafka_time * 1000))
    )
    return Message(topic=POWERSHELL, partition=2, offset=offset, value=payload, timestamp=timestamp)


def test_a_match_is_kept_with_its_dest_origin_and_arrival(batches: BatchProcessor) -> None:
    result = batches.process([message(script_block("ws01", EVENT_TIME, WMIEXEC, 7), 41)])
    ((dest, value),) = result.matches
    found = MATCH.decode(value)
    assert dest == "ws01"
    assert (found.rule_id, found.dest, found.time, found.ingested_at) == (
        WMIEXEC_RULE,
        "ws01",
        EVENT_TIME,
        CLOCK,
    )
    assert found.origin is not None
    assert (found.origin.topic, found.origin.partition, found.origin.offset) == (POWERSHELL, 2, 41)
    assert found.origin.record_id == "7"


def test_without_a_kafka_timestamp_the_arrival_is_the_clock(batches: BatchProcessor) -> None:
    payload = script_block("ws01", EVENT_TIME, WMIEXEC, 7)
    result = batches.process([message(payload, 1, kafka_time=None)])
    assert MATCH.decode(result.matches[0][1]).ingested_at == CLOCK


def test_a_record_that_cannot_be_parsed_is_dead_lettered_with_its_reason(
    batches: BatchProcessor, topics: Topics
) -> None:
    result = batches.process([message(b"<Event><System>", 9)])
    ((topic, key, value),) = result.produce
    letter = DEAD_LETTER.decode(value)
    assert (topic, key) == (topics.dead_letter, POWERSHELL.encode())
    assert (letter.reason, letter.topic, letter.partition, letter.offset) == (
        "not_xml",
        POWERSHELL,
        2,
        9,
    )
    assert result.tally[(metrics.events_rejected_total, ("not_xml",))] == 1


def test_a_record_a_rule_runs_out_of_time_on_is_dead_lettered_and_its_matches_sent(
    tmp_path: Path, topics: Topics, suppressions: Suppressions
) -> None:
    detector = Detector(load_rules(with_slow_rules(tmp_path / "rules")), clock=lambda: CLOCK)
    reporter = TickReporter(detector.event_time)
    batches = BatchProcessor(detector, topics, suppressions, reporter, lambda: CLOCK)
    result = batches.process([message(slow_sysmon("h1", "2026-09-21T14:13:20Z"), 9)])
    ((topic, _, value),) = result.produce
    letter = DEAD_LETTER.decode(value)
    assert (topic, letter.reason, letter.offset) == (topics.dead_letter, "regex_timeout", 9)
    assert letter.error.startswith(f"rule {BEFORE_STATS}: regex: ")
    sent = {MATCH.decode(encoded).rule_id for _, encoded in result.matches}
    assert {AFTER_STATS, WMIC_NODE_RULE} <= sent and BEFORE_STATS not in sent
    assert result.tally[(metrics.events_rejected_total, ("regex_timeout",))] == 1
    assert result.tally[(metrics.rule_matches_total, (WMIC_NODE_RULE,))] == 1


def test_a_batch_s_size_is_the_bytes_of_the_records_it_yields(batches: BatchProcessor) -> None:
    payloads = [b"<Event>" + b"A" * 5000, script_block("ws01", EVENT_TIME, WMIEXEC, 7)]
    result = batches.process([message(payload, n) for n, payload in enumerate(payloads)])
    ((_, _, letter),), ((_, match),) = result.produce, result.matches
    assert result.size() == len(letter) + len(match)
    assert len(letter) > 5000  # a dead letter carries its event's bytes


def test_screened_events_are_tallied_together_and_produce_nothing(
    batches: BatchProcessor,
) -> None:
    benign = [message(script_block("ws01", EVENT_TIME + i, BENIGN, i), i) for i in range(5)]
    result = batches.process(benign)
    assert result.produce == result.matches == []
    assert result.tally[(metrics.events_consumed_total, (POWERSHELL, "4104"))] == 5
    assert result.tally[(metrics.events_dropped_total, ("powershell",))] == 5


def test_a_screened_last_record_is_kept_for_the_tick_and_a_parsed_one_is_not(
    batches: BatchProcessor, reporter: TickReporter
) -> None:
    benign = script_block("ws01", EVENT_TIME, BENIGN, 1)
    batches.process([message(benign, 1)])
    assert reporter.tails == {(POWERSHELL, 2): (benign, CLOCK)}
    batches.process([message(script_block("ws01", EVENT_TIME, WMIEXEC, 2), 2)])
    assert reporter.tails == {(POWERSHELL, 2): None}
    assert reporter.watermark.newest((POWERSHELL, 2)) == EVENT_TIME


def test_a_suppressed_match_is_not_produced(
    batches: BatchProcessor, suppressions: Suppressions
) -> None:
    entry = (
        b'{"rule_id": "%s", "field": "dest", "value": "ws01", "reason": "lab host",'
        b' "author": "soc"}' % WMIEXEC_RULE.encode()
    )
    suppressions.apply("lab", entry)
    result = batches.process([message(script_block("ws01", EVENT_TIME, WMIEXEC, 7), 1)])
    assert result.matches == []
    assert result.tally[(metrics.rule_matches_total, (WMIEXEC_RULE,))] == 1  # matched, then dropped


@pytest.mark.parametrize(("expires_after_event", "suppressed"), [(30, False), (90, True)])
def test_suppressions_expire_by_the_clock_not_the_event_time(
    batches: BatchProcessor, suppressions: Suppressions, expires_after_event: int, suppressed: bool
) -> None:
    """The event is 60 s older than the clock; an entry expiring in between no longer applies."""
    expiry = datetime.fromtimestamp(EVENT_TIME + expires_after_event, UTC).isoformat()
    entry = orjson.dumps(
        {
            "rule_id": WMIEXEC_RULE,
            "field": "dest",
            "value": "ws01",
            "reason": "change window",
            "author": "soc",
            "expires_at": expiry,
        }
    )
    suppressions.apply("window", entry)
    result = batches.process([message(script_block("ws01", EVENT_TIME, WMIEXEC, 7), 1)])
    assert len(result.matches) == (0 if suppressed else 1)


def test_the_tally_reaches_the_metrics_once_counted(batches: BatchProcessor) -> None:
    sample = metrics.events_consumed_total.labels(POWERSHELL, "4104")
    before = sample._value.get()
    batches.process([message(script_block("ws01", EVENT_TIME, BENIGN, 1), 1)]).count()
    assert sample._value.get() == before + 1


def matches_of(batches: BatchProcessor, hosts: int) -> list[tuple[str, bytes]]:
    events = [script_block(f"ws{n % hosts:02d}", EVENT_TIME + n, WMIEXEC, n) for n in range(40)]
    return batches.process([message(event, n) for n, event in enumerate(events)]).matches


def unbatched(records: list[tuple[int, bytes]]) -> dict[int, list[bytes]]:
    """Return each partition's matches, in the order its records hold them."""
    found: dict[int, list[bytes]] = {}
    for partition, value in records:
        batch = AGGREGATION_INPUT.decode(value)
        assert isinstance(batch, MatchBatch)
        found.setdefault(partition, []).extend(bytes(match) for match in batch.matches)
    return found


def test_matches_go_in_one_record_per_partition_of_their_dest_in_their_order(
    batches: BatchProcessor,
) -> None:
    matches = matches_of(batches, hosts=7)
    records = list(match_batches(matches, 6))
    assert sorted(partition for partition, _ in records) == sorted(set(dict(records)))
    expected: dict[int, list[bytes]] = {}
    for dest, match in matches:
        expected.setdefault(key_partition(dest, 6), []).append(match)
    assert unbatched(records) == expected
    assert len(expected) > 1
