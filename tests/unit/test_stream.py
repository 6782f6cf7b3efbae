"""The worker's decisions without Faust: matches and ticks in, findings and risk out."""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace
from prometheus_client import REGISTRY

from pipeline import aggregate as aggregate_module
from pipeline import stream as stream_module
from pipeline.ocsf import RENDERERS
from pipeline.partitions import key_partition
from pipeline.policy import RiskPolicy, WindowPolicy
from pipeline.records import (
    DEST_STATE,
    FINDING,
    INCIDENT,
    INPUT_POSITION,
    MATCH,
    MATCH_BATCH,
    RISK_BATCH,
    RISK_EVENT,
    TICK,
    Codec,
    DestState,
    GroupState,
    InputPosition,
    Match,
    MatchBatch,
    Origin,
    RiskBatch,
    SourceReport,
    Tick,
)
from pipeline.rules.loader import load_rules
from pipeline.state import PartitionedTable
from pipeline.stream import (
    Aggregation,
    EncodedTable,
    Outgoing,
    Output,
    Scoring,
    Step,
    count_published,
)
from pipeline.watermark import MergedWatermark
from tests.synthetic import WMIC_NODE_RULE
from tests.synthetic_hostile import AFTER_STATS, SLOW_VALUE, after_stats_match, with_slow_rules

HOUR = 3600
POLICY = WindowPolicy(window_seconds=HOUR, allowed_lateness_seconds=300, update_interval_seconds=60)
RAW = ("windows.sysmon", 0)
OFFSETS = itertools.count()
NOW = 100_000.0  # the wall clock: ticks may not report event times much past it


@pytest.fixture
def table() -> dict[str, DestState]:
    return {}


@pytest.fixture
def aggregation(rules: dict[str, Any], table: dict[str, DestState]) -> Aggregation:
    return Aggregation(
        rules, table, POLICY, RENDERERS["native"], lambda: MergedWatermark(30, 300), 6
    )


def match(time: float, dest: str = "h1", ingested_at: float = 5.0) -> bytes:
    group = {
        "Processes.dest": dest,
        "Processes.user": "CORP\\bob",
        "Processes.process": "wmic /node:x",
    }
    origin = Origin(RAW[0], RAW[1], next(OFFSETS))
    return MATCH.encode(Match(WMIC_NODE_RULE, dest, time, group, {}, origin, False, ingested_at))


def tick(sent_at: float, newest: float) -> bytes:
    """Return a tick from the one intake of a one-partition raw universe, caught up."""
    return TICK.encode(Tick(sent_at, 1, (SourceReport(RAW[0], RAW[1], newest, False),)))


def test_a_first_match_publishes_a_new_finding_and_its_risk_events(
    aggregation: Aggregation, table: dict[str, DestState]
) -> None:
    step = aggregation.handle(match(7300.0), partition=0, now=NOW)
    (
        finding,
        *risk,
    ) = (o for o in step.outgoing if o.output is not Output.RISK_BATCHES)
    assert (finding.output, finding.key, finding.kind) == (Output.FINDINGS, "h1", "new")
    assert FINDING.decode(finding.value).count == 1
    assert [(r.output, r.key) for r in risk] == [(Output.RISK, "h1"), (Output.RISK, "CORP\\bob")]
    assert RISK_EVENT.decode(risk[0].value).finding_id == FINDING.decode(finding.value).finding_id
    assert [r.ingested_at for r in (finding, *risk)] == [5.0, None, None]
    assert table == {}  # nothing is kept until the records are acknowledged
    aggregation.commit(step, now=11.0)
    assert list(table) == ["h1"]


def test_a_redelivered_match_publishes_nothing(aggregation: Aggregation) -> None:
    payload = match(7300.0)
    aggregation.commit(aggregation.handle(payload, 0, now=NOW), NOW)
    again = aggregation.handle(payload, 0, now=NOW)
    assert again.outgoing == []


def scheduled(aggregation: Aggregation) -> dict[int, set[str]]:
    """Return the dests each partition's schedule holds."""
    assert aggregation.wakeups is not None
    return {
        partition: set(wakeups.scheduled[0]) | set(wakeups.scheduled[1])
        for partition, wakeups in aggregation.wakeups.items()
    }


