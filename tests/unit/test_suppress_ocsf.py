"""Suppression entries and the OCSF rendering of findings."""

from __future__ import annotations

import orjson

from pipeline.ocsf import to_ocsf
from pipeline.suppress import Suppressions
from tests.conftest import FIXTURES


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


def test_star_covers_every_rule_and_a_tombstone_removes_the_entry() -> None:
    suppressions = Suppressions()
    suppressions.apply("k1", entry(rule_id="*", field="user", value="svc_*"))
    assert suppressions.match("any", {"user": "svc_backup"}, 0.0) is not None
    suppressions.apply("k1", None)
    assert suppressions.match("any", {"user": "svc_backup"}, 0.0) is None


def test_malformed_entries_are_ignored() -> None:
    suppressions = Suppressions()
    suppressions.apply("k1", b"{not json")
    suppressions.apply("k2", orjson.dumps({"rule_id": "r1"}))
    assert suppressions.entries == {}


def test_findings_render_as_ocsf_detection_findings() -> None:
    golden = FIXTURES.parent / "golden" / "sysmon_wmic_node_credential_dumping_via_copy.log.jsonl"
    finding = orjson.loads(golden.read_bytes().splitlines()[0])
    ocsf = to_ocsf(finding)
    assert (ocsf["class_uid"], ocsf["category_uid"], ocsf["activity_id"]) == (2004, 2, 3)
    assert ocsf["type_uid"] == 200403
    assert ocsf["finding_info"]["uid"] == finding["finding_id"]
    assert ocsf["finding_info"]["analytic"]["uid"] == finding["rule_id"]
    assert ocsf["finding_info"]["attacks"][0]["technique"]["uid"] == "T1047"
    assert ocsf["device"]["hostname"] == finding["dest"]
    assert ocsf["severity_id"] == 3  # score 49
