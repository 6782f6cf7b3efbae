"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.normalize import default_normalizer
from pipeline.rules.loader import load_rules
from tests import PROJECT_ROOT


@pytest.fixture(scope="session", autouse=True)
def fresh_normalizer() -> Iterator[None]:
    """Build the shipped normalizer afresh in each session.

    A mutation run forks each session from a process that has already built (and cached) it,
    so without this a mutant in the mapping code would never run.
    """
    default_normalizer.cache_clear()
    yield


@pytest.fixture(scope="session")
def rules() -> dict[str, Any]:
    """Return the shipped rules by id."""
    return {rule.id: rule for rule in load_rules(PROJECT_ROOT / "rules")}
