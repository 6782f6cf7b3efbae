"""Aggregation: SPL stats per (rule, group, window), record statuses, lateness and expiry."""

from __future__ import annotations

import dataclasses
import itertools
import math
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from pipeline import aggregate as aggregate_module
from pipeline.aggregate import KEPT_WINDOWS, Aggregator, Full, StagedWrites, window_start
from pipeline.emit import build_risk_events, finding_id
from pipeline.event import Event
from pipeline.files import read_records
from pipeline.match import match_event
from pipeline.offline import detect_files
from pipeline.policy import MAX_KEPT_CHARS, MAX_KEPT_VALUES, MAX_VALUE_CHARS, WindowPolicy
from pipeline.records import DEST_STATE, MATCH, DestState, Finding, Match, Origin, to_builtins
from pipeline.rules.compiler import compile_search
from pipeline.rules.loader import load_rules
from tests import PROJECT_ROOT
from tests.conftest import schema_validator
from tests.synthetic import WMIC_NODE_RULE
from tests.synthetic_hostile import AFTER_STATS, after_stats_match, with_slow_rules

HOUR = 3600
POLICY = WindowPolicy(window_seconds=HOUR, allowed_lateness_seconds=300, update_interval_seconds=60)
OFFSETS = itertools.count()  # raw offsets rise in arrival order, whatever the event times


@pytest.fixture
def state() -> dict[str, DestState]:
    return {}


@pytest.fixture
def aggregator(rules: dict[str, Any], state: dict[str, DestState]) -> Aggregator:
    return Aggregator(rules, state, POLICY)


def match(time: float, process: str = "wmic /node:x os get", dest: str = "h1") -> Match:
    group = {"Processes.dest": dest, "Processes.user": "CORP\\bob", "Processes.process": process}
    return Match(WMIC_NODE_RULE, dest, time, group, {}, Origin("t", 0, next(OFFSETS)), False, 0.0)


def test_finding_ids_are_uuid5_of_the_rule_window_start_and_sorted_group() -> None:
    """Literal ids, computed apart from the code as uuid5(namespace, key) with the key the
    compact JSON array [rule id, window start, group with sorted keys]; e.g. the first is
    uuid5(5b0d2a4e-0f7c-4e5e-9a57-6d1f1f0f57a1, '["272df6de-61f1-4784-877c-1fbc3e2d0838",
    7200,{"Processes.dest":"h1","Processes.process":"wmic /node:x os get",
    "Processes.user":"CORP\\\\bob"}]') without the line breaks."""
    group = {"Processes.user": "CORP\\bob", "Processes.process": "wmic /node:x os get"}
    group["Processes.dest"] = "h1"  # insertion order does not matter
    assert finding_id(WMIC_NODE_RULE, 7200, group) == "51dbdfee-3a02-515d-9809-8e36c623d5dd"
    admin = {"dest": "ar-win-1", "user": "AR-WIN-1\\Administrator"}
    assert finding_id(WMIC_NODE_RULE, 1709640000, admin) == "62f417e5-569c-59d5-a6fa-f231af20c9e6"
    assert finding_id(WMIC_NODE_RULE, 1709643600, admin) == "b927760d-1a46-5876-85b5-291e157b179e"


def statuses(records: list[Finding]) -> list[tuple[str, int, bool]]:
    return [(r.status, r.count, r.late) for r in records]


