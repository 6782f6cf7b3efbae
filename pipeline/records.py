"""The records that cross a topic or sit in a table, as frozen types with one codec each.

Every value written to a wmiwatch topic or table is one of these types, encoded and decoded
here and nowhere else; ``topics/schemas/`` describes the same shapes for consumers, and a test
round-trips every record through both. Decoding is strict: a value with a missing, extra or
mistyped field raises ``msgspec.ValidationError`` (the caller dead-letters it).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Status = Literal["new", "update", "final"]
IncidentKind = Literal["risk_threshold", "mitre_tactics"]


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every record type: immutable, strict about its fields."""


class Origin(Record, frozen=True):
    """Where a raw record came from: topic/partition/offset, or a file and line."""

    topic: str
    partition: NonNegative
    offset: NonNegative
    record_id: str = ""


class Match(Record, frozen=True, tag_field="type", tag="match"):
    """One event that passed a rule's filters, with its group-by values (matches topic)."""

    rule_id: str
    dest: str
    time: float
    group: dict[str, str]
    values: dict[str, str]
    origin: Origin | None
    time_clamped: bool
    ingested_at: float  # arrival: the raw record's Kafka timestamp, epoch seconds


class MatchBatch(Record, frozen=True, tag_field="type", tag="matches"):
    """The matches of one intake batch bound for one matches partition, in order.

    Each match stays its own JSON value, decoded by ``MATCH`` when it is counted: one that is
    not a match is dead-lettered alone, and the others are counted.
    """

    matches: tuple[msgspec.Raw, ...]


class SourceReport(Record, frozen=True, array_like=True):
    """How far one raw partition has been read: part of a tick."""

    topic: str
    partition: NonNegative
    newest: float | None  # newest event time read, epoch seconds; None if none yet
    backlog: bool  # records remain unread (per the intake's last fetch)


class Tick(Record, frozen=True, tag_field="type", tag="tick"):
    """An intake's report on its raw partitions, sent to every matches partition."""

    sent_at: float
    source_count: NonNegative  # partitions of all raw topics together
    sources: tuple[SourceReport, ...]


class GroupState(Record, frozen=True):
    """One (rule, group, window) being counted: a value of the aggregation table."""

    finding_id: str
    rule_id: str
    dest: str
    window_start: int
    group: dict[str, str]
    partition: NonNegative  # the matches partition whose ticks close it
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    values: dict[str, tuple[str, ...]] = {}
    counts: dict[str, int] = {}  # count(field): the events that had the field
    evidence: tuple[Origin, ...] = ()
    counted: dict[str, int] = {}  # newest raw offset counted, per "topic:partition"
    emitted: bool = False
    emitted_at: float = 0.0
    closed: bool = False
    dirty: bool = False
    late: bool = False
    time_clamped: bool = False
    size: int = 0  # its encoded size when it last grew: its share of its dest's bound


DestState = dict[str, GroupState]  # finding id -> group, the table value of one dest


class Entity(Record, frozen=True):
    """The object a finding is about."""

    field: str
    type: str
    value: str


class Finding(Record, frozen=True):
    """One new, updated or final (rule, group, window) result (findings topic)."""

    finding_id: str
    rule_id: str
    rule_name: str
    rule_version: int
    rule_type: str
    title: str
    dest: str
    entity: Entity
    risk_score: int
    mitre_attack_id: tuple[str, ...]
    tactics: tuple[str, ...]
    analytic_story: tuple[str, ...]
    count: int
    first_time: str
    last_time: str
    window_start: str
    group: dict[str, str]
    fields: dict[str, str]
    evidence: tuple[Origin, ...]
    time_clamped: bool
    status: Status
    late: bool


class MitreAnnotations(Record, frozen=True):
    """ATT&CK ids of a risk event, named as Splunk ES's ``annotations.mitre_attack.*``."""

    mitre_technique_id: tuple[str, ...]
    mitre_tactic: tuple[str, ...]
    mitre_tactic_id: tuple[str, ...]


class Annotations(Record, frozen=True):
    """A risk event's annotations (flattened by Splunk to ``annotations.mitre_attack.*``)."""

    mitre_attack: MitreAnnotations
    analytic_story: tuple[str, ...]


