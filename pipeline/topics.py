"""Topic definitions as data: ``topics/*.yaml`` read into typed specs.

wmiwatch owns its outputs and internal topics: they carry the deployment's name prefix. The raw
topics belong to whoever ships the endpoint events: their names are the defaults here or the
deployment's per-source names (``WMIWATCH_RAW_TOPICS``), never prefixed, and a source given no
name is switched off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.yamlfile import load_yaml


class TopicSpec(BaseModel):
    """One topic: name, role, partitions, config, key and value schema.

    Replication is the deployment's (``WMIWATCH_REPLICATION_FACTOR``,
    ``WMIWATCH_MIN_INSYNC_REPLICAS``), not the topic's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Literal["raw", "internal", "output"]
    worker_access: tuple[Literal["read", "write"], ...]  # what its principal must be allowed
    source: str | None = None
    partitions: int = Field(gt=0)
    partitions_of: str | None = None  # a state topic: as many partitions as its input topic
    config: dict[str, str]
    key: str
    value_schema: str
    description: str


@dataclass(frozen=True)
class Topics:
    """Every topic the pipeline uses, by its deployed name."""

    specs: tuple[TopicSpec, ...]
    folder: Path
    names: Mapping[str, str]  # topic definition name -> deployed name ("" for a source off)

    def name(self, base: str) -> str:
        """Return the deployed name of topic ``base`` (empty for a raw source switched off)."""
        return self.names[base]

    def spec(self, base: str) -> TopicSpec:
        """Return the spec of topic ``base``."""
        return next(spec for spec in self.specs if spec.name == base)

    def raw(self) -> dict[str, str]:
        """Return source -> deployed raw topic name, for the sources switched on."""
        return {
            s.source: self.names[s.name]
            for s in self.specs
            if s.role == "raw" and s.source and self.names[s.name]
        }

    def deployed(self, *, raw: bool) -> tuple[TopicSpec, ...]:
        """Return the owned definitions, and with ``raw`` those of the sources switched on."""
        return tuple(s for s in self.specs if s.role != "raw" or (raw and self.names[s.name]))

    def schema(self, base: str) -> dict[str, Any]:
        """Return the JSON Schema of topic ``base``'s values."""
        loaded: dict[str, Any] = json.loads(
            (self.folder / self.spec(base).value_schema).read_text()
        )
        return loaded

    @property
    def findings(self) -> str:
        """Return the findings topic name."""
        return self.name("wmiwatch.findings")

    @property
    def risk(self) -> str:
        """Return the risk events topic name."""
        return self.name("wmiwatch.risk")

    @property
    def risk_batches(self) -> str:
        """Return the internal topic of risk events batched for the scoring."""
        return self.name("wmiwatch.risk-batches")

    @property
    def matches(self) -> str:
        """Return the internal matches topic name."""
        return self.name("wmiwatch.matches")

    @property
    def incidents(self) -> str:
        """Return the risk incidents topic name."""
        return self.name("wmiwatch.risk-incidents")

    @property
    def suppressions(self) -> str:
        """Return the suppressions topic name."""
        return self.name("wmiwatch.suppressions")

    @property
    def dead_letter(self) -> str:
        """Return the dead-letter topic name."""
        return self.name("wmiwatch.dead-letter")


def load_topics(
    folder: Path, prefix: str = "", raw_names: Mapping[str, str] | None = None
) -> Topics:
    """Load every ``*.yaml`` topic definition in ``folder``.

    ``prefix`` goes before the names of the topics wmiwatch owns; ``raw_names`` (source -> raw
    topic name, "" to switch it off) overrides the raw topics' default names.
    """
    specs = tuple(
        TopicSpec.model_validate(load_yaml(path)) for path in sorted(folder.glob("*.yaml"))
    )
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        followed = by_name.get(spec.partitions_of or spec.name)
        if followed is None or followed.partitions != spec.partitions:
            raise ValueError(
                f"{spec.name}: {spec.partitions} partitions, but it follows {spec.partitions_of}"
                f" ({followed.partitions if followed else 'no such topic'})"
            )
    overrides = dict(raw_names or {})
    sources = {spec.source for spec in specs if spec.role == "raw" and spec.source}
    if unknown := sorted(set(overrides) - sources):
        raise ValueError(f"raw topics for unknown sources {unknown}; known: {sorted(sources)}")
    names = {
        spec.name: overrides.get(spec.source or "", spec.name)
        if spec.role == "raw"
        else f"{prefix}{spec.name}"
        for spec in specs
    }
    return Topics(specs, folder, names)
