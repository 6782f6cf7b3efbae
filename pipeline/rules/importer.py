"""Import Splunk security_content (ESCU) detections as wmiwatch rule files.

Each detection YAML becomes a rule file when its search compiles with the macros and routes to
a supported (source, EventCode); the rest are reported, each with its located reason. The
macros are the project's data-source macros first (they name wmiwatch's sources), then the
upstream ones, then a no-op ``<name>_filter`` per imported detection, as the shipped rules have.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.normalize import Normalizer, default_normalizer
from pipeline.rules.compiler import Macro, compile_search
from pipeline.rules.errors import RuleError, describe
from pipeline.rules.loader import MACROS_FILE, load_macros, routes_of
from pipeline.rules.lookups import LOOKUPS_FILE, LOOKUPS_FOLDER, Lookups, LookupSpec
from pipeline.rules.model import RuleSpec, filter_macro_name
from pipeline.yamlfile import load_yaml

# security_content observable types -> risk object types
ENTITY_TYPES = {"user": "user", "user name": "user", "hostname": "system", "ip address": "system"}
DEFAULT_SCORE = 25


@dataclass
class ImportReport:
    """What an import made of each detection."""

    imported: list[str] = field(default_factory=list)  # rule file names written
    refused: list[tuple[str, str]] = field(default_factory=list)  # (detection file, reason)

    @property
    def summary(self) -> str:
        """Return the report's last line."""
        total = len(self.imported) + len(self.refused)
        return f"imported {len(self.imported)} of {total}"


def detection_files(sources: Iterable[Path]) -> Iterator[Path]:
    """Yield the detection YAML files of ``sources`` (files, or folders searched deeply)."""
    for source in sources:
        yield from sorted(source.rglob("*.yml")) if source.is_dir() else [source]


def beside(sources: Iterable[Path], name: str) -> list[Path]:
    """Return the ``name`` folders beside the detections' ``detections/`` (searched upwards)."""
    found = []
    for source in sources:
        folder = next((p / name for p in source.resolve().parents if (p / name).is_dir()), None)
        if folder is not None and folder not in found:
            found.append(folder)
    return found


def upstream_macros(sources: Iterable[Path]) -> dict[str, Macro]:
    """Return the macros of the ``macros/`` folder beside the detections' ``detections/``."""
    return {name: m for folder in beside(sources, "macros") for name, m in _macro_files(folder)}


def upstream_lookups(sources: Iterable[Path], out: Path) -> Lookups:
    """Return the CSV lookup definitions of the ``lookups/`` folder beside the detections, each
    table read from that folder when it has the file, else from ``out/lookups/``."""
    specs: dict[str, LookupSpec] = {}
    files: dict[str, Path] = {}
    for folder in beside(sources, LOOKUPS_FOLDER):
        for path in sorted(folder.glob("*.yml")):
            upstream = load_yaml(path) or {}
            known = {k: v for k, v in upstream.items() if k in LookupSpec.model_fields}
            try:
                spec = LookupSpec.model_validate(known)
            except ValidationError:
                continue  # a KV store collection or a model: not a CSV lookup
            name = str(upstream.get("name", path.stem))
            specs[name] = spec
            if (folder / spec.filename).is_file():
                files[name] = folder / spec.filename
    return Lookups(out, specs, files=files)


def write_lookups(lookups: Lookups, out: Path) -> None:
    """Write the definitions of the lookups the rules use, and copy their CSV files, to ``out``."""
    if not lookups.tables:
        return
    (out / LOOKUPS_FOLDER).mkdir(exist_ok=True)
    for name, table in lookups.tables.items():
        target = out / LOOKUPS_FOLDER / table.spec.filename
        if lookups.file(name) != target:
            shutil.copyfile(lookups.file(name), target)
    used = {name: t.spec.model_dump(exclude_defaults=True) for name, t in lookups.tables.items()}
    (out / LOOKUPS_FILE).write_text(yaml.safe_dump({"lookups": used}, sort_keys=False))


def _macro_files(folder: Path) -> Iterator[tuple[str, Macro]]:
    for path in sorted(folder.glob("*.yml")):
        spec = load_yaml(path) or {}
        if isinstance(spec, dict) and "name" in spec and "definition" in spec:
            arguments = tuple(str(a) for a in spec.get("arguments") or ())
            yield str(spec["name"]), Macro(str(spec["definition"]), arguments)


