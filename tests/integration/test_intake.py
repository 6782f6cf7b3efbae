"""The intake process: stuck in a Kafka call, it writes where when told (the worker tells it
before killing a stalled intake)."""

from __future__ import annotations

import logging
import multiprocessing
import time
from pathlib import Path

import pytest

from pipeline.agents import send_signal
from pipeline.broker import free_port
from pipeline.health import IntakeStatus
from pipeline.intake import STACKS_SIGNAL, run_intake_process
from pipeline.settings import Settings

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