def test_a_tick_closes_only_its_own_partition_s_windows(aggregation: Aggregation) -> None:
    aggregation.commit(aggregation.handle(match(7300.0, dest="h1"), 0, now=NOW), NOW)
    aggregation.commit(aggregation.handle(match(7300.0, dest="h2"), 1, now=NOW), NOW)
    closes = 7200 + HOUR + 300
    step = aggregation.handle(tick(11.0, closes), partition=0, now=NOW)
    assert [(o.key, o.kind) for o in step.outgoing] == [("h1", "final")]
    aggregation.commit(step, 12.0)
    assert scheduled(aggregation) == {0: {"h1"}, 1: {"h2"}}
    step = aggregation.handle(tick(13.0, closes), partition=1, now=NOW)
    assert [(o.key, o.kind) for o in step.outgoing] == [("h2", "final")]


def test_a_match_leaves_its_dest_scheduled_as_the_wake_of_all_its_groups(
    aggregation: Aggregation, table: dict[str, DestState]
) -> None:
    """A match schedules only its own group's wake; with what was scheduled before, the dest's
    schedule is the earliest wake of all its groups (a visit is never late)."""
    for time in (7300.0, 3700.0, 7310.0, 11000.0):  # three windows; the third: a group again
        aggregation.commit(aggregation.handle(match(time), 0, now=NOW), NOW)
        assert aggregation.wakeups is not None
        schedule = aggregation.wakeups[0].scheduled
        assert (schedule[0].get("h1"), schedule[1].get("h1")) == aggregation.windows.wake(
            table["h1"]
        )
    assert len(table["h1"]) == 3


def test_the_watermark_is_kept_per_matches_partition(aggregation: Aggregation) -> None:
    aggregation.handle(tick(1.0, 9000.0), partition=0, now=NOW)
    assert aggregation.watermarks[0].value == 9000.0
    aggregation.handle(match(100.0), partition=1, now=NOW)
    assert aggregation.watermarks[1].value == -math.inf  # partition 1 has had no tick


def test_expired_groups_leave_the_index(
    aggregation: Aggregation, table: dict[str, DestState]
) -> None:
    aggregation.commit(aggregation.handle(match(7300.0), 0, now=NOW), NOW)
    aggregation.commit(aggregation.handle(tick(11.0, 10 * HOUR), 0, now=NOW), NOW)
    assert table == {} and scheduled(aggregation) == {0: set()}


def test_after_a_rebalance_the_index_is_rebuilt_from_the_table(
    rules: dict[str, Any], aggregation: Aggregation, table: dict[str, DestState]
) -> None:
    aggregation.commit(aggregation.handle(match(7300.0, dest="h1"), 0, now=NOW), NOW)
    aggregation.commit(aggregation.handle(match(7300.0, dest="h2"), 1, now=NOW), NOW)
    restarted = Aggregation(
        rules, table, POLICY, RENDERERS["native"], lambda: MergedWatermark(30, 300), 6
    )
    step = restarted.handle(tick(11.0, 7200 + HOUR + 300), partition=1, now=NOW)
    assert [(o.key, o.kind) for o in step.outgoing] == [("h2", "final")]
    restarted.forget_index()
    assert restarted.wakeups is None
    restarted.handle(tick(13.0, 0.0), partition=0, now=NOW)
    assert scheduled(restarted) == {0: {"h1"}, 1: {"h2"}}


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"type": "verdict"}',
        b'{"type": "match", "rule_id": "r"}',
        b'{"type": "tick", "sent_at": 1, "source_count": -1, "sources": []}',
        b'{"type": "matches", "matches": {}}',
    ],
)
def test_a_malformed_record_raises_and_stages_nothing(
    aggregation: Aggregation, table: dict[str, DestState], payload: bytes
) -> None:
    with pytest.raises(msgspec.DecodeError):
        aggregation.handle(payload, 0, now=NOW)
    aggregation.discard()
    assert aggregation.staged.pending == {} and table == {}


