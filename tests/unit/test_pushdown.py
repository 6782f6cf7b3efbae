"""Post-stats commands the group alone decides run before a match is sent; findings stay equal."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fleet import BACKGROUND
from pipeline.event import Event
from pipeline.match import match_event
from pipeline.offline import detect_files
from pipeline.policy import WindowPolicy
from pipeline.records import FINDING
from pipeline.rules.compiler import compile_search
from pipeline.rules.expr import All
from pipeline.rules.importer import import_detections
from pipeline.rules.loader import load_rules
from pipeline.rules.model import Rule
from pipeline.rules.steps import Assign, Filter, Rename, run_steps
from tests import PROJECT_ROOT
from tests.unit.test_golden import INPUTS
from tests.unit.test_importer import ESCU, PROJECT_MACROS
from tests.unit.test_match import rule_with


def kept(rule: Rule, **fields: str) -> bool:
    """Return whether an event with ``fields`` (a = 1) is sent as a match of ``rule``."""
    return match_event(rule, Event({"a": "1", **fields}, 5.0, "")) is not None


def test_a_filter_on_by_fields_runs_before_the_match_is_sent(rules: dict[str, Any]) -> None:
    rule = rule_with(rules, "a=1 | stats count by p | eval n=len(p) | where n=5")
    assert [type(step) for step in rule.plan.group_steps] == [Assign, Filter]
    assert kept(rule, p="a.exe") and not kept(rule, p="abcd.exe")


def test_renamed_by_fields_are_followed(rules: dict[str, Any]) -> None:
    rule = rule_with(rules, 'a=1 | stats count by P.p | rename P.* as * | search p="x*"')
    assert [type(step) for step in rule.plan.group_steps] == [Rename, Filter]
    assert kept(rule, **{"P.p": "xy"}) and not kept(rule, **{"P.p": "yx"})


@pytest.mark.parametrize(
    "search",
    [
        'a=1 | stats count by p | where count > 2 AND p="x"',
        "a=1 | stats count by p | search count>2 p=x",
    ],
)
def test_of_an_and_only_the_terms_on_by_fields_are_pushed(
    rules: dict[str, Any], search: str
) -> None:
    rule = rule_with(rules, search)
    [pushed] = rule.plan.group_steps
    assert isinstance(pushed, Filter) and isinstance(pushed.expr, All)
    assert len(pushed.expr.operands) == 1
    assert kept(rule, p="x") and not kept(rule, p="y")


@pytest.mark.parametrize(
    "search",
    [
        "a=1 | stats count by p | where count > 2",
        "a=1 | stats count by p | eval c=count*2 | where c > 4",
        'a=1 | stats count by p | rename count as p | where p="x"',
        "a=1 | stats count by p | eval a=count*2 | rename a as b | where b>3",
        'a=1 | stats count by p | rex field=count "(?<p>\\d)" | where p="x"',
        "a=1 | stats count by p | search x",  # a bare word reads every value
        "a=1 | stats min(_time) as firstTime by p | convert ctime(firstTime)"
        ' | search firstTime="1*"',
        'a=1 | stats values(q) as q by p | where q="x"',
        'a=1 | stats count by p | regex "x"',  # the row's text: every value
    ],
)
def test_what_reads_a_counted_field_stays_after_stats(rules: dict[str, Any], search: str) -> None:
    rule = rule_with(rules, search)
    assert rule.plan.group_steps == ()
    assert kept(rule, p="y", q="y")


def unpushed(rule: Rule) -> Rule:
    """Return ``rule`` with every row step run after stats only."""
    return dataclasses.replace(rule, plan=dataclasses.replace(rule.plan, group_steps=()))


MADE = {  # searches whose post-stats filters read by-fields, over the fleet's real events
    "Short Process Names": "| tstats count min(_time) as firstTime max(_time) as lastTime"
    " from datamodel=Endpoint.Processes by Processes.dest Processes.process_name"
    " | `drop_dm_object_name(Processes)` | eval n=len(process_name) | where n < 12 AND count > 0",
    "Low Ports": "`sysmon` EventCode=3 | stats count min(_time) as firstTime max(_time) as lastTime"
    " by Computer DestinationPort | rename Computer as dest | where DestinationPort < 1024",
}


def write_made_rules(folder: Path) -> None:
    """Write the ``MADE`` searches as rule files, each a shipped rule's spec otherwise."""
    shipped = yaml.safe_load(
        (PROJECT_ROOT / "rules" / "remote_wmi_command_attempt.yml").read_bytes()
    )
    for number, (name, search) in enumerate(MADE.items()):
        spec = {**shipped, "name": name, "search": search, "tests": []}
        spec["id"] = f"00000000-0000-4000-8000-{number:012d}"
        (folder / f"made_{number}.yml").write_text(yaml.safe_dump(spec))


def test_findings_are_those_of_the_rules_run_after_stats_only(tmp_path: Path) -> None:
    """Imported rules with steps pushed, and searches made to push, over every real fixture."""
    import_detections([ESCU], tmp_path, PROJECT_MACROS)
    write_made_rules(tmp_path)
    chosen = load_rules(tmp_path)
    assert sum(bool(rule.plan.group_steps) for rule in chosen) == 5
    paths = [BACKGROUND, *(INPUTS[name] for name in sorted(INPUTS))]
    pushed = detect_files(paths, chosen, WindowPolicy())
    after = detect_files(paths, tuple(map(unpushed, chosen)), WindowPolicy())
    assert [FINDING.encode(f) for f in pushed.findings] == [
        FINDING.encode(f) for f in after.findings
    ]
    assert {"Short Process Names", "Low Ports"} < {f.rule_name for f in pushed.findings}
    assert pushed.matches < after.matches / 2


# Post-stats commands reading and writing by-fields (p, q), outputs (count, firstTime, v) and
# fields made from either (a, b), for searches drawn at random.
COMMANDS = [
    "eval a=len(p)",
    "eval a=count*2",
    "eval p=q",
    "eval q=count",
    'eval a=if(p="x1", "1", null())',
    "rename count as p",
    "rename p as a",
    "rename q as count",
    "rename * as f_*",
    "rename a as b",
    'rex field=p "(?<a>\\d)"',
    'rex field=count "(?<q>\\d)"',
    "fillnull value=0 a",
    "convert ctime(firstTime) as a",
    "where a>3",
    "where b>3",
    'where p="x1"',
    'where count>1 AND q="y1"',
    "where len(q)=2 AND isnull(a)",
    "search a=1*",
    "search p=x*",
    "search count>1 p=x1",
    "search f_p=x1",
    "search NOT v=z*",
    "search y1",
]


@settings(max_examples=600, deadline=None)
@given(
    commands=st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=6),
    p=st.sampled_from(["x1", "x22", "y1", "1"]),
    q=st.sampled_from(["y1", "x1", "22", "q"]),
    count=st.integers(1, 3),
    values=st.lists(st.sampled_from(["z1", "w2", "x1"]), max_size=2, unique=True),
)
def test_a_group_the_pushed_steps_drop_the_whole_pipeline_drops(
    commands: list[str], p: str, q: str, count: int, values: list[str]
) -> None:
    search = "a=1 | stats count min(_time) as firstTime values(x) as v by p q | "
    plan = compile_search(search + " | ".join(commands), {})
    row = {"p": p, "q": q, "count": str(count), "firstTime": "1700000000.5"}
    row.update({"v": "\n".join(sorted(values))} if values else {})
    if not run_steps(plan.group_steps, {"p": p, "q": q}):
        assert not run_steps(plan.row_steps, row), (commands, row)
