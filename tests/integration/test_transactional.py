"""A stage's commits on a real broker: records handled while a commit is in flight."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from pipeline.kafka import RangeReader, producer, transactional
from pipeline.settings import Settings
from pipeline.state import MATCHES_POSITION, PartitionedTable, replay
from pipeline.transactional import Outbound, Stage
from tests.integration.test_delivery import new_topic, read

pytestmark = pytest.mark.integration


def new_stage(settings: Settings) -> tuple[Stage, str]:
    """Return a stage owning partition 0 of a new input topic, and its new output topic."""
    source, changelog = new_topic(settings), new_topic(settings)
    name = f"test-{uuid.uuid4().hex[:6]}"
    stage = Stage(settings, name, source, changelog, MATCHES_POSITION, PartitionedTable())
    stage.assigned = {0}
    return stage, new_topic(settings)


async def handle(stage: Stage, offset: int, output: str, value: bytes) -> None:
    """Handle the record at ``offset`` of partition 0: one output and one table change."""
    assert await stage.due(0, offset, value) == [(offset, value)]
    stage.produce(0, Outbound(output, b"key", value))
    stage.table[f"k{offset}"] = value
    stage.handled(0, offset)


def committed_state(stage: Stage) -> tuple[dict[str, bytes], int | None]:
    records = RangeReader(stage.settings, stage.changelog).read_all(0)
    return replay(((m.key() or b"", m.value()) for m in records), stage.position)


def test_a_record_handled_during_a_commit_goes_out_in_the_next_one(settings: Settings) -> None:
    stage, output = new_stage(settings)

    async def run() -> None:
        await handle(stage, 0, output, b"first")
        stage.start_commit()
        await asyncio.sleep(0)  # the commit has begun: partition 0's outputs are held
        assert not stage.commit_due()
        await handle(stage, 1, output, b"second")
        assert stage.owned[0].held == [Outbound(output, b"key", b"second")]
        await stage.commit()  # waits for the first, then commits the second

    asyncio.run(run())
    assert [m.value() for m in read(settings, output, 2)] == [b"first", b"second"]
    assert committed_state(stage) == ({"k0": b"first", "k1": b"second"}, 2)
    assert stage.owned[0].held == [] and not stage.owned[0].committing


def test_a_fenced_commit_drops_the_partition_and_what_it_held(settings: Settings) -> None:
    stage, output = new_stage(settings)

    async def run() -> None:
        await handle(stage, 0, output, b"first")
        successor = producer(settings, **transactional(settings, f"{stage.name}-0"))
        successor.init_transactions(30)  # fences the stage's producer, aborting its transaction
        stage.start_commit()
        await asyncio.sleep(0)
        await handle(stage, 1, output, b"second")  # held: its commit is in flight
        await stage.commit()

    asyncio.run(run())
    assert 0 not in stage.owned and dict(stage.table) == {}  # read back at its next record
    assert read(settings, output, 1) == []
    assert committed_state(stage) == ({}, None)


def test_a_revoke_during_a_commit_waits_for_it_then_commits_what_was_held_and_lets_go(
    settings: Settings,
) -> None:
    stage, output = new_stage(settings)

    async def run() -> None:
        await handle(stage, 0, output, b"first")
        stage.start_commit()
        await asyncio.sleep(0)
        await handle(stage, 1, output, b"second")  # held: its commit is in flight
        revoking = asyncio.ensure_future(stage.revoke([0]))
        await asyncio.sleep(0)  # the revoke now waits for the commit in flight
        stage.last_commit = 0.0  # a commit is long due, as for the idle timer
        assert not stage.commit_due()
        in_flight = stage.committing
        stage.start_commit()  # what the idle timer does: nothing while one is in flight
        assert stage.committing is in_flight
        await revoking

    asyncio.run(run())
    assert stage.owned == {} and stage.assigned == set() and dict(stage.table) == {}
    assert [m.value() for m in read(settings, output, 2)] == [b"first", b"second"]
    assert committed_state(stage) == ({"k0": b"first", "k1": b"second"}, 2)