def test_a_match_of_an_unknown_rule_raises(aggregation: Aggregation) -> None:
    payload = MATCH.encode(Match("no-such-rule", "h1", 1.0, {}, {}, None, False, 1.0))
    with pytest.raises(KeyError, match="no-such-rule"):
        aggregation.handle(payload, 0, now=NOW)


def batch(*matches: bytes) -> bytes:
    return MATCH_BATCH.encode(MatchBatch(tuple(msgspec.Raw(m) for m in matches)))


def unbatched(outgoing: list[Outgoing]) -> list[Outgoing]:
    """Return ``outgoing`` but its risk batches (they repeat its risk events)."""
    return [o for o in outgoing if o.output is not Output.RISK_BATCHES]


def test_a_batch_of_matches_publishes_what_its_matches_would_one_by_one(
    rules: dict[str, Any],
) -> None:
    matches = [match(7300.0, "h1", 5.0), match(7301.0, "h1", 6.0), match(7302.0, "h2", 7.0)]
    batched, single = (
        Aggregation(rules, {}, POLICY, RENDERERS["native"], lambda: MergedWatermark(30, 300), 6)
        for _ in range(2)
    )
    step = batched.handle(batch(*matches), 0, now=NOW)
    one_by_one = [o for m in matches for o in single.handle(m, 0, now=NOW).outgoing]
    assert unbatched(step.outgoing) == unbatched(one_by_one)
    assert [(o.key, o.ingested_at) for o in step.outgoing if o.output is Output.FINDINGS] == [
        ("h1", 5.0),
        ("h2", 7.0),
    ]
    assert step.rejected == []


def test_a_batch_s_match_that_cannot_be_counted_is_rejected_alone(
    aggregation: Aggregation, table: dict[str, DestState]
) -> None:
    unknown = MATCH.encode(Match("no-such-rule", "h9", 1.0, {}, {}, None, False, 1.0))
    mistyped = b'{"type": "match", "rule_id": 7}'
    step = aggregation.handle(
        batch(match(7300.0, "h1"), unknown, mistyped, match(7300.0, "h2")), 0, NOW
    )
    assert [o.key for o in step.outgoing if o.output is Output.FINDINGS] == ["h1", "h2"]
    assert [r.payload for r in step.rejected] == [unknown, mistyped]
    assert "no-such-rule" in step.rejected[0].error
    aggregation.commit(step, NOW)
    assert sorted(table) == ["h1", "h2"]


def test_a_batch_s_match_its_dest_has_no_room_for_is_rejected_as_dest_full(
    aggregation: Aggregation, table: dict[str, DestState], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aggregate_module, "DEST_STATE_BYTES", 1)
    step = aggregation.handle(batch(match(7300.0, "h1")), 0, NOW)
    assert step.outgoing == [] and [r.reason for r in step.rejected] == ["dest_full"]
    assert step.rejected[0].error == "dest 'h1' has its groups at their bound, 1 bytes"
    aggregation.commit(step, NOW)
    assert table == {}


def test_a_group_its_post_stats_cannot_decide_in_time_is_dead_lettered(tmp_path: Path) -> None:
    """The match is counted (the group is kept, to be tried again); the group goes to the
    dead-letter topic as regex_timeout, with its state to read; a discard forgets it."""
    rules = {rule.id: rule for rule in load_rules(with_slow_rules(tmp_path / "rules"))}
    aggregation = Aggregation(
        rules, {}, POLICY, RENDERERS["native"], lambda: MergedWatermark(30, 300), 6
    )
    slow = after_stats_match(rules, "h1")
    step = aggregation.handle(batch(MATCH.encode(slow)), 0, NOW)
    ((payload, error, reason),) = step.rejected
    assert reason == "regex_timeout" and error.startswith(f"rule {AFTER_STATS}: replace(): ")
    group = msgspec.json.decode(payload, type=GroupState)
    assert (group.rule_id, group.dest, group.values["parents"]) == (
        AFTER_STATS,
        "h1",
        (SLOW_VALUE,),
    )
    assert step.outgoing == []
    aggregation.commit(step, NOW)
    assert list(aggregation.staged) == ["h1"]
    # Handled in part (as when a later step raises): what it left undecided is discarded too.
    aggregation.windows.add(replace(slow, origin=Origin("t", 0, 9)), -math.inf, NOW)
    aggregation.discard()
    assert aggregation.handle(tick(NOW, 0.0), 0, NOW).rejected == []


