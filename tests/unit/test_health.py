"""Probe logic: liveness needs a turning intake loop; readiness also broker, group, recovery."""

from __future__ import annotations

import multiprocessing

from pipeline import health as health_module
from pipeline.health import Health, IntakeStatus


def test_ready_only_when_joined_recovered_and_broker_reachable() -> None:
    health = Health()
    assert health.problems(ready=False) == []
    assert health.problems(ready=True) == [
        "intake has not joined its consumer group",
        "the Faust consumer has not been assigned its partitions",
    ]
    health.intakes[0].joined, health.recovered = True, lambda: True
    assert health.problems(ready=True) == []
    health.intakes[0].broker_error = "1/1 brokers are down"
    assert health.problems(ready=True) == ["broker: 1/1 brokers are down"]


def test_a_stalled_intake_loop_fails_liveness() -> None:
    health = Health()
    health.intakes[0].heartbeat -= health_module.STALL_SECONDS + 1
    assert health.problems(ready=False) == ["intake loop stalled for over 60s"]


def test_intake_status_is_shared_with_a_child_process() -> None:
    status = IntakeStatus()
    child = multiprocessing.get_context("spawn").Process(target=_report_broker_down, args=(status,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert status.joined
    assert status.broker_error == "1/1 brokers are down"
    status.broker_error = None
    assert status.broker_error is None


def _report_broker_down(status: IntakeStatus) -> None:
    status.joined, status.broker_error = True, "1/1 brokers are down"


def recovered_health() -> Health:
    health = Health()
    health.intakes[0].joined, health.recovered = True, lambda: True
    return health


def test_matches_not_aggregated_while_they_arrive_fail_liveness() -> None:
    health = recovered_health()
    health.agents.assigned(True)
    assert health.problems(ready=False) == []
    health.agents.progress -= health_module.STALL_SECONDS + 1
    stalled = ["matches arrive but none was aggregated for over 60s"]
    assert health.problems(ready=False) == stalled
    assert health.problems(ready=True) == stalled
    health.agents.handled()
    assert health.problems(ready=True) == []


def test_a_worker_owning_no_matches_partition_expects_nothing_to_aggregate() -> None:
    health = recovered_health()
    health.agents.progress -= health_module.STALL_SECONDS + 1
    assert health.agents.idle_seconds() == 0.0 and health.problems(ready=True) == []
    health.agents.assigned(True)  # a new assignment starts the clock again
    assert health.problems(ready=True) == []


def test_no_stall_is_reported_while_tables_recover() -> None:
    health = Health()
    health.agents.assigned(True)
    health.agents.progress -= health_module.STALL_SECONDS + 1
    assert health.problems(ready=False) == []


def test_agents_crashing_repeatedly_fail_liveness() -> None:
    health = recovered_health()
    for _ in range(health_module.CRASH_LIMIT - 1):
        health.agents.crashed()
    assert health.problems(ready=False) == []
    health.agents.crashed()
    assert health.problems(ready=False) == ["agents crashed 3 times in 300s"]
    health.agents.crashes.extend([-1e9] * 3)  # long ago: forgotten
    assert health.agents.recent_crashes() == 3


def test_every_intake_process_counts_for_the_probes() -> None:
    health = Health((IntakeStatus(), IntakeStatus()))
    health.recovered = lambda: True
    health.intakes[0].joined = True
    assert health.problems(ready=True) == ["intake has not joined its consumer group"]
    health.intakes[1].joined = True
    health.intakes[1].broker_error = "1/1 brokers are down"
    assert health.problems(ready=True) == ["broker: 1/1 brokers are down"]
    health.intakes[1].heartbeat -= health_module.STALL_SECONDS + 1
    assert health.problems(ready=False) == ["intake loop stalled for over 60s"]
