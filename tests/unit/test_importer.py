"""Importing security_content detections: rule files for what runs, a reason for the rest."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pipeline.offline import detect_files
from pipeline.policy import WindowPolicy
from pipeline.rules.compiler import Macro
from pipeline.rules.importer import finding, import_detections, upstream_macros
from pipeline.rules.loader import load_rules
from pipeline.rules.steps import run_steps
from tests import PROJECT_ROOT
from tests.synthetic_hostile import WMIC_NODE, sysmon

ESCU = PROJECT_ROOT / "tests" / "fixtures" / "escu" / "detections" / "endpoint"
PROJECT_MACROS = PROJECT_ROOT / "rules" / "macros.yml"
GOLDEN = PROJECT_ROOT / "tests" / "golden" / "import"
WMIC_COMMAND = "wmic /node:10.0.0.5 process call create calc.exe"
PARENT = "<Data Name='ParentProcessId'>4100</Data>"  # the detection groups by it
DEMO = (
    PROJECT_ROOT
    / "tests"
    / "fixtures"
    / "demo"
    / "sysmon_wmic_node_credential_dumping_via_copy.log"
)


def test_the_report_names_each_refused_detection_and_its_stage(tmp_path: Path) -> None:
    report = import_detections([ESCU], tmp_path, PROJECT_MACROS)
    assert report.summary == "imported 8 of 9"
    refused = {Path(path).stem: reason for path, reason in report.refused}
    assert refused == {
        "3cx_supply_chain_attack_network_indicators": (
            "search stage 1 (tstats): unsupported datamodel Network_Resolution"
        ),
    }


def test_imported_rules_load_and_fire_on_the_technique_they_detect(tmp_path: Path) -> None:
    import_detections([ESCU], tmp_path, PROJECT_MACROS)
    rules = load_rules(tmp_path)
    assert sorted(r.spec.name for r in rules) == [
        "Access LSASS Memory for Dump Creation",
        "Account Discovery With Net App",
        "Attacker Tools On Endpoint",
        "Change Default File Association",
        "Credential Dumping via Copy Command from Shadow Copy",
        "Detect Path Interception By Creation Of program exe",
        "Remote WMI Command Attempt",
        "Windows Alternate DataStream - Process Execution",
    ]
    shadow = next(r for r in rules if r.spec.name.startswith("Credential Dumping via Copy"))
    assert (shadow.spec.id, shadow.spec.version) == ("d8c406fe-23d2-45f3-a983-1abe7b83ff3b", 4)
    assert shadow.spec.mitre_attack_id == ("T1003.003", "T1003") and not shadow.spec.tests
    found = detect_files([DEMO], rules, WindowPolicy()).findings
    assert {f.rule_name for f in found if f.rule_id == shadow.id} == {shadow.spec.name}


def test_an_imported_detection_with_lookahead_runs_bounded_and_fires(tmp_path: Path) -> None:
    """Its ``regex process="…(?!\\.)…"`` runs on the bounded backtracking engine: a command
    line naming a file's alternate data stream fires, one whose stream name ends in a dot not."""
    detection = ESCU / "windows_alternate_datastream___process_execution.yml"
    assert import_detections([detection], tmp_path / "rules", PROJECT_MACROS).refused == []
    events = tmp_path / "synthetic_sysmon_1_ads_execution.log"
    lines = [
        sysmon(host, "2024-03-05T11:02:44Z", 1, WMIC_NODE.replace(WMIC_COMMAND, command) + PARENT)
        for host, command in (
            ("ads", 'wmic process call create "C:\\Users\\ann\\a.txt:evil.exe"'),
            ("dot", 'wmic process call create "C:\\Users\\ann\\a.txt:evil.exe."'),
        )
    ]
    events.write_bytes(b"\n".join(lines) + b"\n")
    report = detect_files([events], load_rules(tmp_path / "rules"), WindowPolicy())
    assert [finding.dest for finding in report.findings] == ["ads"]
    assert report.rejected == {}


def test_lookups_are_defined_copied_and_read_and_a_missing_file_is_named(
    tmp_path: Path,
) -> None:
    import_detections([ESCU], tmp_path / "out", PROJECT_MACROS)
    rules = {r.spec.name: r for r in load_rules(tmp_path / "out")}
    tools = rules["Attacker Tools On Endpoint"].plan.row_steps
    assert run_steps(tools, {"process_name": "PSEXESVC.exe"})  # a wildcard row of the CSV
    assert not run_steps(tools, {"process_name": "notepad.exe"})  # default_match "false"
    copy = tmp_path / "escu"
    shutil.copytree(ESCU.parent.parent, copy)
    (copy / "lookups" / "attacker_tools.csv").unlink()
    report = import_detections([copy / "detections"], tmp_path / "bare", PROJECT_MACROS)
    missing = tmp_path / "bare" / "lookups" / "attacker_tools.csv"
    assert (
        str(copy / "detections" / "endpoint" / "attacker_tools_on_endpoint.yml"),
        (f"search stage 5 (lookup): lookup file {missing} not found"),
    ) in report.refused


