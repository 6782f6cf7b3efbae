"""Load and compile every rule file of a rules directory, collecting all problems."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline.normalize import Normalizer, default_normalizer
from pipeline.rules.compiler import Macro, compile_search
from pipeline.rules.errors import RuleError, RuleErrors, describe
from pipeline.rules.lookups import LOOKUPS_FILE, Lookups
from pipeline.rules.model import MacrosFile, Rule, RuleSpec
from pipeline.rules.plan import Plan
from pipeline.yamlfile import load_yaml

MACROS_FILE = "macros.yml"


def load_macros(path: Path) -> dict[str, Macro]:
    """Load the macros file; an ``name(n)`` entry takes n arguments."""
    try:
        spec = MacrosFile.model_validate(load_yaml(path))
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise RuleErrors([RuleError(describe(error), path=str(path))]) from None
    return {name: Macro(m.definition, m.arguments) for name, m in spec.macros.items()}


def routes_of(plan: Plan, normalizer: Normalizer) -> frozenset[tuple[str, str]]:
    """Return the (source, EventCode) pairs whose events the plan's predicate may match."""
    return frozenset(
        (source, code)
        for source, code, known in normalizer.route_keys()
        if plan.predicate.decide(known) is not False
    )


def load_rule(
    path: Path, macros: dict[str, Macro], normalizer: Normalizer, lookups: Lookups | None = None
) -> Rule:
    """Load, validate and compile one rule file."""
    try:
        spec = RuleSpec.model_validate(load_yaml(path))
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise RuleError(describe(error), path=str(path)) from None
    try:
        plan = compile_search(spec.search, macros, lookups)
    except RuleError as error:
        raise error.at(path=str(path)) from None
    routes = routes_of(plan, normalizer)
    if not routes:
        raise RuleError("the search matches no supported source and EventCode", path=str(path))
    return Rule(spec=spec, path=str(path), plan=plan, routes=routes)


def load_rules(folder: Path, normalizer: Normalizer | None = None) -> tuple[Rule, ...]:
    """Load every ``*.yml`` rule in ``folder``; raise RuleErrors listing every problem."""
    normalizer = normalizer or default_normalizer()
    macros = load_macros(folder / MACROS_FILE)
    try:
        lookups = Lookups.of(folder)
    except RuleError as error:
        raise RuleErrors([error]) from None
    rules, errors = [], []
    for path in sorted(folder.glob("*.yml")):
        if path.name in (MACROS_FILE, LOOKUPS_FILE):
            continue
        try:
            rules.append(load_rule(path, macros, normalizer, lookups))
        except RuleError as error:
            errors.append(error)
    errors.extend(_duplicate_ids(rules))
    if errors:
        raise RuleErrors(errors)
    if not rules:
        raise RuleErrors([RuleError("no rule files (*.yml) found", path=str(folder))])
    return tuple(rules)


def _duplicate_ids(rules: list[Rule]) -> list[RuleError]:
    seen: dict[str, str] = {}
    errors = []
    for rule in rules:
        if rule.id in seen:
            errors.append(
                RuleError(f"id {rule.id} is also used by {seen[rule.id]}", path=rule.path)
            )
        seen.setdefault(rule.id, rule.path)
    return errors
