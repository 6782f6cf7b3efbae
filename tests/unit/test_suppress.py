"""Suppression entries."""

from __future__ import annotations

import logging

import orjson
import pytest
from prometheus_client import REGISTRY

from pipeline.normalize import default_normalizer
from pipeline.rules.loader import load_rules
from pipeline.suppress import Suppression, Suppressions, known_fields
from tests import PROJECT_ROOT

SUPPRESSIONS = "wmiwatch_suppressions_total"


def entry(**fields: object) -> bytes:
    base = {
        "rule_id": "r1",
        "field": "dest",
        "value": "build-*",
        "reason": "CI hosts",
        "author": "alice",
    }
    return orjson.dumps({**base, **fields})


def test_entries_match_by_rule_field_and_wildcard_until_they_expire() -> None:
    suppressions = Suppressions()
    suppressions.apply("k1", entry(expires_at="2030-01-01T00:00:00Z"))
    assert suppressions.match("r1", {"dest": "BUILD-07"}, now=0.0) is not None
    assert suppressions.match("r2", {"dest": "build-07"}, now=0.0) is None
    assert suppressions.match("r1", {"dest": "ws-07"}, now=0.0) is None
    assert suppressions.match("r1", {"dest": "build-07"}, now=1_900_000_000.0) is None


def test_an_entry_stops_applying_at_the_instant_it_expires() -> None:
    suppressions = Suppressions()
    suppressions.apply("k1", entry(expires_at="2030-01-01T00:00:00Z"))
    expiry = 1_893_456_000.0  # 2030-01-01T00:00:00Z
    assert suppressions.match("r1", {"dest": "build-1"}, now=expiry - 0.001) is not None
    assert suppressions.match("r1", {"dest": "build-1"}, now=expiry) is None
    suppressions.apply("k2", entry(expires_at="2030-01-01T01:00:00+01:00"))  # the same instant
    assert suppressions.match("r1", {"dest": "build-1"}, now=expiry) is None


def test_star_covers_every_rule_and_a_tombstone_removes_the_entry() -> None:
    suppressions = Suppressions()
    suppressions.apply("k1", entry(rule_id="*", field="user", value="svc_*", broad=True))
    assert suppressions.match("any", {"user": "svc_backup"}, 0.0) is not None
    suppressions.apply("k1", None)
    assert suppressions.match("any", {"user": "svc_backup"}, 0.0) is None


def test_malformed_entries_are_ignored() -> None:
    suppressions = Suppressions()
    suppressions.apply("k1", b"{not json")
    suppressions.apply("k2", orjson.dumps({"rule_id": "r1"}))
    assert suppressions.entries == {}


