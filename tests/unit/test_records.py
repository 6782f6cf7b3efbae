"""Every record type: one codec, the same shape as its published schema, strict on the way in.

The samples are real: the findings of the golden files (real logs), their risk events and
incidents, the matches the detection core finds in the rule fixtures, ticks, and dead letters
of the hostile suite.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from jsonschema import ValidationError

from pipeline.aggregate import Aggregator
from pipeline.batch import match_batches
from pipeline.emit import build_risk_events
from pipeline.engine import Detector
from pipeline.files import read_records
from pipeline.partitions import partitioned
from pipeline.policy import RiskPolicy, WindowPolicy
from pipeline.records import (
    AGGREGATION_INPUT,
    DEAD_LETTER,
    DEST_STATE,
    FINDING,
    INCIDENT,
    INPUT_POSITION,
    MATCH,
    MATCH_BATCH,
    OBJECT_STATE,
    RISK_BATCH,
    RISK_EVENT,
    TICK,
    Codec,
    DestState,
    InputPosition,
    MatchBatch,
    Origin,
    Record,
    RiskBatch,
    SourceReport,
    Tick,
)
from pipeline.rejects import dead_letter_record
from pipeline.risk import RiskScorer
from pipeline.rules.loader import load_rules
from tests import PROJECT_ROOT
from tests.conftest import schema_validator
from tests.synthetic_hostile import suite

GOLDEN = sorted((PROJECT_ROOT / "tests" / "golden").glob("*.jsonl"))
FIXTURES = sorted(
    path
    for folder in ("demo", "rules")
    for path in (PROJECT_ROOT / "tests" / "fixtures" / folder).iterdir()
    if path.suffix != ".md"
)
RULES = {rule.id: rule for rule in load_rules(PROJECT_ROOT / "rules")}


def findings() -> list[Any]:
    return [FINDING.decode(line) for path in GOLDEN for line in path.read_bytes().splitlines()]


def risk_events() -> list[Any]:
    return [
        r for f in findings() if f.status == "final" for r in build_risk_events(RULES[f.rule_id], f)
    ]


def risk_batches(risks: list[Any]) -> list[RiskBatch]:
    """Return ``risks`` as the aggregation sends them to the scoring: batched per partition."""
    keyed = [(risk.risk_object, RISK_EVENT.encode(risk)) for risk in risks]
    return [RiskBatch(run) for _, run in partitioned(keyed, 6, limit=4096)]


def incidents() -> list[Any]:
    scorer = RiskScorer({}, RiskPolicy(score_threshold=1, tactics_threshold=1))
    return [
        i
        for n, risk in enumerate(risk_events())
        for i in scorer.add(msgspec.structs.replace(risk, time=float(n)))
    ]


def matches() -> Iterator[Any]:
    detector = Detector(tuple(RULES.values()), clock=lambda: 1.7e9)
    for path in FIXTURES:
        for record in read_records(path):
            outcome = detector.process(record.payload, Origin(path.name, 0, record.number))
            yield from outcome.matches


def ticks() -> list[Tick]:
    reports = (SourceReport("windows.sysmon", 0, 1.7e9, False), SourceReport("t", 3, None, True))
    return [Tick(1.7e9, 4, reports), Tick(0.0, 0, ())]


def dead_letters() -> list[Any]:
    return [
        dead_letter_record("not_xml", hostile.name, "windows.sysmon", 1, n, hostile.payload)
        for n, hostile in enumerate(suite(1.7e9))
    ]


SAMPLES: dict[str, tuple[Codec[Any], Any]] = {
    "wmiwatch.findings": (FINDING, findings),
    "wmiwatch.risk": (RISK_EVENT, risk_events),
    "wmiwatch.risk-batches": (RISK_BATCH, lambda: risk_batches(risk_events())),
    "wmiwatch.risk-incidents": (INCIDENT, incidents),
    "wmiwatch.matches": (MATCH, lambda: list(matches())),
    "wmiwatch.dead-letter": (DEAD_LETTER, dead_letters),
    "wmiwatch.aggregation-state": (INPUT_POSITION, lambda: [InputPosition(0), InputPosition(9)]),
    "wmiwatch.risk-state": (INPUT_POSITION, lambda: [InputPosition(42), InputPosition(1 << 40)]),
}


def all_samples() -> Iterator[tuple[str, Codec[Any], Record]]:
    for topic, (codec, make) in SAMPLES.items():
        for record in make():
            yield topic, codec, record
    for record in ticks():
        yield "wmiwatch.matches", TICK, record
    for record in match_batches_of(list(matches())):
        yield "wmiwatch.matches", MATCH_BATCH, record


def match_batches_of(found: list[Any]) -> list[MatchBatch]:
    """Return ``found`` as the intake sends them: in batches per matches partition."""
    encoded = [(match.dest, MATCH.encode(match)) for match in found]
    return [MATCH_BATCH.decode(value) for _, value in match_batches(encoded, 6, limit=4096)]


@pytest.mark.parametrize("topic", [*SAMPLES, "ticks"])
def test_there_are_samples_of_every_record_type(topic: str) -> None:
    made = ticks() if topic == "ticks" else list(SAMPLES[topic][1]())
    assert len(made) >= 2


def test_every_sample_round_trips_and_follows_its_topic_schema() -> None:
    counted = 0
    for topic, codec, record in all_samples():
        encoded = codec.encode(record)
        schema_validator(topic).validate(orjson.loads(encoded))
        assert codec.decode(encoded) == record
        counted += 1
    assert counted > 50


def test_the_golden_files_are_byte_for_byte_what_the_codec_writes() -> None:
    for path in GOLDEN:
        for line in path.read_bytes().splitlines():
            assert FINDING.encode(FINDING.decode(line)) == line


def test_the_matches_topic_tells_batches_matches_and_ticks_by_type() -> None:
    found = list(matches())
    assert AGGREGATION_INPUT.decode(MATCH.encode(found[0])) == found[0]
    tick = ticks()[0]
    assert AGGREGATION_INPUT.decode(TICK.encode(tick)) == tick
    batches = match_batches_of(found)
    assert len(batches) > 1
    for batch in batches:
        assert AGGREGATION_INPUT.decode(MATCH_BATCH.encode(batch)) == batch
    carried = [MATCH.decode(m) for batch in batches for m in batch.matches]
    assert sorted(carried, key=repr) == sorted(found, key=repr)


def mutations(value: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield broken copies of a record: a field missing, an unknown field, a field mistyped."""
    for name in value:
        if name != "type":
            yield f"without {name}", {k: v for k, v in value.items() if k != name}
            yield f"{name} mistyped", {**value, name: [{"not": "this"}]}
    yield "unknown field", {**value, "surprise": 1}