def test_only_the_lookups_the_rules_use_are_copied(tmp_path: Path) -> None:
    copy = tmp_path / "escu"
    shutil.copytree(ESCU.parent.parent, copy)
    (copy / "lookups" / "unused.yml").write_text("name: unused\nfilename: unused.csv\n")
    (copy / "lookups" / "unused.csv").write_text("a,b\n1,2\n")
    import_detections([copy / "detections"], tmp_path / "out", PROJECT_MACROS)
    assert sorted(p.name for p in (tmp_path / "out" / "lookups").iterdir()) == [
        "attacker_tools.csv"
    ]
    assert "unused" not in (tmp_path / "out" / "lookups.yml").read_text()


def test_the_finding_comes_from_the_observables() -> None:
    tags = {
        "message": "Suspicious $process_name$ on $dest$ by $user$",
        "risk_score": 56,
        "observable": [
            {"name": "dest", "type": "Hostname", "role": ["Victim"]},
            {"name": "user", "type": "User", "role": ["Victim"]},
            {"name": "process_name", "type": "Process", "role": ["Attacker"]},
        ],
    }
    derived = finding(tags)
    assert derived["entity"] == {"field": "dest", "type": "system", "score": 56}
    assert derived["risk_objects"] == [{"field": "user", "type": "user"}]
    assert derived["threat_objects"] == ["process_name"]
    assert derived["title"] == "Suspicious $process_name$ on $dest$ by $user$"


def test_imported_files_match_the_golden_files(tmp_path: Path) -> None:
    """Each written rule file and macros.yml, byte for byte (reviewed against the upstream
    YAMLs; regenerate with ``wmiwatch rules import tests/fixtures/escu/detections/endpoint
    --out tests/golden/import`` and review the diff)."""
    out = tmp_path / "a" / "new" / "folder"
    report = import_detections([ESCU], out, PROJECT_MACROS)
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert written == sorted(
        str(path.relative_to(GOLDEN)) for path in GOLDEN.rglob("*") if path.is_file()
    )
    assert sorted(report.imported) == [name for name in written if name.endswith(".yml")
                                       and name not in ("macros.yml", "lookups.yml")]  # fmt: skip
    for name in written:
        assert (out / name).read_text() == (GOLDEN / name).read_text(), name


def test_a_single_detection_file_can_be_imported(tmp_path: Path) -> None:
    report = import_detections([ESCU / "remote_wmi_command_attempt.yml"], tmp_path, PROJECT_MACROS)
    assert report.summary == "imported 1 of 1"
    expected = (GOLDEN / "remote_wmi_command_attempt.yml").read_text()
    assert (tmp_path / "remote_wmi_command_attempt.yml").read_text() == expected


def test_without_observables_the_finding_falls_back_to_dest_and_the_default_score() -> None:
    derived = finding({})
    assert derived["entity"] == {"field": "dest", "type": "system", "score": 25}
    assert derived["title"] == "$dest$"
    assert derived["risk_objects"] == [] and derived["threat_objects"] == []
    no_role = finding({"observable": [{"name": "src_ip", "type": "IP Address"}, {"name": "x"}]})
    assert no_role["entity"] == {"field": "src_ip", "type": "system", "score": 25}
    assert finding({"observable": [{"name": "f", "role": ["Victim"]}]})["entity"]["type"] == "other"


def test_upstream_macros_are_read_with_their_arguments(tmp_path: Path) -> None:
    macros = tmp_path / "macros"
    macros.mkdir()
    (macros / "ctime.yml").write_text(
        "name: ctime\ndefinition: convert ctime($field$)\narguments:\n- field\n"
    )
    (macros / "plain.yml").write_text("name: plain\ndefinition: a=1\n")
    (macros / "empty.yml").write_text("")
    (macros / "nameless.yml").write_text("definition: a=1\n")
    (macros / "list.yml").write_text("- name: x\n")
    detections = tmp_path / "detections"
    detections.mkdir()
    assert upstream_macros([detections]) == {
        "ctime": Macro("convert ctime($field$)", ("field",)),
        "plain": Macro("a=1", ()),
    }


def test_a_minimal_detection_gets_empty_texts_and_keeps_non_ascii(tmp_path: Path) -> None:
    source = tmp_path / "detections"
    source.mkdir()
    detection = yaml.safe_load((ESCU / "remote_wmi_command_attempt.yml").read_text())
    for optional in ("description", "how_to_implement", "known_false_positives", "references"):
        detection.pop(optional, None)
    detection["name"] = "Remote WMI Command Attempt (Café)"
    (source / "minimal.yml").write_text(yaml.safe_dump(detection))
    (source / "not_a_detection.yml").write_text("name: x\n")
    out = tmp_path / "out"
    report = import_detections([source], out, PROJECT_MACROS)
    written = yaml.safe_load((out / "minimal.yml").read_text())
    assert (written["description"], written["how_to_implement"]) == ("", "")
    assert (written["known_false_positives"], written["references"]) == ("", [])
    assert "name: Remote WMI Command Attempt (Café)" in (out / "minimal.yml").read_text()
    assert report.refused == [
        (str(source / "not_a_detection.yml"), "not a detection wmiwatch can read: 'id'")
    ]