class RiskEvent(Record, frozen=True):
    """One risk object of a new finding (risk topic), shaped like Splunk ES's risk index."""

    time: float = msgspec.field(name="_time")  # epoch seconds: the finding's first event
    search_name: str
    risk_object: str
    risk_object_type: str
    risk_score: int
    risk_message: str
    threat_object: tuple[str, ...]
    threat_object_type: tuple[str, ...]  # parallel to threat_object
    annotations: Annotations
    finding_id: str
    rule_id: str


class RiskBatch(Record, frozen=True):
    """The risk events of one matches record bound for one risk partition, in order.

    Each risk event stays its own JSON value (as published on the risk topic), decoded by
    ``RISK_EVENT`` when it is scored: one that is not a risk event is dead-lettered alone.
    """

    risk_events: tuple[msgspec.Raw, ...]


class Contribution(Record, frozen=True):
    """One (rule, threat object)'s risk to an object, as counted by the scorer."""

    time: float
    score: int
    finding_id: str
    rule_name: str
    tactics: tuple[str, ...]


class ObjectState(Record, frozen=True):
    """A risk object's contributions and alert state: a value of the risk table."""

    contributions: dict[str, Contribution]
    above: bool
    tactics: bool
    risk_object_type: str
    partition: int = 0  # the risk partition it is kept in (its expiry is that partition's)


class Contributor(Record, frozen=True):
    """A finding that contributed to an incident."""

    finding_id: str
    rule_name: str
    risk_score: int
    time: str
    tactics: tuple[str, ...]


class Incident(Record, frozen=True):
    """A risk object over its score threshold or across many tactics (risk-incidents topic)."""

    incident_id: str
    kind: IncidentKind
    risk_object: str
    risk_object_type: str
    score: int
    score_threshold: int
    tactics: tuple[str, ...]
    time: str
    contributing: tuple[Contributor, ...]


class DeadLetter(Record, frozen=True):
    """A record that could not be processed, with where it came from and why."""

    reason: str
    error: str
    topic: str
    partition: int
    offset: int
    payload_base64: str  # the record's first bytes (``payload_bytes`` says whether all)
    payload_bytes: int  # the record's size


class InputPosition(Record, frozen=True):
    """The next offset a stage expects of one input partition (kept in its state changelog)."""

    next_offset: int


T = TypeVar("T")
_encoder = msgspec.json.Encoder()


class Codec(Generic[T]):
    """The one JSON encoding of a record type (or of a table value made of records)."""

    def __init__(self, kind: Any) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(kind)

    def decode(self, payload: bytes) -> T:
        """Return the value in ``payload``; raise ``msgspec.ValidationError`` if it is not one."""
        return self._decoder.decode(payload)

    @staticmethod
    def encode(value: T) -> bytes:
        """Return the JSON bytes of ``value``."""
        return _encoder.encode(value)


MATCH: Codec[Match] = Codec(Match)
TICK: Codec[Tick] = Codec(Tick)
MATCH_BATCH: Codec[MatchBatch] = Codec(MatchBatch)
AGGREGATION_INPUT: Codec[Match | MatchBatch | Tick] = Codec(Match | MatchBatch | Tick)  # by "type"
DEST_STATE: Codec[DestState] = Codec(DestState)
FINDING: Codec[Finding] = Codec(Finding)
RISK_EVENT: Codec[RiskEvent] = Codec(RiskEvent)
RISK_BATCH: Codec[RiskBatch] = Codec(RiskBatch)
OBJECT_STATE: Codec[ObjectState] = Codec(ObjectState)
INCIDENT: Codec[Incident] = Codec(Incident)
DEAD_LETTER: Codec[DeadLetter] = Codec(DeadLetter)
INPUT_POSITION: Codec[InputPosition] = Codec(InputPosition)


def to_builtins(record: Record) -> dict[str, Any]:
    """Return the record as its JSON carries it: plain dicts, lists, strings and numbers."""
    return msgspec.json.decode(_encoder.encode(record))  # type: ignore[no-any-return]
