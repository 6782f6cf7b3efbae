"""Rule files as data: the shape of one detection YAML and of the macros file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.rules.plan import Plan


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entity(_Strict):
    """The field a finding is about, its risk object type, and its risk score."""

    field: str
    type: Literal["system", "user", "other"]
    score: int = Field(ge=0, le=100)


class RiskObject(_Strict):
    """A further risk object of the finding (besides the entity)."""

    field: str
    type: Literal["system", "user", "other"]


class FindingSpec(_Strict):
    """How a finding is titled and which entities carry its risk."""

    title: str
    entity: Entity
    risk_objects: tuple[RiskObject, ...] = ()
    threat_objects: tuple[str, ...] = ()
    derived_from: str | None = None


class RuleTest(_Strict):
    """A fixture and how many findings the rule must produce from it (0: must not fire)."""

    name: str
    fixture: str
    findings: int = Field(ge=0)


class RuleSpec(_Strict):
    """One detection, shaped like Splunk security_content's newest detection YAML."""

    name: str
    id: str
    version: int
    date: date
    author: str
    status: Literal["production", "experimental", "deprecated"]
    type: Literal["TTP", "Anomaly", "Hunting", "Correlation"]
    description: str
    data_source: tuple[str, ...]
    search: str
    how_to_implement: str
    known_false_positives: str
    references: tuple[str, ...] = ()
    finding: FindingSpec
    analytic_story: tuple[str, ...]
    mitre_attack_id: tuple[str, ...]
    tactics: tuple[str, ...] = ()
    window_seconds: int | None = Field(default=None, gt=0)
    tests: tuple[RuleTest, ...] = ()  # none: the rule is reported untested


class MacroSpec(_Strict):
    """A macro in ``rules/macros.yml``."""

    definition: str
    arguments: tuple[str, ...] = ()
    description: str = ""


class MacrosFile(_Strict):
    """The whole macros file."""

    macros: dict[str, MacroSpec]


@dataclass(frozen=True)
class Rule:
    """A loaded rule: its spec, its file, and its compiled plan."""

    spec: RuleSpec
    path: str
    plan: Plan
    routes: frozenset[tuple[str, str]]

    @property
    def id(self) -> str:
        """Return the upstream detection id."""
        return self.spec.id


def filter_macro_name(rule_name: str) -> str:
    """Return the name of the editable ``_filter`` macro of the rule named ``rule_name``."""
    return "".join(c if c.isalnum() else "_" for c in rule_name.lower()) + "_filter"
