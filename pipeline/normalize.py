"""Normalize parsed events to Splunk CIM field names, from one mapping file per source."""

from __future__ import annotations

import ntpath
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from pipeline.event import Event
from pipeline.rejects import Rejected, RejectReason
from pipeline.yamlfile import load_yaml

Fields = dict[str, str]


def _copy(fields: Fields, name: str | list[str]) -> str | None:
    return fields.get(str(name))


def _first(fields: Fields, names: str | list[str]) -> str | None:
    return next((fields[n] for n in names if fields.get(n)), None)


def _basename(fields: Fields, name: str | list[str]) -> str | None:
    value = fields.get(str(name))
    return None if value is None else ntpath.basename(value)


def _hex_to_int(fields: Fields, name: str | list[str]) -> str | None:
    value = fields.get(str(name))
    try:
        return None if value is None else str(int(value, 16 if value.startswith("0x") else 10))
    except ValueError:
        return value


def _template(fields: Fields, text: str | list[str]) -> str | None:
    names = [n for _, n, _, _ in string.Formatter().parse(str(text)) if n]
    if not all(n in fields for n in names):
        return None
    return str(text).format_map(fields)


def _value(fields: Fields, text: str | list[str]) -> str | None:
    return str(text)


Transform = Callable[[Fields, str | list[str]], str | None]
Step = tuple[str, Transform, "str | list[str]", bool]
TRANSFORMS: dict[str, Transform] = {
    "copy": _copy,
    "first": _first,
    "basename": _basename,
    "hex_to_int": _hex_to_int,
    "template": _template,
    "value": _value,
}
SUBSTRING_TRANSFORMS = frozenset({"copy", "first", "basename"})  # output is part of an input


class FieldSpec(BaseModel):
    """One output field: exactly one transform, optionally kept when already present."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    copy_: str | None = Field(default=None, alias="copy")
    first: list[str] | None = None
    basename: str | None = None
    hex_to_int: str | None = None
    template: str | None = None
    value: str | None = None
    keep_existing: bool = False

    @model_validator(mode="after")
    def _one_transform(self) -> FieldSpec:
        if len(self.transform_items()) != 1:
            raise ValueError(f"give exactly one of {', '.join(TRANSFORMS)}")
        return self

    def transform_items(self) -> list[tuple[str, str | list[str]]]:
        """Return the (transform, argument) pairs that are set."""
        values = {
            "copy": self.copy_,
            "first": self.first,
            "basename": self.basename,
            "hex_to_int": self.hex_to_int,
            "template": self.template,
            "value": self.value,
        }
        return [(name, arg) for name, arg in values.items() if arg is not None]

    @property
    def keeps_substring(self) -> bool:
        """Return whether the output is always a substring of an input field."""
        return self.transform_items()[0][0] in SUBSTRING_TRANSFORMS

    def inputs(self) -> set[str]:
        """Return the names of the fields the transform reads."""
        name, argument = self.transform_items()[0]
        if name == "value":
            return set()
        if name == "template":
            return {n for _, n, _, _ in string.Formatter().parse(str(argument)) if n}
        return set(argument) if isinstance(argument, list) else {argument}

    def transform(self) -> tuple[Transform, str | list[str]]:
        """Return the transform function and its argument."""
        name, argument = self.transform_items()[0]
        return TRANSFORMS[name], argument


class EventMapping(BaseModel):
    """Fields and data model of one event code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datamodel: str | None = None
    fields: dict[str, FieldSpec] = {}