def test_first_match_emits_new_and_later_ones_update_the_table(
    aggregator: Aggregator, state: dict[str, DestState]
) -> None:
    (first,) = aggregator.add(match(7300.0), watermark=7300.0, now=0.0)
    assert aggregator.add(match(7400.0), watermark=7400.0, now=1.0) == []
    assert aggregator.add(match(7250.0), watermark=7400.0, now=2.0) == []  # out of order
    (stats,) = state["h1"].values()
    assert (stats.count, stats.first, stats.last) == (3, 7250.0, 7400.0)
    offsets = [e.offset for e in stats.evidence]
    assert offsets == sorted(set(offsets)) and len(offsets) == 3  # in arrival order
    assert (first.status, first.count, first.late) == ("new", 1, False)
    assert first.finding_id == "51dbdfee-3a02-515d-9809-8e36c623d5dd"  # see the test below
    assert first.title == (
        "A wmic.exe process wmic /node:x os get contain node commandline "
        "wmic /node:x os get in host h1"
    )
    assert first.first_time == "1970-01-01T02:01:40.000Z"
    schema_validator("wmiwatch.findings").validate(to_builtins(first))
    schema_validator("wmiwatch.matches").validate(orjson.loads(MATCH.encode(match(7300.0))))


def test_updates_are_throttled_and_the_window_close_emits_final(aggregator: Aggregator) -> None:
    (new,) = aggregator.add(match(7300.0), 7300.0, now=100.0)
    aggregator.add(match(7310.0), 7310.0, now=110.0)
    assert aggregator.advance(7310.0, now=150.0, dests=["h1"]) == []  # within the interval
    assert statuses(aggregator.advance(7310.0, now=160.0, dests=["h1"])) == [("update", 2, False)]
    assert aggregator.advance(7310.0, now=500.0, dests=["h1"]) == []  # nothing new
    aggregator.add(match(7320.0), 7320.0, now=501.0)
    assert statuses(aggregator.advance(7320.0, now=560.0, dests=["h1"])) == [("update", 3, False)]
    closes = 7200 + HOUR + 300
    assert aggregator.advance(closes - 1, now=570.0, dests=["h1"]) == []
    final = aggregator.advance(closes, now=571.0, dests=["h1"])
    assert statuses(final) == [("final", 3, False)]
    assert {r.finding_id for r in final} == {new.finding_id}
    assert aggregator.advance(closes + 10, now=1000.0, dests=["h1"]) == []


def test_a_late_match_is_counted_and_flagged_never_dropped(aggregator: Aggregator) -> None:
    aggregator.add(match(7300.0), 7300.0, now=0.0)
    closes = 7200 + HOUR + 300
    assert statuses(aggregator.advance(closes, 1.0, ["h1"])) == [("final", 1, False)]
    assert statuses(aggregator.add(match(7350.0), closes, now=2.0)) == [("update", 2, True)]
    fresh = aggregator.add(match(7360.0, process="wmic /node:y"), closes, now=3.0)
    assert statuses(fresh) == [("new", 1, True)]
    assert statuses(aggregator.advance(closes, 4.0, ["h1"])) == [("final", 1, True)]


def test_a_new_window_or_group_is_a_new_finding(aggregator: Aggregator) -> None:
    records = [
        r
        for m in (match(10.0), match(3610.0), match(20.0, "wmic /node:y"))
        for r in aggregator.add(m, -math.inf, 0.0)
    ]
    assert len({r.finding_id for r in records}) == 3


def test_risk_events_cover_entity_and_user(rules: dict[str, Any], aggregator: Aggregator) -> None:
    (finding,) = aggregator.add(match(10.0), -math.inf, 0.0)
    risk = build_risk_events(rules[WMIC_NODE_RULE], finding)
    assert [(r.risk_object_type, r.risk_object, r.risk_score) for r in risk] == [
        ("system", "h1", 36),
        ("user", "CORP\\bob", 36),
    ]
    for event in risk:
        schema_validator("wmiwatch.risk").validate(to_builtins(event))


def test_closed_windows_expire_from_the_table(
    aggregator: Aggregator, state: dict[str, DestState]
) -> None:
    for hour in range(10):
        aggregator.add(match(hour * HOUR + 1.0), hour * HOUR + 1.0, 0.0)
        aggregator.advance(hour * HOUR + 1.0, 0.0, ["h1"])
    starts = sorted(s.window_start for s in state["h1"].values())
    assert starts == [h * HOUR for h in range(10 - KEPT_WINDOWS - 1, 10)]  # current + 2 before
    aggregator.advance(math.inf, 0.0, ["h1"])
    assert state == {}