def rule_spec(detection: Mapping[str, Any]) -> dict[str, Any]:
    """Return the rule file of an ESCU detection: upstream fields kept, ``finding`` derived."""
    tags = detection.get("tags") or {}
    return {
        "name": detection["name"],
        "id": detection["id"],
        "version": detection["version"],
        "date": str(detection["date"]),
        "author": detection["author"],
        "status": detection["status"],
        "type": detection["type"],
        "description": detection.get("description", ""),
        "data_source": list(detection.get("data_source") or []),
        "search": detection["search"],
        "how_to_implement": detection.get("how_to_implement", ""),
        "known_false_positives": detection.get("known_false_positives", ""),
        "references": list(detection.get("references") or []),
        "finding": finding(tags),
        "analytic_story": list(tags.get("analytic_story") or []),
        "mitre_attack_id": list(tags.get("mitre_attack_id") or []),
    }


def finding(tags: Mapping[str, Any]) -> dict[str, Any]:
    """Derive ``finding`` from upstream tags as the shipped rules do: entity = first Victim
    observable, further Victims are risk objects, Attackers threat objects, title = message."""
    observables = list(tags.get("observable") or [])
    victims = [o for o in observables if "Victim" in (o.get("role") or [])]
    attackers = [o["name"] for o in observables if "Attacker" in (o.get("role") or [])]
    entity = (victims or observables or [{"name": "dest", "type": "Hostname"}])[0]
    score = int(tags.get("risk_score") or DEFAULT_SCORE)
    return {
        "title": str(tags.get("message") or "").strip() or "$dest$",
        "entity": {"field": entity["name"], "type": _kind(entity), "score": score},
        "risk_objects": [{"field": o["name"], "type": _kind(o)} for o in victims[1:]],
        "threat_objects": attackers,
        "derived_from": "imported: entity = first Victim observable, further Victim observables"
        " risk objects, Attacker observables threat objects, score = tags.risk_score,"
        " title = tags.message",
    }


def _kind(observable: Mapping[str, Any]) -> str:
    return ENTITY_TYPES.get(str(observable.get("type", "")).lower(), "other")


def import_detections(
    sources: list[Path], out: Path, project_macros: Path, normalizer: Normalizer | None = None
) -> ImportReport:
    """Write a rule file per importable detection and ``macros.yml`` to ``out``; report all."""
    normalizer = normalizer or default_normalizer()
    ours = load_macros(project_macros)
    upstream = upstream_macros(sources)
    out.mkdir(parents=True, exist_ok=True)
    lookups = upstream_lookups(sources, out)
    report, specs = ImportReport(), {}
    for path in detection_files(sources):
        try:
            spec = _importable(path, {**upstream, **ours}, normalizer, lookups)
        except RuleError as error:
            report.refused.append((str(path), str(error)))
            continue
        specs[f"{path.stem}.yml"] = spec
    for name, spec in specs.items():
        (out / name).write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
        report.imported.append(name)
    filters = {filter_macro_name(s["name"]): {"definition": "search *"} for s in specs.values()}
    macros = {**_as_yaml(upstream), **_as_yaml(ours), **filters}
    (out / MACROS_FILE).write_text(yaml.safe_dump({"macros": macros}, sort_keys=False))
    write_lookups(lookups, out)
    return report


def _importable(
    path: Path, macros: Mapping[str, Macro], normalizer: Normalizer, lookups: Lookups
) -> dict[str, Any]:
    """Return the rule file of the detection at ``path``, or raise why it cannot run here."""
    try:
        detection = load_yaml(path)
        spec = rule_spec(detection)
        RuleSpec.model_validate(spec)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValidationError) as error:
        raise RuleError(f"not a detection wmiwatch can read: {describe(error)}") from None
    own_filter = {filter_macro_name(spec["name"]): Macro("search *")}
    plan = compile_search(spec["search"], {**macros, **own_filter}, lookups)
    if not routes_of(plan, normalizer):
        raise RuleError("the search matches no supported source and EventCode", stage="route")
    return spec


def _as_yaml(macros: Mapping[str, Macro]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "definition": m.definition,
            **({"arguments": list(m.arguments)} if m.arguments else {}),
        }
        for name, m in macros.items()
    }