class Identify(BaseModel):
    """How events of this source are recognised: a field's presence or value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    equals: str | None = None

    def matches(self, fields: Fields) -> bool:
        """Return whether ``fields`` belong to this source."""
        value = fields.get(self.field)
        return value is not None and (
            self.equals is None or value.casefold() == self.equals.casefold()
        )


class SourceMapping(BaseModel):
    """A mapping file: one event source to CIM."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    topic: str
    identify: Identify
    _steps: dict[str, list[Step]] = PrivateAttr()
    _common_steps: list[Step] = PrivateAttr()
    event_code: str
    common: dict[str, FieldSpec]
    events: dict[str, EventMapping]

    def model_post_init(self, context: object) -> None:
        """Resolve every event code's field specs into plain steps once, not per event."""
        self._steps = {
            code: self._resolve({**self.common, **mapping.fields})
            for code, mapping in self.events.items()
        }
        self._common_steps = self._resolve(self.common)

    @staticmethod
    def _resolve(specs: dict[str, FieldSpec]) -> list[Step]:
        return [(name, *spec.transform(), spec.keep_existing) for name, spec in specs.items()]

    def field_names(self, code: str) -> frozenset[str]:
        """Return the fields events of ``code`` carry: those mapped and those read."""
        mapping = self.events.get(code)
        specs = {**self.common, **(mapping.fields if mapping else {})}
        names = {self.event_code, self.identify.field, *specs}
        for spec in specs.values():
            names |= spec.inputs()
        return frozenset(names)

    def apply(self, event: Event) -> None:
        """Set source, EventCode, data model and the CIM fields on ``event`` in place."""
        fields = event.fields
        code = fields.get(self.event_code)
        if code is None:
            raise Rejected(RejectReason.MISSING_FIELD, f"{self.source}: no {self.event_code}")
        fields["EventCode"] = code
        event.source = self.source
        for name, function, argument, keep_existing in self._steps.get(code, self._common_steps):
            if keep_existing and name in fields:
                continue
            value = function(fields, argument)
            if value is not None:
                fields[name] = value
        mapping = self.events.get(code)
        if mapping is not None and mapping.datamodel:
            event.datamodel = fields["_datamodel"] = mapping.datamodel


@dataclass(frozen=True)
class Normalizer:
    """All source mappings; identifies an event's source and normalizes it."""

    mappings: tuple[SourceMapping, ...]

    def identify(self, fields: Fields) -> SourceMapping:
        """Return the mapping of the source these fields come from."""
        for mapping in self.mappings:
            if mapping.identify.matches(fields):
                return mapping
        channel = fields.get("Channel") or fields.get("event_simpleName") or "?"
        raise Rejected(RejectReason.UNKNOWN_SOURCE, f"no mapping for channel {channel!r}")

    def normalize(self, event: Event) -> Event:
        """Normalize ``event`` in place and return it."""
        self.identify(event.fields).apply(event)
        return event

    def raw_safe(self, name: str) -> bool:
        """Return whether field ``name``'s value is always copied from the raw text."""
        return not name.startswith("_") and name not in self._derived_fields

    @cached_property
    def _derived_fields(self) -> frozenset[str]:
        return frozenset(
            name
            for mapping in self.mappings
            for specs in (mapping.common, *(e.fields for e in mapping.events.values()))
            for name, spec in specs.items()
            if not spec.keeps_substring
        )

    def by_source(self, source: str) -> SourceMapping:
        """Return the mapping named ``source``."""
        return next(m for m in self.mappings if m.source == source)

    def route_keys(self) -> Iterable[tuple[str, str, dict[str, str]]]:
        """Yield (source, EventCode, fields known before reading the event) for routing."""
        for mapping in self.mappings:
            constants = {n: s.value for n, s in mapping.common.items() if s.value is not None}
            for code, event_mapping in mapping.events.items():
                known = {
                    **constants,
                    "EventCode": code,
                    mapping.event_code: code,
                    "_datamodel": event_mapping.datamodel or "",
                }
                yield mapping.source, code, known


def load_mapping(path: Path) -> SourceMapping:
    """Load one mapping file."""
    return SourceMapping.model_validate(load_yaml(path))


@cache
def default_normalizer() -> Normalizer:
    """Return the normalizer built from the mapping files shipped in ``pipeline/mappings``."""
    folder = files("pipeline").joinpath("mappings")
    paths = sorted(Path(str(folder)).glob("*.yaml"))
    return Normalizer(tuple(load_mapping(path) for path in paths))
