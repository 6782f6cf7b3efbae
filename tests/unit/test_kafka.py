"""Retrying a Kafka call: again while the error says it may be, never otherwise."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.kafka import retrying


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns the call count."""

    def __init__(self, failures: int, error: KafkaError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self, timeout: float) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(self.error)
        return self.calls


TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "coordinator moving", retriable=True)
FENCED = KafkaError(KafkaError._FENCED, "a newer instance", fatal=True)


def test_a_retriable_failure_is_called_again_until_it_succeeds() -> None:
    flaky = Flaky(3, TIMED_OUT)
    assert retrying(flaky, 30.0, attempts=5) == 4


def test_retries_stop_after_the_attempts_and_the_last_error_is_raised() -> None:
    flaky = Flaky(9, TIMED_OUT)
    with pytest.raises(KafkaException) as raised:
        retrying(flaky, 30.0, attempts=5)
    assert flaky.calls == 5
    assert raised.value.args[0].code() == KafkaError._TIMED_OUT


def test_an_error_that_is_not_retriable_is_raised_at_once() -> None:
    flaky = Flaky(1, FENCED)
    with pytest.raises(KafkaException):
        retrying(flaky, 30.0)
    assert flaky.calls == 1


def test_the_caller_hears_before_each_new_attempt() -> None:
    """The intake beats its heartbeat there: waiting on a broker failing over is not a stall."""
    flaky, heard = Flaky(2, TIMED_OUT), []
    assert retrying(flaky, 30.0, attempts=5, between=lambda: heard.append(flaky.calls)) == 3
    assert heard == [1, 2]
