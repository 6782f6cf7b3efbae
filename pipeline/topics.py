"""Topic definitions as data: ``topics/*.yaml`` read into typed specs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class TopicSpec(BaseModel):
    """One topic: name, role, partitions, config, key and value schema.

    Replication is the deployment's (``WMIWATCH_REPLICATION_FACTOR``,
    ``WMIWATCH_MIN_INSYNC_REPLICAS``), not the topic's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Literal["raw", "internal", "output"]
    source: str | None = None
    partitions: int = Field(gt=0)
    config: dict[str, str]
    key: str
    value_schema: str
    description: str


@dataclass(frozen=True)
class Topics:
    """Every topic the pipeline uses, with the deployment's name prefix applied."""

    specs: tuple[TopicSpec, ...]
    prefix: str
    folder: Path

    def name(self, base: str) -> str:
        """Return the deployed name of topic ``base``."""
        return f"{self.prefix}{base}"

    def spec(self, base: str) -> TopicSpec:
        """Return the spec of topic ``base``."""
        return next(spec for spec in self.specs if spec.name == base)

    def raw(self) -> dict[str, str]:
        """Return source -> deployed raw topic name."""
        return {s.source: self.name(s.name) for s in self.specs if s.role == "raw" and s.source}

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


def load_topics(folder: Path, prefix: str = "") -> Topics:
    """Load every ``*.yaml`` topic definition in ``folder``."""
    specs = tuple(
        TopicSpec.model_validate(yaml.safe_load(path.read_text()))
        for path in sorted(folder.glob("*.yaml"))
    )
    return Topics(specs, prefix, folder)
