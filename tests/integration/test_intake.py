"""The intake process: stuck in a Kafka call, it writes where when told (the worker tells it
before killing a stalled intake); batches read while a transaction commits go out together in
the next one, and are read again when that one aborts."""

from __future__ import annotations

import base64
import logging
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pipeline.agents import send_signal
from pipeline.broker import free_port
from pipeline.engine import Detector
from pipeline.health import IntakeStatus
from pipeline.intake import STACKS_SIGNAL, Intake, run_intake_process
from pipeline.kafka import producer
from pipeline.partitions import key_partition
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.topics import Topics
from tests.conftest import incompressible, read_topic, set_topic_config
from tests.synthetic import WMIEXEC, WMIEXEC_RULE, script_block

pytestmark = pytest.mark.integration


def test_an_intake_stuck_in_a_kafka_call_writes_its_stack_when_told(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    unreachable = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", data_dir=tmp_path)
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    intake = spawn.Process(
        target=run_intake_process, args=(unreachable, IntakeStatus(), stop, logging.WARNING)
    )
    intake.start()
    written = ""
    deadline = time.monotonic() + 60
    while "Connection refused" not in written:  # its clients exist: its signal handler too
        assert time.monotonic() < deadline and intake.is_alive(), written[-2000:]
        time.sleep(0.2)
        written += capfd.readouterr().err
    time.sleep(1)
    send_signal(intake, STACKS_SIGNAL)
    time.sleep(1)
    written += capfd.readouterr().err
    stop.set()
    intake.kill()
    intake.join(10)
    assert "most recent call first" in written
    assert "in _initialised" in written  # init_transactions: no broker answers
    assert "in run_intake_process" in written


KAFKA_MAX_MESSAGE_BYTES = 1_048_588  # the broker's default ``max.message.bytes``


def refuse_larger_than(settings: Settings, topic: str, size: int) -> None:
    """Have the broker refuse records of ``topic`` larger than ``size`` bytes."""
    set_topic_config(settings, topic, "max.message.bytes", str(size))


def aborted() -> float:
    return (
        REGISTRY.get_sample_value("wmiwatch_transactions_aborted_total", {"stage": "intake"}) or 0
    )


def test_a_batch_read_while_the_one_before_commits_is_read_again_when_that_one_aborts(
    settings: Settings, topics: Topics
) -> None:
    refuse_larger_than(settings, topics.dead_letter, 2048)  # a 4 KiB record's dead letter
    raw, before = topics.name("windows.powershell"), aborted()
    client = producer(settings)
    client.produce(raw, incompressible(4096))  # not an event; its dead letter refused: aborted
    client.flush(10)
    detector = Detector(load_rules(settings.rules_dir))
    intake, stop = Intake(settings, topics, detector, IntakeStatus()), threading.Event()
    running = threading.Thread(target=intake.run, args=(stop,))
    running.start()
    try:
        deadline = time.monotonic() + 60
        while aborted() < before + 2:  # read again and aborted again: it is in a loop
            assert time.monotonic() < deadline and running.is_alive()
            time.sleep(0.05)
        client.produce(raw, script_block("ws1", time.time(), WMIEXEC, 1))  # read meanwhile
        client.flush(10)
        time.sleep(2)
        refuse_larger_than(settings, topics.dead_letter, KAFKA_MAX_MESSAGE_BYTES)
        letters = read_topic(settings, topics.dead_letter, expected=1)
        matches = read_topic(settings, topics.matches, 1, counting=lambda r: r["type"] == "matches")
    finally:
        stop.set()
        running.join(60)
    assert [letter["reason"] for letter in letters] == ["not_xml"]
    rules = [m["rule_id"] for r in matches if r["type"] == "matches" for m in r["matches"]]
    assert rules == [WMIEXEC_RULE]
    assert aborted() >= before + 2


def transaction_batches() -> tuple[float, float]:
    """Return the intake's commits so far and the batches they carried."""
    name = "wmiwatch_intake_transaction_batches"
    return (
        REGISTRY.get_sample_value(f"{name}_count") or 0,
        REGISTRY.get_sample_value(f"{name}_sum") or 0,
    )


def test_batches_read_while_a_transaction_commits_go_out_together_in_the_next(
    settings: Settings, topics: Topics
) -> None:
    """Batches of 20 are processed in a fraction of a commit's time: the intake reads on and
    sends them in one transaction, each match once."""
    raw, count = topics.name("windows.powershell"), 400
    client = producer(settings)
    for number in range(count):
        client.produce(raw, script_block(f"ws{number:03d}", time.time(), WMIEXEC, number))
    assert client.flush(30) == 0
    small = settings.model_copy(update={"intake_batch_size": 20})
    detector = Detector(load_rules(settings.rules_dir))
    commits, batches = transaction_batches()
    labels = {"topic": raw, "event_code": "4104"}

    def consumed() -> float:  # counted once committed
        return REGISTRY.get_sample_value("wmiwatch_events_consumed_total", labels) or 0

    before = consumed()
    intake, stop = Intake(small, topics, detector, IntakeStatus()), threading.Event()
    running = threading.Thread(target=intake.run, args=(stop,))
    running.start()
    try:
        deadline = time.monotonic() + 60
        while consumed() < before + count:
            assert time.monotonic() < deadline and running.is_alive()
            time.sleep(0.1)
    finally:
        stop.set()
        running.join(60)
    records = read_topic(settings, topics.matches, 1, counting=lambda r: r["type"] == "matches")
    matches = [m for r in records if r["type"] == "matches" for m in r["matches"]]
    read = {(match["origin"]["partition"], match["origin"]["offset"]) for match in matches}
    assert len(matches) == len(read) == count
    commits_after, batches_after = transaction_batches()
    assert batches_after - batches >= count / 20
    assert commits_after - commits < batches_after - batches  # some commit carried several


def test_a_record_at_the_broker_s_size_limit_is_dead_lettered_by_its_start(
    settings: Settings, topics: Topics
) -> None:
    """Its whole bytes, base64-encoded, would make a dead letter the broker refuses: the
    batch would be aborted and read again for ever, and the partition detect nothing."""
    raw, size = topics.name("windows.powershell"), KAFKA_MAX_MESSAGE_BYTES - 4096
    client = producer(settings, **{"message.max.bytes": KAFKA_MAX_MESSAGE_BYTES})
    client.produce(raw, b"<Event>" + b"A" * (size - 7))
    client.produce(raw, script_block("ws1", time.time(), WMIEXEC, 1))
    assert client.flush(30) == 0
    detector = Detector(load_rules(settings.rules_dir))
    intake, stop = Intake(settings, topics, detector, IntakeStatus()), threading.Event()
    running = threading.Thread(target=intake.run, args=(stop,))
    running.start()
    try:
        letters = read_topic(settings, topics.dead_letter, expected=1)
        matches = read_topic(settings, topics.matches, 1, counting=lambda r: r["type"] == "matches")
    finally:
        stop.set()
        running.join(60)
    (letter,) = letters
    assert letter["payload_bytes"] == size
    assert base64.b64decode(letter["payload_base64"]) == b"<Event>" + b"A" * (65_536 - 7)
    rules = [m["rule_id"] for r in matches if r["type"] == "matches" for m in r["matches"]]
    assert rules == [WMIEXEC_RULE]


def test_a_dest_s_matches_go_to_the_partition_a_record_keyed_by_it_goes_to(
    settings: Settings, topics: Topics
) -> None:
    """Batches go where librdkafka's default partitioner sent a match keyed by its dest, so an
    upgrade from intakes that sent them one by one keeps each dest's groups where they are."""
    client, went = producer(settings), {}
    dests = [f"host{n:03d}.corp.example" for n in range(60)]
    for dest in dests:
        client.produce(
            topics.matches,
            b"{}",
            key=dest.encode(),
            on_delivery=lambda error, message: went.update({message.key(): message.partition()}),
        )
    assert client.flush(30) == 0
    partitions = len(
        client.list_topics(topics.matches, timeout=30).topics[topics.matches].partitions
    )
    assert partitions == 6
    assert went == {dest.encode(): key_partition(dest, partitions) for dest in dests}
    assert len(set(went.values())) == partitions