def test_a_redelivered_match_is_not_counted_again(aggregator: Aggregator) -> None:
    first, second = match(7300.0), match(7310.0)
    (new,) = aggregator.add(first, 7300.0, now=0.0)
    aggregator.add(second, 7310.0, now=0.0)
    assert aggregator.is_redelivery(first) and aggregator.is_redelivery(second)
    assert aggregator.add(first, 7320.0, now=1.0) is None  # replayed after a restart: not counted
    assert aggregator.add(second, 7320.0, now=1.0) is None
    assert first.origin is not None
    other_partition = replace(first, time=7330.0, origin=replace(first.origin, partition=1))
    assert not aggregator.is_redelivery(other_partition)
    aggregator.add(other_partition, 7330.0, now=2.0)
    (final,) = aggregator.advance(HOUR * 3 + 300, now=3.0, dests=["h1"])
    assert (new.status, final.status, final.count) == ("new", "final", 3)


def test_staged_writes_reach_the_table_only_when_applied(rules: dict[str, Any]) -> None:
    table: dict[str, DestState] = {"old": {}}
    staged = StagedWrites(table)
    aggregator = Aggregator(rules, staged, POLICY)
    (new,) = aggregator.add(match(7300.0), 7300.0, now=0.0)
    del staged["old"]
    assert "h1" not in table and "old" in table  # a crash here loses nothing sent
    assert new.finding_id in staged["h1"] and "old" not in staged
    staged.apply()
    assert new.finding_id in table["h1"] and "old" not in table


def test_discarded_writes_never_reach_the_table(rules: dict[str, Any]) -> None:
    table: dict[str, DestState] = {}
    staged = StagedWrites(table)
    Aggregator(rules, staged, POLICY).add(match(7300.0), 7300.0, now=0.0)
    staged.discard()
    staged.apply()
    assert table == {}


def test_a_clamped_event_flags_its_finding(aggregator: Aggregator) -> None:
    plain = match(7300.0)
    (new,) = aggregator.add(plain, 7300.0, now=0.0)
    clamped = replace(plain, origin=Origin("t", 0, next(OFFSETS)), time_clamped=True)
    aggregator.add(clamped, 7300.0, now=1.0)
    (final,) = aggregator.advance(HOUR * 3 + 300, now=2.0, dests=["h1"])
    assert (new.time_clamped, final.time_clamped, final.count) == (False, True, 2)


def test_groups_of_a_rule_no_longer_loaded_are_forgotten(
    rules: dict[str, Any], state: dict[str, DestState]
) -> None:
    Aggregator(rules, state, POLICY).add(match(7300.0), 7300.0, now=0.0)
    without = {rule_id: rule for rule_id, rule in rules.items() if rule_id != WMIC_NODE_RULE}
    assert Aggregator(without, state, POLICY).advance(7400.0, now=1.0, dests=["h1"]) == []
    assert state == {}


def test_the_xsl_rules_attacker_observables_are_threat_objects(rules: dict[str, Any]) -> None:
    fixture = PROJECT_ROOT / "tests/fixtures/rules/synthetic_sysmon_1_wmic_os_get_local_xsl.xml"
    report = detect_files([fixture], tuple(rules.values()), WindowPolicy())
    xsl = "004e32e2-146d-11ec-a83f-acde48001122"  # XSL Script Execution With WMIC
    (finding,) = [f for f in report.findings if f.rule_id == xsl]
    threats = {
        (r.threat_object, r.threat_object_type) for r in build_risk_events(rules[xsl], finding)
    }
    parent, process = finding.fields["parent_process_name"], finding.fields["process_name"]
    assert threats == {((parent, process), ("parent_process_name", "process_name"))}
    assert process.lower() == "wmic.exe"