def read(codec: Codec[Any], payload: bytes) -> Any:
    """Decode ``payload`` as the stage reading it does: a batch's values each by their codec."""
    value = codec.decode(payload)
    if isinstance(value, RiskBatch):
        return [RISK_EVENT.decode(risk) for risk in value.risk_events]
    return value


@pytest.mark.parametrize("topic", list(SAMPLES))
def test_what_the_schema_refuses_the_codec_refuses(topic: str) -> None:
    codec, make = SAMPLES[topic]
    value = orjson.loads(codec.encode(next(iter(make()))))
    validator = schema_validator(topic)
    for change, broken in mutations(value):
        with pytest.raises(ValidationError):
            validator.validate(broken)
        with pytest.raises(msgspec.ValidationError):
            read(codec, orjson.dumps(broken))
        assert change


def test_table_values_round_trip() -> None:
    state: dict[str, DestState] = {}
    aggregator = Aggregator(RULES, state, WindowPolicy())
    for match in itertools.islice(matches(), 50):
        aggregator.add(match, -1.0, 0.0, partition=3)
    assert state
    for groups in state.values():
        assert DEST_STATE.decode(DEST_STATE.encode(groups)) == groups
    objects: dict[str, Any] = {}
    scorer = RiskScorer(objects, RiskPolicy())
    for n, risk in enumerate(risk_events()):
        scorer.add(msgspec.structs.replace(risk, time=float(n)))
    assert objects
    for value in objects.values():
        assert OBJECT_STATE.decode(OBJECT_STATE.encode(value)) == value


def test_every_schema_file_has_a_record_type() -> None:
    schemas = {path.name for path in (PROJECT_ROOT / "topics" / "schemas").glob("*.json")}
    checked = {Path(schema_validator(topic).schema["$id"]).name for topic in SAMPLES}
    # Raw events are the endpoints', not ours; a suppression entry is a pydantic model with
    # validators of its own (pipeline.suppress, tested in test_suppress); OCSF-mode findings are
    # rendered, not decoded, and validated in test_ocsf.
    assert schemas - checked == {
        "raw-event.json",
        "suppression.json",
        "ocsf-detection-finding.json",
    }