def test_findings_render_in_the_configured_format(rules: dict[str, Any]) -> None:
    ocsf = Aggregation(rules, {}, POLICY, RENDERERS["ocsf"], lambda: MergedWatermark(30, 300), 6)
    finding = ocsf.handle(match(7300.0), 0, now=NOW).outgoing[0]
    assert msgspec.json.decode(finding.value)["class_uid"] == 2004


def test_the_encoded_table_stores_compressed_bytes_and_gives_records(
    aggregation: Aggregation,
) -> None:
    raw = PartitionedTable()
    encoded = EncodedTable(raw, DEST_STATE)
    aggregation.staged.table = encoded
    aggregation.commit(aggregation.handle(match(7300.0), 0, now=NOW), NOW)
    raw.write_held()
    assert len(raw["h1"]) < len(DEST_STATE.encode(encoded["h1"])) * 0.8  # compressed
    # in the zlib format, which a worker of an earlier version reads with zlib itself
    assert DEST_STATE.decode(zlib.decompress(raw["h1"])) == encoded["h1"]
    raw["plain"] = DEST_STATE.encode(encoded["h1"])  # as written before compression
    assert encoded["plain"] == encoded["h1"]
    del encoded["plain"]
    (group,) = encoded["h1"].values()
    assert (group.rule_id, group.count, group.partition) == (WMIC_NODE_RULE, 1, 0)
    del encoded["h1"]
    assert dict(raw) == {} and len(encoded) == 0


def test_the_encoded_table_encodes_a_key_once_per_commit_in_its_partition() -> None:
    raw = PartitionedTable()
    encoded = EncodedTable(raw, INPUT_POSITION)
    raw.partition = 4
    encoded["a"] = InputPosition(1)
    encoded["a"] = InputPosition(2)  # held: read back as written, not yet in the table
    raw.partition = 5
    encoded["b"] = InputPosition(3)
    assert encoded["a"] == InputPosition(2) and dict(raw) == {} and sorted(encoded) == ["a", "b"]
    raw.write_held()
    assert raw.partition == 5 and not encoded.held
    assert list(raw.take_changes(4)) == ["a"] and list(raw.take_changes(5)) == ["b"]
    assert encoded["a"] == InputPosition(2) and len(encoded) == 2


def test_the_encoded_table_counts_keys_held_and_stored_once_each() -> None:
    raw = PartitionedTable()
    encoded = EncodedTable(raw, INPUT_POSITION)
    raw.partition = 1
    encoded["a"] = InputPosition(1)
    raw.write_held()
    encoded["a"] = InputPosition(2)  # stored and held: one key
    encoded["b"] = InputPosition(3)
    raw.partition = 2
    encoded["c"] = InputPosition(4)
    assert len(encoded) == 3
    del encoded["b"]
    assert len(encoded) == 2
    raw.drop(2)  # a partition revoked: its held key goes
    assert len(encoded) == 1 == len(list(encoded))
    raw.write_held()
    del encoded["a"]
    assert len(encoded) == 0


class CountingCodec(Codec[DestState]):
    """The table's codec, counting its decodes."""

    def __init__(self) -> None:
        super().__init__(DestState)
        self.decodes = 0

    def decode(self, payload: bytes) -> DestState:
        self.decodes += 1
        return super().decode(payload)