def test_latest_and_earliest_keep_the_value_at_the_group_s_ends(rules: dict[str, Any]) -> None:
    rule = rules[WMIC_NODE_RULE]
    plan = compile_search("a=1 | stats count latest(p) as newest earliest(p) as oldest by dest", {})
    custom = dataclasses.replace(rule, plan=plan)
    aggregator = Aggregator({WMIC_NODE_RULE: custom}, {}, WindowPolicy())
    for time, value in ((20.0, "b"), (10.0, "a"), (30.0, "c"), (25.0, "x")):
        found = Match(
            WMIC_NODE_RULE,
            "h1",
            time,
            {"dest": "h1"},
            {"newest": value, "oldest": value},
            Origin("t", 0, next(OFFSETS)),
            False,
            0.0,
        )
        aggregator.add(found, -math.inf, 0.0)
    (final,) = aggregator.advance(math.inf, 0.0, ["h1"])
    assert (final.fields["newest"], final.fields["oldest"], final.count) == ("c", "a", 4)


def test_count_of_a_field_or_an_eval_counts_only_the_events_that_have_it(
    rules: dict[str, Any],
) -> None:
    """Splunk: ``count(X)`` counts the events in which X has a value; ``count(eval(c))`` those
    for which c is true."""
    plan = compile_search(
        'a=1 | stats count count(p) as with_p count(eval(p="x")) as xs by dest', {}
    )
    custom = dataclasses.replace(rules[WMIC_NODE_RULE], plan=plan)
    aggregator = Aggregator({WMIC_NODE_RULE: custom}, {}, WindowPolicy())
    for fields in ({"p": "x"}, {"p": "y"}, {}, {"p": "x"}):
        origin = Origin("t", 0, next(OFFSETS))
        found = match_event(custom, Event({"a": "1", "dest": "h1", **fields}, 10.0, ""), origin)
        assert found is not None
        aggregator.add(found, -math.inf, 0.0)
    (final,) = aggregator.advance(math.inf, 0.0, ["h1"])
    assert (final.fields["count"], final.fields["with_p"], final.fields["xs"]) == ("4", "3", "2")


STATS_FUNCTIONS = (
    "`sysmon` EventCode=1 | stats count min(_time) as firstTime max(_time) as lastTime"
    " dc(Image) as images values(Image) as all_images earliest(Image) as first_image"
    " latest(Image) as last_image by Computer"
)


def test_stats_functions_over_a_real_log(tmp_path: Path) -> None:
    """Expected from the log read by eye: 17 process creations on ar-win-1 in one hour, from
    cmd.exe at 09:44:44.426 to esentutl.exe at 09:52:40.075, five distinct images."""
    shutil.copy(PROJECT_ROOT / "rules" / "macros.yml", tmp_path / "macros.yml")
    spec = yaml.safe_load((PROJECT_ROOT / "rules" / "remote_wmi_command_attempt.yml").read_text())
    spec.update(search=STATS_FUNCTIONS, tests=[])
    (tmp_path / "rule.yml").write_text(yaml.safe_dump(spec))
    log = PROJECT_ROOT / "tests/fixtures/demo/sysmon_wmic_node_credential_dumping_via_copy.log"
    for order in (1, -1):  # the file's order, and the reverse
        records = [record.payload for record in read_records(log)][::order]
        (tmp_path / "events.log").write_bytes(b"\n".join(records) + b"\n")
        (finding,) = detect_files([tmp_path / "events.log"], load_rules(tmp_path), POLICY).findings
        system32 = "C:\\Windows\\System32\\"
        assert finding.fields == {
            "Computer": "ar-win-1",
            "count": "17",
            "firstTime": "1762163084.426259",  # epoch seconds, to the microsecond
            "lastTime": "1762163560.075072",
            "images": "5",
            "all_images": "\n".join(
                system32 + image
                for image in (
                    "WindowsPowerShell\\v1.0\\powershell.exe",
                    "certutil.exe",
                    "cmd.exe",
                    "esentutl.exe",
                    "wbem\\WMIC.exe",
                )
            ),
            "first_image": system32 + "cmd.exe",
            "last_image": system32 + "esentutl.exe",
        }


