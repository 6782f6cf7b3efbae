"""Probe logic: liveness needs a turning intake loop; readiness also broker, group, recovery."""

from __future__ import annotations

from pipeline import health as health_module
from pipeline.health import Health


def test_ready_only_when_joined_recovered_and_broker_reachable() -> None:
    health = Health()
    assert health.problems(ready=False) == []
    assert health.problems(ready=True) == [
        "intake has not joined its consumer group",
        "table recovery has not finished",
    ]
    health.joined, health.recovered = True, lambda: True
    assert health.problems(ready=True) == []
    health.broker_error = "1/1 brokers are down"
    assert health.problems(ready=True) == ["broker: 1/1 brokers are down"]


def test_a_stalled_intake_loop_fails_liveness() -> None:
    health = Health()
    health.heartbeat -= health_module.STALL_SECONDS + 1
    assert health.problems(ready=False) == ["intake loop stalled for over 60s"]
