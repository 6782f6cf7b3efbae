"""The intake's producer settings per processing guarantee."""

from __future__ import annotations

from pipeline.delivery import producer_config
from pipeline.kafka import TRANSACTION_TIMEOUT_MS
from pipeline.settings import Settings


def test_a_static_worker_keeps_its_transactional_id_across_restarts() -> None:
    settings = Settings(group_id="soc", instance_id="wmiwatch-2")
    assert (
        producer_config(settings)
        == producer_config(settings)
        == {
            "transactional.id": "soc-intake-wmiwatch-2",
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }
    )


def test_dynamic_workers_never_share_a_transactional_id() -> None:
    settings = Settings(group_id="soc")
    first, second = producer_config(settings), producer_config(settings)
    assert first["transactional.id"] != second["transactional.id"]
    assert str(first["transactional.id"]).startswith("soc-intake-")


def test_at_least_once_needs_no_transactions() -> None:
    assert producer_config(Settings(processing_guarantee="at_least_once")) == {}