def test_the_encoded_table_keeps_a_value_decoded_while_it_holds_its_bytes() -> None:
    """A large value from its write, a small one once read back; not one written only."""
    raw, codec = PartitionedTable(), CountingCodec()
    encoded = EncodedTable(raw, codec)
    big = {
        f"f{n}": GroupState(f"f{n}", WMIC_NODE_RULE, "h1", 0, {"p": "x" * 1000}, 0)
        for n in range(80)
    }
    small = {"f": GroupState("f", WMIC_NODE_RULE, "h2", 0, {}, 0)}
    encoded["h1"], encoded["h2"], encoded["h3"] = big, small, small
    raw.write_held()
    assert sorted(encoded.decoded) == ["h1"]  # a flood of new dests is not kept decoded
    assert [encoded["h1"] for _ in range(3)] == [big] * 3 and codec.decodes == 0  # as written
    assert [encoded["h2"] for _ in range(3)] == [small] * 3 and codec.decodes == 1  # read back
    encoded["h2"] = {**small, "g": GroupState("g", WMIC_NODE_RULE, "h2", 0, {}, 0)}
    raw.write_held()
    assert len(encoded["h2"]) == 2 and codec.decodes == 1  # busy: kept decoded as written
    del encoded["h2"]
    assert "h2" not in encoded.decoded
    raw.load(0, {"h1": zlib.compress(DEST_STATE.encode(small), 1)})  # other bytes: decoded anew
    assert encoded["h1"] == small and codec.decodes == 2
    raw.load(0, {"h1": zlib.compress(DEST_STATE.encode(big), 1)})
    assert [encoded["h1"] for _ in range(3)] == [big] * 3 and codec.decodes == 3


def test_the_encoded_table_keeps_decoded_values_within_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_module, "DECODED_BUDGET", 3 * stream_module.DECODED_FROM)
    raw = PartitionedTable()
    encoded = EncodedTable(raw, DEST_STATE)
    for n in range(5):
        encoded[f"h{n}"] = {"f": GroupState("f", WMIC_NODE_RULE, "h", 0, {"p": "x" * 70_000}, 0)}
    raw.write_held()
    assert sorted(encoded.decoded) == ["h3", "h4"]  # the newest that fit
    assert encoded.decoded_bytes <= stream_module.DECODED_BUDGET


def test_dropping_a_partition_drops_what_its_records_wrote_and_is_held() -> None:
    raw = PartitionedTable()
    encoded = EncodedTable(raw, INPUT_POSITION)
    for partition in (1, 2):
        raw.partition = partition
        encoded[f"k{partition}"] = InputPosition(partition)
    raw.drop(1)
    raw.write_held()
    assert dict(encoded) == {"k2": InputPosition(2)} and raw.take_changes(1) == {}


def risk_event(rule: str, score: int, at: str) -> bytes:
    return (
        b'{"_time":%f,"search_name":"rule %s","risk_object":"h1","risk_object_type":"system",'
        b'"risk_score":%d,"risk_message":"m","threat_object":[],"threat_object_type":[],'
        b'"annotations":{"mitre_attack":{"mitre_technique_id":[],"mitre_tactic":[],'
        b'"mitre_tactic_id":[]},"analytic_story":[]},"finding_id":"f-%s","rule_id":"%s"}'
        % (
            datetime.fromisoformat(at).timestamp(),
            rule.encode(),
            score,
            rule.encode(),
            rule.encode(),
        )
    )


def risk_batch(*risk_events: bytes) -> bytes:
    return RISK_BATCH.encode(RiskBatch(tuple(msgspec.Raw(r) for r in risk_events)))


def test_a_new_finding_s_risk_events_go_again_in_one_batch_per_risk_partition(
    aggregation: Aggregation,
) -> None:
    step = aggregation.handle(batch(match(7300.0, "h1"), match(7300.0, "h2")), 0, now=NOW)
    risk = [o for o in step.outgoing if o.output is Output.RISK]
    batches = [o for o in step.outgoing if o.output is Output.RISK_BATCHES]
    assert len(risk) == 4  # two each: the dest, the user
    carried = {
        o.partition: [bytes(r) for r in RISK_BATCH.decode(o.value).risk_events] for o in batches
    }
    expected: dict[int, list[bytes]] = {}
    for o in risk:
        expected.setdefault(key_partition(o.key, 6), []).append(o.value)
    assert carried == expected
    assert {(o.key, o.kind) for o in batches} == {("", "")}
    assert step.outgoing[-len(batches) :] == batches  # after what they repeat


