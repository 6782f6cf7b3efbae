"""Routing: an event reaches exactly the rules listening to its (source, EventCode)."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.event import Event
from pipeline.route import Router
from pipeline.rules.loader import load_rules
from pipeline.rules.model import Rule
from tests import PROJECT_ROOT
from tests.unit.conftest import shared


@pytest.fixture(scope=shared)
def shipped() -> tuple[Rule, ...]:
    return load_rules(PROJECT_ROOT / "rules")


def event(source: str, code: str) -> Event:
    return Event({"EventCode": code}, 0.0, "", source=source)


def test_every_route_of_every_rule_leads_back_to_it(shipped: tuple[Rule, ...]) -> None:
    router = Router(shipped)
    for rule in shipped:
        for source, code in rule.routes:
            assert rule in router.rules_for(event(source, code))
    assert router.routes == frozenset(route for rule in shipped for route in rule.routes)


def test_an_event_no_rule_listens_to_reaches_none(shipped: tuple[Rule, ...]) -> None:
    router = Router(shipped)
    assert router.rules_for(event("sysmon", "3")) == ()
    assert router.rules_for(event("nosuchsource", "1")) == ()
    assert router.rules_for(Event({}, 0.0, "", source="sysmon")) == ()  # no EventCode


def test_the_shipped_rules_share_routes_without_duplicates(shipped: tuple[Rule, ...]) -> None:
    router = Router(shipped)
    rules_per_route = Counter(len(router.rules_at(route)) for route in router.routes)
    assert max(rules_per_route) > 1  # process creation feeds several rules at once
    for route in router.routes:
        found = router.rules_at(route)
        assert len(found) == len(set(found))
