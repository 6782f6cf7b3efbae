"""Offline detection: parallel jobs give exactly the findings of one process."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import offline
from pipeline.cli import app
from pipeline.engine import Detector
from pipeline.files import read_records
from pipeline.policy import WindowPolicy
from pipeline.records import FINDING
from pipeline.rules.loader import load_rules
from tests import PROJECT_ROOT
from tests.synthetic_hostile import SLOW_RULES, slow_sysmon, with_slow_rules
from tests.unit.test_golden import GOLDEN, INPUTS


def test_jobs_give_the_findings_of_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline, "BATCH_RECORDS", 3)  # many batches, spread over the jobs
    rules, paths = load_rules(PROJECT_ROOT / "rules"), [INPUTS[n] for n in sorted(INPUTS)]
    one = offline.detect_files(paths, rules, WindowPolicy())
    three = offline.detect_files(paths, rules, WindowPolicy(), jobs=3)
    assert one.events > 3 * 3 * 3 and len(one.findings) >= 10
    assert [FINDING.encode(f) for f in three.findings] == [FINDING.encode(f) for f in one.findings]
    assert (three.events, three.matches, three.rejected) == (one.events, one.matches, one.rejected)


def test_the_matches_counted_are_every_match_of_the_files() -> None:
    """What a worker's wmiwatch_matches_aggregated_total would count: all matches, also those
    of groups no finding reports."""
    rules, paths = load_rules(PROJECT_ROOT / "rules"), [INPUTS[n] for n in sorted(INPUTS)]
    detector = Detector(rules)
    records = [record for path in paths for record in read_records(path)]
    matched = sum(len(detector.process(record.payload).matches) for record in records)
    report = offline.detect_files(paths, rules, WindowPolicy())
    assert report.matches == matched >= sum(f.count for f in report.findings) > 0


def test_detect_with_jobs_prints_the_golden_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    name = "sysmon_wmic_node_credential_dumping_via_copy.log"
    relative = INPUTS[name].relative_to(PROJECT_ROOT)
    result = CliRunner().invoke(app, ["detect", "--jobs", "2", "--format", "jsonl", str(relative)])
    assert result.exit_code == 0, result.output
    assert result.stdout.encode() == (GOLDEN / f"{name}.jsonl").read_bytes()
    assert result.stdout.count("\n") >= 1


def test_jobs_run_rules_whose_plans_do_not_pickle(tmp_path: Path) -> None:
    escu = PROJECT_ROOT / "tests" / "fixtures" / "escu" / "detections" / "endpoint"
    imported = CliRunner().invoke(app, ["rules", "import", str(escu), "--out", str(tmp_path)])
    assert imported.exit_code == 0, imported.output
    rules = load_rules(tmp_path)  # one of them filters with `where count >=4`: a closure
    assert any("where" in rule.spec.search for rule in rules)
    paths = [INPUTS[n] for n in sorted(INPUTS)]
    one = offline.detect_files(paths, rules, WindowPolicy())
    two = offline.detect_files(paths, rules, WindowPolicy(), jobs=2)
    assert one.findings and [FINDING.encode(f) for f in two.findings] == [
        FINDING.encode(f) for f in one.findings
    ]


def test_a_file_reports_what_ran_out_of_time_and_finds_the_rest(tmp_path: Path) -> None:
    """One event a lookaround runs out of time on: rejected once for the rule before stats,
    once for the group of the rule after stats; the other rules' findings are all there."""
    rules = load_rules(with_slow_rules(tmp_path / "rules"))
    events = tmp_path / "events.log"
    events.write_bytes(slow_sysmon("h1", "2024-03-05T11:02:44Z") + b"\n")
    report = offline.detect_files([events], rules, WindowPolicy())
    assert report.rejected == {"regex_timeout": 2}
    found = {finding.rule_id for finding in report.findings}
    assert "272df6de-61f1-4784-877c-1fbc3e2d0838" in found  # Remote WMI Command Attempt
    assert found.isdisjoint(SLOW_RULES)
