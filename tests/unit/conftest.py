"""Fixtures the unit tests share."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.rules.loader import load_rules
from tests import PROJECT_ROOT


@pytest.fixture(scope="session")
def rules() -> dict[str, Any]:
    """Return the shipped rules by id."""
    return {rule.id: rule for rule in load_rules(PROJECT_ROOT / "rules")}
