"""Fixtures the unit tests share."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from pipeline.normalize import default_normalizer
from pipeline.rules.loader import load_rules
from pipeline.rules.patterns import PROCESS_BUDGET
from tests import PROJECT_ROOT

MUTATION_RUN = "MUTANT_UNDER_TEST" in os.environ
if MUTATION_RUN:  # shared fixtures are then built per test: hypothesis must accept that
    settings.register_profile(
        "mutation", suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    settings.load_profile("mutation")


def shared(fixture_name: str, config: pytest.Config) -> str:
    """Return the scope of a fixture built once and shared: the session, or each test in a
    mutation run (scripts/mutation.sh).

    The mutation tool runs, for a mutant, the tests it saw run the mutated function: an object
    built once would credit its construction (rule compiling, mappings, the screen) to the
    first test that asked for it alone.
    """
    return "function" if MUTATION_RUN else "session"


@pytest.fixture(scope=shared, autouse=True)
def fresh_normalizer() -> None:
    """Build the shipped normalizer afresh in each session (in a mutation run, each test)."""
    default_normalizer.cache_clear()


@pytest.fixture(autouse=True)
def full_pattern_budget() -> None:
    """Give each test the process's whole time budget for bounded expressions, so that no
    test's crafted values refuse another test's expressions."""
    PROCESS_BUDGET.left = PROCESS_BUDGET.burst


@pytest.fixture(scope=shared)
def rules() -> dict[str, Any]:
    """Return the shipped rules by id."""
    return {rule.id: rule for rule in load_rules(PROJECT_ROOT / "rules")}