def test_scoring_reads_the_event_time_and_raises_incidents() -> None:
    scoring = Scoring({}, RiskPolicy(score_threshold=100))
    assert (
        scoring.handle(risk_batch(risk_event("a", 60, "2026-11-01T10:00:00.000Z"))).outgoing == []
    )
    (incident,) = scoring.handle(
        risk_batch(risk_event("b", 60, "2026-11-01T11:00:00.000Z"))
    ).outgoing
    assert (incident.output, incident.key, incident.kind) == (
        Output.INCIDENTS,
        "h1",
        "risk_threshold",
    )
    decoded = INCIDENT.decode(incident.value)
    assert (decoded.score, decoded.time) == (120, "2026-11-01T11:00:00.000Z")
    far = scoring.handle(risk_batch(risk_event("c", 60, "2026-11-03T11:00:00.000Z")))
    assert far.outgoing == []  # a and b aged out of the day: 60, under the threshold


def test_scoring_rejects_alone_a_risk_event_missing_a_field() -> None:
    scoring = Scoring({}, RiskPolicy(score_threshold=100))
    broken = b'{"risk_object": "h1"}'
    step = scoring.handle(
        risk_batch(
            risk_event("a", 60, "2026-11-01T10:00:00.000Z"),
            broken,
            risk_event("b", 60, "2026-11-01T11:00:00.000Z"),
        )
    )
    assert [o.kind for o in step.outgoing] == ["risk_threshold"]  # a and b both scored
    assert [r.payload for r in step.rejected] == [broken]


@pytest.mark.parametrize("payload", [b'{"risk_object": "h1"}', b'{"risk_events": {}}'])
def test_scoring_refuses_a_record_that_is_not_a_batch(payload: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        Scoring({}, RiskPolicy()).handle(payload)


class VanishingKeys(dict[str, DestState]):
    """A table that lists a key it no longer holds, as a Faust table may while it recovers."""

    def __iter__(self) -> Iterator[str]:
        yield from [*super().__iter__(), "gone.example"]


def test_rebuilding_the_index_skips_keys_that_vanish_while_listed(rules: dict[str, Any]) -> None:
    table = VanishingKeys()
    aggregation = Aggregation(
        rules, table, POLICY, RENDERERS["native"], lambda: MergedWatermark(30, 300), 6
    )
    aggregation.commit(aggregation.handle(match(7300.0), 0, now=NOW), NOW)
    aggregation.forget_index()
    aggregation.handle(tick(1.0, 0.0), partition=0, now=NOW)
    assert scheduled(aggregation) == {0: {"h1"}}


def test_published_records_are_counted_per_series() -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample("wmiwatch_findings_emitted_total", rule="r-count", status="new"),
        sample("wmiwatch_risk_events_emitted_total", rule="r-count"),
        sample("wmiwatch_risk_incidents_emitted_total", kind="risk_threshold"),
    )
    step = Step(
        [
            Outgoing(Output.FINDINGS, "h", b"", "r-count", "new", 1.0),
            Outgoing(Output.RISK, "h", b"", "r-count", "risk"),
            Outgoing(Output.FINDINGS, "h", b"", "r-count", "new", 1.0),
            Outgoing(Output.RISK, "h", b"", "r-count", "risk"),
            Outgoing(Output.RISK_BATCHES, "", b"", "", "", partition=0),  # repeats the two
            Outgoing(Output.INCIDENTS, "h", b"", "", "risk_threshold"),
        ]
    )
    count_published(step, now=2.0)
    after = (
        sample("wmiwatch_findings_emitted_total", rule="r-count", status="new"),
        sample("wmiwatch_risk_events_emitted_total", rule="r-count"),
        sample("wmiwatch_risk_incidents_emitted_total", kind="risk_threshold"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2.0, 2.0, 1.0]


def test_matches_are_counted_when_their_record_is_committed(aggregation: Aggregation) -> None:
    def aggregated() -> float:
        return (
            REGISTRY.get_sample_value("wmiwatch_matches_aggregated_total", {"rule": WMIC_NODE_RULE})
            or 0.0
        )

    before = aggregated()
    aggregation.handle(match(7300.0), partition=0, now=NOW)
    aggregation.discard()  # its record could not be handled: not counted
    step = aggregation.handle(match(7301.0), partition=0, now=NOW)
    assert aggregated() == before
    aggregation.commit(step, NOW)
    assert aggregated() == before + 1