def test_window_starts_floor_the_time_to_the_window() -> None:
    assert [window_start(t, 60) for t in (0.0, 59.999, 60.0, -1.0)] == [0, 0, 60, -60]


def distinct_values_rule(rules: dict[str, Any]) -> Any:
    plan = compile_search("a=1 | stats count dc(p) as kinds values(p) as ps by dest", {})
    return dataclasses.replace(rules[WMIC_NODE_RULE], plan=plan)


def test_a_group_keeps_at_most_a_hundred_distinct_values_and_counts_every_match(
    rules: dict[str, Any],
) -> None:
    """A host can send values without end: a group keeps the first ``MAX_KEPT_VALUES`` (and
    ``dc`` saturates there), and counts every match."""
    custom = distinct_values_rule(rules)
    aggregator = Aggregator({WMIC_NODE_RULE: custom}, {}, WindowPolicy())
    for n in range(MAX_KEPT_VALUES + 20):
        event = Event({"a": "1", "dest": "h1", "p": f"v{n:03d}"}, 10.0, "")
        found = match_event(custom, event, Origin("t", 0, next(OFFSETS)))
        assert found is not None
        aggregator.add(found, -math.inf, 0.0)
    (final,) = aggregator.advance(math.inf, 0.0, ["h1"])
    assert (final.fields["count"], final.fields["kinds"]) == (str(MAX_KEPT_VALUES + 20), "100")
    assert final.fields["ps"].split("\n") == [f"v{n:03d}" for n in range(MAX_KEPT_VALUES)]