@pytest.mark.parametrize(
    ("fields", "scope"),
    [
        ({"rule_id": "*"}, "all_rules"),
        ({"value": "*"}, "whole_rule"),
        ({"value": "**"}, "whole_rule"),
        ({"rule_id": "*", "value": "*"}, "all_rules"),
    ],
)
def test_broad_entries_are_refused_unless_flagged(
    fields: dict[str, str], scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    suppressions = Suppressions()
    refused = REGISTRY.get_sample_value(SUPPRESSIONS, {"action": "refused", "scope": ""}) or 0
    suppressions.apply("k1", entry(**fields))
    assert suppressions.entries == {}
    silences = {"all_rules": "every rule", "whole_rule": "every match of its rule"}[scope]
    assert f"this entry silences {silences}: set broad to true" in caplog.text
    assert (
        REGISTRY.get_sample_value(SUPPRESSIONS, {"action": "refused", "scope": ""}) == refused + 1
    )
    suppressions.apply("k1", entry(**fields, broad=True))
    assert suppressions.entries["k1"][0].scope == scope
    assert suppressions.match("r1", {"dest": "build-7"}, 0.0) is not None


def test_applied_entries_are_logged_with_author_reason_and_scope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    applied = {"action": "applied", "scope": "values"}
    before = REGISTRY.get_sample_value(SUPPRESSIONS, applied) or 0
    with caplog.at_level(logging.WARNING):
        Suppressions().apply("pentest", entry(expires_at="2030-01-01T00:00:00Z"))
    assert caplog.messages == [
        "suppression 'pentest' applied: scope=values rule=r1 dest='build-*'"
        " expires=2030-01-01T00:00:00+00:00 author='alice' reason='CI hosts'"
    ]
    assert REGISTRY.get_sample_value(SUPPRESSIONS, applied) == before + 1


def test_entries_naming_an_unknown_rule_or_field_are_flagged() -> None:
    known = known_fields(load_rules(PROJECT_ROOT / "rules"), default_normalizer())
    wmic = "272df6de-61f1-4784-877c-1fbc3e2d0838"
    assert Suppression.model_validate(orjson.loads(entry(rule_id=wmic))).problems(known) == []
    unknown_rule = orjson.loads(entry(rule_id="no-such-rule"))
    assert Suppression.model_validate(unknown_rule).problems(known) == [
        "unknown rule id 'no-such-rule'"
    ]
    typo = orjson.loads(entry(rule_id=wmic, field="dset"))
    assert Suppression.model_validate(typo).problems(known) == [
        "no rule's events carry field 'dset'"
    ]
    flagged = {"action": "flagged", "scope": "values"}
    before = REGISTRY.get_sample_value(SUPPRESSIONS, flagged) or 0
    suppressions = Suppressions(known)
    suppressions.apply("k1", entry(rule_id=wmic, field="dset"))
    assert "k1" in suppressions.entries  # applied all the same: the worker is not the gate
    assert REGISTRY.get_sample_value(SUPPRESSIONS, flagged) == before + 1


def test_a_tombstone_is_logged_and_counted_and_an_unknown_one_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    removed = {"action": "removed", "scope": "values"}
    before = REGISTRY.get_sample_value(SUPPRESSIONS, removed) or 0
    suppressions = Suppressions()
    suppressions.apply("k1", entry())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        suppressions.apply("k1", None)
        suppressions.apply("never-there", None)
    assert caplog.messages == ["suppression 'k1' removed (was by alice)"]
    assert REGISTRY.get_sample_value(SUPPRESSIONS, removed) == before + 1


def test_refusals_and_problems_are_logged_with_their_key(caplog: pytest.LogCaptureFixture) -> None:
    known = {"r1": frozenset({"dest"}), "r2": frozenset({"user"})}
    suppressions = Suppressions(known)
    suppressions.apply("bad", b"{not json")
    suppressions.apply("odd", entry(field="parent_process"))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].startswith("suppression 'bad' refused: ")
    assert (
        errors[1] == "suppression 'odd' looks wrong: no rule's events carry field 'parent_process'"
    )
    assert "expires=never" in caplog.text


def test_a_field_is_checked_against_its_rule_or_else_every_rule() -> None:
    known = {"r1": frozenset({"dest"}), "r2": frozenset({"user"})}
    user_of_r1 = Suppression.model_validate(orjson.loads(entry(field="user")))
    assert user_of_r1.problems(known) == ["no rule's events carry field 'user'"]
    every_rule = Suppression.model_validate(
        orjson.loads(entry(rule_id="*", field="user", broad=True))
    )
    assert every_rule.problems(known) == []


def test_known_fields_unite_every_route_and_group_by_field() -> None:
    rules = load_rules(PROJECT_ROOT / "rules")
    known = known_fields(rules, default_normalizer())
    wmic = known["272df6de-61f1-4784-877c-1fbc3e2d0838"]  # Sysmon 1, 4688 and ProcessRollup2
    assert {"CommandLine", "NewProcessName", "ImageFileName"} <= wmic  # one from each source
    assert {"Processes.dest", "dest", "process_id"} <= wmic  # the group-by names, both forms


def test_a_non_matching_entry_does_not_hide_a_later_one() -> None:
    suppressions = Suppressions()
    suppressions.apply("other-rule", entry(rule_id="r2"))
    suppressions.apply("expired", entry(expires_at="2000-01-01T00:00:00Z"))
    suppressions.apply("live", entry(value="ws-*"))
    found = suppressions.match("r1", {"dest": "ws-3"}, now=1_700_000_000.0)
    assert found is not None and found.value == "ws-*"