def test_a_group_keeps_values_up_to_a_bound_on_their_characters(rules: dict[str, Any]) -> None:
    custom = distinct_values_rule(rules)
    aggregator = Aggregator({WMIC_NODE_RULE: custom}, {}, WindowPolicy())
    long = [f"{n}" * MAX_VALUE_CHARS for n in range(6)]  # 4 fit in MAX_KEPT_CHARS
    for value in long:
        found = match_event(custom, Event({"a": "1", "dest": "h1", "p": value}, 10.0, ""))
        assert found is not None
        aggregator.add(found, -math.inf, 0.0)
    (final,) = aggregator.advance(math.inf, 0.0, ["h1"])
    assert final.fields["ps"].split("\n") == long[: MAX_KEPT_CHARS // MAX_VALUE_CHARS]


def test_a_dest_s_groups_stay_within_their_size_bound(
    aggregator: Aggregator, state: dict[str, DestState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound, a match that would open a group is refused (the caller dead-letters
    it); the dest's other groups, and other dests, go on counting."""
    monkeypatch.setattr(aggregate_module, "DEST_STATE_BYTES", 4096)
    opened = 0
    with pytest.raises(Full, match="'h1'"):
        for n in range(100):
            aggregator.add(match(10.0, process=f"wmic /node:{n:03d} os get"), -math.inf, 0.0)
            opened += 1
    assert 1 < opened < 100 and len(state["h1"]) == opened
    assert len(DEST_STATE.encode(state["h1"])) <= 4096
    assert aggregator.add(match(20.0, process="wmic /node:000 os get"), -math.inf, 0.0) == []
    assert aggregator.add(match(20.0, dest="h2"), -math.inf, 0.0)  # a new finding
    counted = {s.group["Processes.process"]: s.count for s in state["h1"].values()}
    assert counted["wmic /node:000 os get"] == 2


def test_a_table_at_its_bound_opens_no_new_dest_and_counts_on_for_the_others(
    rules: dict[str, Any],
) -> None:
    """A flood of forged dests would hold the worker's memory without end: past ``max_dests``
    a match of a new dest is refused (the caller dead-letters it), those held count on, and
    room comes back as their groups are forgotten."""
    state: dict[str, DestState] = {}
    aggregator = Aggregator(rules, state, POLICY, max_dests=3)
    for dest in ("h1", "h2", "h3"):
        assert aggregator.add(match(10.0, dest=dest), -math.inf, 0.0)
    with pytest.raises(Full, match="the table holds 3 dests") as full:
        aggregator.add(match(10.0, dest="h4"), -math.inf, 0.0)
    assert full.value.reason == "table_full" and sorted(state) == ["h1", "h2", "h3"]
    assert aggregator.add(match(20.0, dest="h1", process="other"), -math.inf, 0.0)  # new group
    forgotten = HOUR * (2 + KEPT_WINDOWS) + POLICY.allowed_lateness_seconds
    aggregator.advance(forgotten, 0.0, ["h1", "h2", "h3"])
    assert state == {}
    assert aggregator.add(match(forgotten + 10.0, dest="h4"), forgotten, 0.0)


def test_the_table_s_bound_counts_the_dests_a_record_opens_before_they_are_applied(
    rules: dict[str, Any],
) -> None:
    """One matches record can bring several new dests: each counts as soon as it is staged."""
    staged: StagedWrites[DestState] = StagedWrites({"h0": {}})
    aggregator = Aggregator(rules, staged, POLICY, max_dests=3)
    for dest in ("h1", "h2"):
        assert aggregator.add(match(10.0, dest=dest), -math.inf, 0.0)
    with pytest.raises(Full, match="the table holds 3 dests"):
        aggregator.add(match(10.0, dest="h3"), -math.inf, 0.0)
    assert len(staged) == 3
    del staged["h0"], staged["h1"]
    staged["h1"] = {}
    assert len(staged) == 2 and sorted(staged.pending) == ["h0", "h1", "h2"]


KEYS = st.sampled_from(["a", "b", "c", "d"])
STAGINGS = st.lists(st.tuples(st.sampled_from(["set", "del", "apply", "discard"]), KEYS))


@given(st.sets(KEYS), STAGINGS)
def test_staged_writes_count_their_keys_as_a_dict_would(keys: set[str], steps: list[Any]) -> None:
    """Writes, deletes (of keys there or not), applies and discards, in any order."""
    table = dict.fromkeys(keys, 0)
    staged: StagedWrites[int] = StagedWrites(table)
    model, applied = dict(table), dict(table)
    for action, key in steps:
        if action == "set":
            staged[key] = model[key] = 1
        elif action == "del":
            del staged[key]
            model.pop(key, None)
        elif action == "apply":
            staged.apply()
            applied = dict(model)
        else:
            staged.discard()
            model = dict(applied)
        assert len(staged) == len(model) and table == applied


def test_a_group_its_post_stats_cannot_decide_in_time_emits_nothing_and_is_told(
    tmp_path: Path,
) -> None:
    """Its result row is tried again when the group next has something due; each time it
    runs out of time the aggregator hands the group over to be dead-lettered."""
    rules = {rule.id: rule for rule in load_rules(with_slow_rules(tmp_path / "rules"))}
    aggregator = Aggregator(rules, {}, POLICY)
    slow, fine = after_stats_match(rules, "h1"), after_stats_match(rules, "h2", "aaa")
    assert aggregator.add(slow, -math.inf, 0.0) == []
    (undecided,) = aggregator.take_undecided()
    assert (undecided.stats.dest, undecided.stats.emitted) == ("h1", False)
    assert undecided.detail.startswith(f"rule {AFTER_STATS}: replace(): '^(a|aa)+(?!a)$' ran")
    assert aggregator.take_undecided() == []
    (new,) = aggregator.add(fine, -math.inf, 0.0) or []
    assert (new.dest, new.fields["parent"]) == ("h2", "x")
    (final,) = aggregator.advance(math.inf, 0.0, ["h1", "h2"])
    assert (final.dest, final.status) == ("h2", "final")
    assert [group.stats.dest for group in aggregator.take_undecided()] == ["h1"]
