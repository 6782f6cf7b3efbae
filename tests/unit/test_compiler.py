"""The SPL subset: parsing, semantics, macros, routing and located errors."""

from __future__ import annotations

import pytest

from pipeline.event import Event
from pipeline.rules.compiler import (
    Macro,
    compile_search,
    expand_macros,
    span_seconds,
    split_stages,
)
from pipeline.rules.errors import RuleError
from pipeline.rules.steps import run_steps

MACROS = {
    "sysmon": Macro('source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational"'),
    "ctime": Macro('convert timeformat="%Y-%m-%dT%H:%M:%S" ctime($field$)', ("field",)),
    "drop_dm_object_name": Macro("rename $object$.* as *", ("object",)),
    "nested": Macro("`sysmon` EventCode=1"),
    "allow": Macro("search *"),
}


def event(raw: str = "", **fields: str) -> Event:
    return Event(fields=dict(fields), time=0.0, raw=raw)


def matches(search: str, evt: Event) -> bool:
    return compile_search(f"{search} | stats count", MACROS).predicate.evaluate(evt)


def test_terms_are_case_insensitive_wildcards_with_implicit_and() -> None:
    search = 'process_name=WMIC.exe process="*/node:*"'
    assert matches(search, event(process_name="wmic.exe", process="wmic /NODE:x os get"))
    assert not matches(search, event(process_name="wmic.exe", process="wmic os get"))


def test_or_not_in_and_parentheses() -> None:
    search = 'a=1 (b=x OR b=y) NOT c IN ("*evil*", bad)'
    assert matches(search, event(a="1", b="y", c="good"))
    assert matches(search, event(a="1", b="x"))  # NOT over an absent field holds
    assert not matches(search, event(a="1", b="y", c="BAD"))
    assert not matches(search, event(a="1", b="z"))


def test_not_equal_needs_the_field() -> None:
    assert matches("a!=x", event(a="y"))
    assert not matches("a!=x", event())


def test_bare_terms_search_the_raw_text() -> None:
    assert matches(
        "EventCode=5861 Binding", event("...PossibleCause = Binding...", EventCode="5861")
    )
    assert not matches("EventCode=5861 Binding", event("Temporary", EventCode="5861"))


def test_quoted_values_keep_escaped_quotes_and_backslashes() -> None:
    search = r'consumer="NTEventLogEventConsumer=\"SCM\"" path="*\\dismhost.exe*"'
    evt = event(consumer='NTEventLogEventConsumer="SCM"', path="C:\\x\\dismhost.exe")
    assert matches(search, evt)


def test_numbers_compare_numerically_and_other_values_as_text() -> None:
    assert matches("count>=10", event(count="12"))
    assert not matches("count>=10", event(count="9"))  # as text, "9" > "10"
    assert matches("count>=10", event(count="many"))  # a side is not a number: "m" > "1"
    assert matches("version<b", event(version="a2"))
    assert not matches("version<b", event(version="c"))
    assert not matches("count>=10", event())  # an absent field compares to nothing


def test_macros_expand_recursively_with_arguments() -> None:
    assert expand_macros("`nested` | `ctime(firstTime)`", MACROS) == (
        'source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational" EventCode=1 '
        '| convert timeformat="%Y-%m-%dT%H:%M:%S" ctime(firstTime)'
    )


def test_comments_are_dropped_even_where_they_look_like_macros() -> None:
    search = "a=1 ```CIM alignment``` | eval b=a ``` a `nested` note ``` | stats count by b"
    plan = compile_search(search, MACROS)
    row = {"a": "x"}
    assert run_steps(plan.event_steps, row) and row["b"] == "x"


def test_eval_in_lists_values() -> None:
    assert evaluated('t=if(NOT u IN ("unknown", "-"), u, "none")', u="bob")["t"] == "bob"
    assert evaluated('t=if(NOT u IN ("unknown", "-"), u, "none")', u="-")["t"] == "none"


def test_pipes_inside_quotes_do_not_split_stages() -> None:
    assert split_stages('a=1 | rex field=M "(?<x>[^;|^$]+)" | stats count') == [
        "a=1",
        'rex field=M "(?<x>[^;|^$]+)"',
        "stats count",
    ]


def test_tstats_reads_datamodel_fields_and_renames_rows() -> None:
    plan = compile_search(
        "| tstats count min(_time) as firstTime from datamodel=Endpoint.Processes "
        "where Processes.process_name=wmic.exe by Processes.dest Processes.user "
        "| `drop_dm_object_name(Processes)` | `ctime(firstTime)`",
        MACROS,
    )
    evt = event(process_name="wmic.exe", _datamodel="Endpoint.Processes")
    assert plan.predicate.evaluate(evt)
    assert not plan.predicate.evaluate(event(process_name="wmic.exe"))
    assert [(g.row_name, g.event_field) for g in plan.group_by] == [
        ("Processes.dest", "dest"),
        ("Processes.user", "user"),
    ]
    row = {"Processes.dest": "h1", "Processes.user": "u", "firstTime": "0"}
    assert run_steps(plan.row_steps, row)
    assert row == {"dest": "h1", "user": "u", "firstTime": "1970-01-01T00:00:00"}


def test_rex_then_search_on_the_extracted_field() -> None:
    plan = compile_search(
        r'EventCode=5861 | rex field=Message "Consumer =\s+(?<consumer>[^;|^$]+)" '
        r'| search consumer!="NTEventLogEventConsumer=\"SCM Event Log Consumer\"" '
        "| stats count by ComputerName consumer",
        MACROS,
    )
    kept = {"Message": 'Namespace = x; Consumer = CommandLineEventConsumer="Evil"; P = y'}
    dropped = {"Message": 'Consumer = NTEventLogEventConsumer="SCM Event Log Consumer"; P'}
    assert (
        run_steps(plan.event_steps, kept) and kept["consumer"] == 'CommandLineEventConsumer="Evil"'
    )
    assert not run_steps(plan.event_steps, dropped)


def test_fillnull_without_fields_fills_the_stats_by_fields() -> None:
    plan = compile_search("a=1 | fillnull | stats count by dest Path", MACROS)
    row = {"dest": "h"}
    assert run_steps(plan.event_steps, row)
    assert row == {"dest": "h", "Path": "0"}


def test_table_without_stats_groups_by_its_fields() -> None:
    plan = compile_search(
        "`sysmon` EventCode=21 | rename host as dest | table _time, dest, user", MACROS
    )
    assert [g.row_name for g in plan.group_by] == ["dest", "user"]
    assert [a.output for a in plan.aggregations] == ["count", "firstTime", "lastTime"]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("a=1 | join x", "search stage 2 (join): unsupported command 'join'"),
        ("a=1 | `missing_macro`", "unknown macro `missing_macro`"),
        ("a=1 | `ctime`", "macro `ctime` takes 1 argument(s), got 0"),
        ("a=1 | rename a* as b | stats count", "use at most one * on both sides"),
        ('a=1 | rex field=x "(?<y>[a-"', "rex: bad regular expression"),
        ('a=1 | rex field=x "abc"', "names no group"),
        ("| tstats count from datamodel=Network_Traffic by dest", "unsupported datamodel"),
        ("a=1 | stats avg(x) by y", "unsupported stats function avg()"),
        ("a=1 | stats max(size) by y", "max() is supported on _time only"),
        ("a=(1", "search stage 1 (search): cannot parse"),
        ("a=1", "the search must end in stats, tstats or table"),
        ("a=1 | stats count | tstats count from datamodel=Endpoint.Processes", "tstats must be"),
    ],
)
def test_unsupported_searches_fail_with_their_stage(search: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_search(search, MACROS)
    assert message in str(caught.value)


UPSTREAM_SYSMON = Macro(  # security_content macros/sysmon.yml, unparenthesised (Apache-2.0)
    "sourcetype=XmlWinEventLog:Microsoft-Windows-Sysmon/Operational OR "
    "source=XmlWinEventLog:Microsoft-Windows-Sysmon/Operational OR "
    "source=Syslog:Linux-Sysmon/Operational"
)


def test_or_binds_tighter_than_and_in_search() -> None:
    assert not matches("a=1 OR b=2 c=3", event(a="1"))  # (a=1 OR b=2) AND c=3
    assert matches("a=1 OR b=2 c=3", event(b="2", c="3"))
    assert not matches("a=1 OR b=2 AND c=3", event(a="1"))
    assert matches("NOT a=1 OR b=2 c=3", event(a="2", c="3"))  # NOT binds tightest


def test_an_unparenthesised_upstream_macro_keeps_its_event_code() -> None:
    macros = {**MACROS, "sysmon": UPSTREAM_SYSMON}
    plan = compile_search("`sysmon` EventCode=21 | stats count", macros)
    wmi = event(source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational", EventCode="21")
    process = event(source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational", EventCode="1")
    assert plan.predicate.evaluate(wmi) and not plan.predicate.evaluate(process)


def test_where_binds_and_tighter_than_or() -> None:
    plan = compile_search("x=1 | where a=1 OR b=2 AND c=3 | stats count", MACROS)
    assert run_steps(plan.event_steps, {"a": "1"})
    assert not run_steps(plan.event_steps, {"b": "2"})
    assert run_steps(plan.event_steps, {"b": "2", "c": "3"})


def test_a_bare_word_matches_whole_tokens_of_the_raw_text() -> None:
    raw = r"<Data Name='Image'>C:\Windows\System32\wbem\WMIC.exe</Data> cmd=node:10.0.0.5"
    assert matches("wmic", event(raw))  # a token between breakers ("\" and ".")
    assert matches("wmic.exe", event(raw))  # a run of tokens
    assert not matches("mic", event(raw))  # inside a token
    assert not matches("Name", event("<Data Names='x'/>"))
    assert matches("mic*", event("x micro"))  # "*" lifts the boundary on its side
    assert not matches("mic*", event("wmicprvse"))
    assert matches("*mic", event("wmic"))
    assert matches("w*c", event("a wmic b")) and not matches("w*c", event("awmic"))
    assert matches("node", event(raw)) and matches("10.0.0.5", event(raw))


def test_a_bare_word_in_a_later_search_searches_the_raw_text() -> None:
    plan = compile_search("EventCode=1 | search NOT Evil | stats count by host", MACROS)
    row = {"EventCode": "1", "host": "h", "_raw": "<Data>evil.exe</Data>"}
    assert not run_steps(plan.event_steps, dict(row))
    assert run_steps(plan.event_steps, {**row, "_raw": "<Data>good.exe</Data>"})


def test_a_bare_word_after_stats_searches_the_row_values() -> None:
    plan = compile_search("EventCode=1 | stats count by host | search NOT srv01", MACROS)
    assert not run_steps(plan.row_steps, {"host": "srv01.corp", "count": "2"})
    assert run_steps(plan.row_steps, {"host": "ws07.corp", "count": "2"})


def test_backslash_escapes_apply_to_unquoted_values_too() -> None:
    search = r"process=*\\CCM\\ccmexec.exe* parent=C:\Windows\explorer.exe"
    evt = event(process=r"C:\Windows\CCM\ccmexec.exe /x", parent=r"C:\Windows\explorer.exe")
    assert matches(search, evt)  # "\\" is one backslash; "\W" stays as written


def where(condition: str, **fields: str) -> bool:
    """Return whether ``| where condition`` keeps a row of ``fields``."""
    plan = compile_search(f"x=1 | where {condition} | stats count", MACROS)
    return run_steps(plan.event_steps, dict(fields))


def test_where_compares_exactly_as_eval_does() -> None:
    assert where('process_name="WMIC.exe"', process_name="WMIC.exe")
    assert not where('process_name="wmic.exe"', process_name="WMIC.exe")  # case-sensitive
    assert not where('a="x*"', a="xyz") and where('a="x*"', a="x*")  # no wildcards
    assert where("count>=10", count="12") and not where("count>=10", count="9")
    assert where('version<"b"', version="a2")
    assert where("a=b", a="same", b="same")  # a bare word is a field


def test_where_drops_rows_whose_condition_is_null() -> None:
    assert not where('a="x"') and not where('NOT a="x"')  # a is null: so is the condition
    assert where('a="x" OR b="y"', b="y")  # OR: true if one side is
    assert not where('a="x" AND b="y"', b="y")


def test_where_functions() -> None:
    assert where('like(process, "%\\\\wmic.exe%")', process="C:\\w\\wmic.exe /node:x")
    assert not where('like(process, "wmic_exe")', process="wmic.exe.bak")
    assert where('like(process, "wmic_exe")', process="wmic.exe")  # _ is one character
    assert where('match(process, "(?i)/node:\\\\S+")', process="wmic /NODE:10.0.0.5 os get")
    assert where("isnull(user)") and not where("isnull(user)", user="bob")
    assert where("isnotnull(user)", user="bob")
    assert where('lower(name)="wmic.exe"', name="WMIC.EXE")
    assert where('upper(name)="WMIC.EXE"', name="wmic.exe")
    assert where("len(name)>5", name="wmic.exe") and not where("len(name)>8", name="wmic.exe")
    assert where('in(name, "a.exe", "wmic.exe")', name="wmic.exe")
    assert not where('in(name, "a.exe", "wmic.exe")', name="WMIC.exe")


def evaluated(assignments: str, **fields: str) -> dict[str, str]:
    """Return a row of ``fields`` after ``| eval assignments``."""
    plan = compile_search(f"x=1 | eval {assignments} | stats count", MACROS)
    row = dict(fields)
    assert run_steps(plan.event_steps, row)
    return row


def test_eval_assigns_in_turn_and_null_removes_the_field() -> None:
    row = evaluated('a=lower(p), b=a."!", p=null()', p="WMIC")
    assert row == {"a": "wmic", "b": "wmic!"}  # b sees a; p is removed


def test_eval_arithmetic_binds_as_in_splunk() -> None:
    assert evaluated("n=1+2*3")["n"] == "7"
    assert evaluated("n=(1+2)*3")["n"] == "9"
    assert evaluated("n=10-2-3")["n"] == "5"  # left to right
    assert evaluated("n=-c+1", c="4")["n"] == "-3"
    assert (
        evaluated('n=(mvcount(split(p,"`"))-1) + (mvcount(split(p, "^"))-1)', p="a`b`c^d")["n"]
        == "3"
    )


def test_eval_concatenates_with_a_dot_and_reads_dotted_and_quoted_field_names() -> None:
    assert evaluated('s="%".parent_process."%"', parent_process="a")["s"] == "%a%"
    assert evaluated("s='Processes.dest'.\"-\".Processes.user", **{
        "Processes.dest": "h", "Processes.user": "u"})["s"] == "h-u"  # fmt: skip
    assert evaluated("s=1.5")["s"] == "1.5"  # a number, not a concatenation


def test_eval_conditions_choose_values() -> None:
    search = 'level=CASE(match(l,"low"),1,match(l,"high"),3,true(),0)'
    assert evaluated(search, l="high")["level"] == "3"
    assert evaluated(search, l="other")["level"] == "0"
    assert evaluated("t=if(a >10 and a >= b, 1, 0)", a="11", b="5")["t"] == "1"  # and: any case
    assert evaluated("t=if(a >10 AND a >= b, 1, 0)", a="11", b="50")["t"] == "0"
    assert evaluated('t=if(NOT isnull(a) OR b="x", "y", "n")', b="x")["t"] == "y"


@pytest.mark.parametrize(
    ("stage", "problem"),
    [
        ('where cidrmatch("10.0.0.0/8", ip)', "unsupported function cidrmatch()"),
        ('where like(a, "x", "y")', "like() takes 2 argument(s), got 3"),
        ("where match(a, b)", "match() needs a quoted string as that argument"),
        ('where match(a, "(")', "match(): bad regular expression"),
        ("where a", "a is a value, not a condition"),
        ("where lower(a)", "lower() gives a value, not a condition"),
        ("where a = ", "cannot parse"),
        ("eval x=a=b", "fields cannot be assigned a boolean result"),
        ("eval x=isnull(a)", "isnull() gives a condition: fields cannot be assigned"),
        ("eval x=frobnicate(a)", "unsupported function frobnicate()"),
        ('eval x=if(a, "y", "n")', "a is a value, not a condition"),
        ("eval x=", "cannot parse"),
    ],
)
def test_where_and_eval_refuse_what_they_cannot_evaluate(stage: str, problem: str) -> None:
    with pytest.raises(RuleError) as refused:
        compile_search(f"x=1 | {stage} | stats count", MACROS)
    command = stage.split()[0]
    assert problem in str(refused.value) and f"search stage 2 ({command})" in str(refused.value)


def test_eval_after_stats_computes_on_the_result_row() -> None:
    plan = compile_search(
        'x=1 | stats count by dest | eval busy=if(count>=2, "yes", "no") | where busy="yes"',
        MACROS,
    )
    assert run_steps(plan.row_steps, {"dest": "h", "count": "2"})
    assert not run_steps(plan.row_steps, {"dest": "h", "count": "1"})


def test_by_time_span_becomes_the_window() -> None:
    plan = compile_search(
        "| tstats count from datamodel=Endpoint.Processes where Processes.process_name=a.exe "
        "by _time span=30m Processes.dest",
        MACROS,
    )
    assert plan.window_seconds == 1800
    assert [g.row_name for g in plan.group_by] == ["Processes.dest"]  # the span's buckets
    assert [span_seconds(s) for s in ("10s", "5m", "1h", "1d", "600")] == [
        10,
        300,
        3600,
        86400,
        600,
    ]
    with pytest.raises(RuleError, match="with by _time only"):
        compile_search("a=1 | stats count by dest span=1h", MACROS)


def test_aggregations_may_be_separated_by_commas() -> None:
    plan = compile_search("a=1 | stats count, min(_time) as firstTime, values(b) by dest", MACROS)
    assert [(a.function, a.output) for a in plan.aggregations] == [
        ("count", "count"),
        ("min", "firstTime"),
        ("values", "values(b)"),
    ]


def test_quoted_field_names_are_field_names() -> None:
    plan = compile_search(
        '| tstats count from datamodel=Endpoint.Processes where "Processes.process_name"=wmic.exe '
        "by Processes.dest",
        MACROS,
    )
    evt = event(_datamodel="Endpoint.Processes", process_name="WMIC.exe")
    assert plan.predicate.evaluate(evt)


def test_rename_takes_a_quoted_macro_argument_and_pairs_without_commas() -> None:
    macros = {**MACROS, "drop": Macro("rename $object$.* as *", ("object",))}
    plan = compile_search(
        "| tstats count from datamodel=Endpoint.Processes by Processes.dest Processes.user "
        '| `drop("Processes")` | rename dest as host user as account',
        macros,
    )
    row = {"Processes.dest": "h1", "Processes.user": "bob", "count": "1"}
    assert run_steps(plan.row_steps, row) and row == {"host": "h1", "account": "bob", "count": "1"}


def test_bucket_and_bin_make_time_buckets_the_window() -> None:
    for command in ("bucket span=5m _time", "bin _time span=5m"):
        plan = compile_search(f"a=1 | {command} | stats count by _time dest", MACROS)
        assert plan.window_seconds == 300 and [g.row_name for g in plan.group_by] == ["dest"]
    with pytest.raises(RuleError, match="only bucket/bin _time span"):
        compile_search("a=1 | bucket size span=5 | stats count by dest", MACROS)


def test_the_regex_command_filters_on_a_field_or_the_raw_text() -> None:
    plan = compile_search(
        r'a=1 | regex process="(?i)net\s+view" | regex user!="^svc_" | regex "evil" '
        "| stats count by dest",
        MACROS,
    )
    row = {"process": "NET  VIEW /all", "user": "bob", "_raw": "<x>evil</x>"}
    assert run_steps(plan.event_steps, dict(row))
    assert not run_steps(plan.event_steps, {**row, "user": "svc_backup"})
    assert run_steps(plan.event_steps, {k: v for k, v in row.items() if k != "user"})  # != on null
    assert not run_steps(plan.event_steps, {**row, "process": "net use"})
    assert not run_steps(plan.event_steps, {**row, "_raw": "<x>good</x>"})


def test_in_lists_tolerate_missing_and_stray_commas_as_splunk_does() -> None:
    assert matches('name IN (,"a.exe" "b.exe",)', event(name="B.exe"))
    assert not matches('name IN (,"a.exe" "b.exe",)', event(name="c.exe"))


def test_distinct_count_earliest_and_latest() -> None:
    plan = compile_search(
        "a=1 | stats distinct_count(p) earliest(_time) as first latest(_time) as last "
        "latest(p) as newest earliest(p) by dest",
        MACROS,
    )
    assert [(a.function, a.field, a.output) for a in plan.aggregations] == [
        ("dc", "p", "distinct_count(p)"),
        ("min", "_time", "first"),
        ("max", "_time", "last"),
        ("latest", "p", "newest"),
        ("earliest", "p", "earliest(p)"),
    ]


@pytest.mark.parametrize(
    ("search", "problem"),
    [
        ("a=1 | stats count | stats count", "search stage 3 (stats): only one stats/tstats per"
         " search is supported"),
        ("a=1 | tstats count from datamodel=Endpoint.Processes by Processes.dest",
         "search stage 2 (tstats): tstats must be the first command"),
        ("a=1 | stats count by dest span=1h", "search stage 2 (stats): span= is supported with"
         " by _time only"),
        ("a=1 | stats count by _time span=0m", "search stage 2 (stats): span=0m: use a whole"
         " number of s, m, h or d"),
        ("a=1 | stats min(b) by dest", "search stage 2 (stats): min() is supported on _time"
         " only"),
        ("a=1 | stats values by dest", "search stage 2 (stats): values() needs a field"),
        ("a=1 | stats median(b) by dest", "search stage 2 (stats): unsupported stats function"
         " median()"),
        ('a=1 | rex field=b "x" | stats count', "search stage 2 (rex): rex: the expression"
         " names no group (?<name>...)"),
        ("a=1 | rename a*b* as c*d* | stats count", "search stage 2 (rename): rename a*b* as"
         " c*d*: use at most one * on both sides"),
        ("`grow` | stats count", "macros: macros nest deeper than 10 levels"),
        ("`nope` | stats count", "macros: unknown macro `nope`"),
        ("`ctime(a, b)` | stats count", "macros: macro `ctime` takes 1 argument(s), got 2"),
        ("a=1 | frobnicate | stats count", "search stage 2 (frobnicate): unsupported command"
         " 'frobnicate'"),
        ("a=1", "search: the search must end in stats, tstats or table"),
    ],
)  # fmt: skip
def test_errors_say_exactly_where_and_what(search: str, problem: str) -> None:
    macros = {**MACROS, "grow": Macro("`grow` a=1")}
    with pytest.raises(RuleError) as refused:
        compile_search(search, macros)
    assert str(refused.value) == problem


def test_a_macro_with_arguments_is_found_by_its_arity_and_filled_in() -> None:
    macros = {"pair(2)": Macro("$a$=$b$ $a$!=none", ("a", "b"))}
    assert expand_macros("`pair(dest, ws1)` x", macros) == "dest=ws1 dest!=none x"


def test_a_pipe_inside_quotes_with_escaped_quotes_stays_in_its_stage() -> None:
    assert split_stages('a="x\\"|y" b=1 | stats count') == ['a="x\\"|y" b=1', "stats count"]
    assert split_stages('a="x\\\\" | stats count') == ['a="x\\\\"', "stats count"]


def row_after(search: str, row: dict[str, str]) -> dict[str, str]:
    """Return ``row`` after the steps that follow the stats of ``search``."""
    plan = compile_search(search, MACROS)
    assert run_steps(plan.row_steps, row)
    return row


def test_fillnull_fills_named_fields_or_else_the_group_by_fields() -> None:
    assert row_after(
        "a=1 | stats count by dest user | fillnull value=NA user x", {"dest": "h"}
    ) == {
        "dest": "h",
        "user": "NA",
        "x": "NA",
    }
    assert row_after("a=1 | stats count by dest user | fillnull", {"dest": "h"}) == {
        "dest": "h",
        "user": "0",
    }


def test_rex_reads_raw_by_default_and_convert_uses_splunk_s_default_format() -> None:
    plan = compile_search('a=1 | rex "n=(?<n>\\d+)" | stats count', MACROS)
    assert plan.predicate.evaluate(event("x n=42", a="1"))
    assert (
        row_after(
            "a=1 | stats count min(_time) as t by dest | convert ctime(t)", {"t": "1709640000"}
        )["t"]
        == "03/05/2024 12:00:00"
    )


def test_double_equals_and_quoted_field_names() -> None:
    assert matches("a==1", event(a="1")) and not matches("a==1", event(a="2"))
    assert matches('"a.b"=x', event(**{"a.b": "x"}))
    assert matches('"a\\"b"=x', event(**{'a"b': "x"}))
    row = {"Processes.dest": "h", "Processes.user": "u"}
    plan = compile_search('a=1 | stats count by Processes.dest | rename "Processes".* as *', MACROS)
    assert run_steps(plan.row_steps, row) and row == {"dest": "h", "user": "u"}


def test_tstats_reads_dataset_fields_by_their_event_names() -> None:
    plan = compile_search(
        "| tstats count from datamodel=Endpoint.Processes "
        'where "Processes.process_name"=wmic.exe Processes.user=bob by Processes.dest',
        MACROS,
    )
    fields = {"process_name": "WMIC.exe", "user": "bob", "_datamodel": "Endpoint.Processes"}
    assert plan.predicate.evaluate(event(**fields))
    assert not plan.predicate.evaluate(event(**{**fields, "_datamodel": "Endpoint.Registry"}))
    assert [(g.row_name, g.event_field) for g in plan.group_by] == [("Processes.dest", "dest")]


def test_stats_functions_of_eval_compute_per_event() -> None:
    plan = compile_search(
        'x=1 | stats count(eval(a="y")) as ys, dc(eval(upper(u))) as users, count(b) as bs,'
        " count by dest",
        MACROS,
    )
    assert [(a.function, a.output) for a in plan.aggregations] == [
        ("count", "ys"),
        ("dc", "users"),
        ("count", "bs"),
        ("count", "count"),
    ]
    row = {"a": "y", "u": "bob", "dest": "h"}
    assert run_steps(plan.event_steps, row)
    assert {row[a.field] for a in plan.aggregations[:2]} == {"1", "BOB"}
    row = {"a": "n", "dest": "h"}
    assert run_steps(plan.event_steps, row)
    assert plan.aggregations[0].field not in row  # false: not counted


def test_tstats_takes_quoted_names() -> None:
    plan = compile_search(
        '| tstats count from datamodel="Endpoint.Filesystem" where "Filesystem.file_path"=*Ryuk*'
        ' by "Filesystem.dest", "Filesystem.user"',
        MACROS,
    )
    assert [g.event_field for g in plan.group_by] == ["dest", "user"]
    evt = event(_datamodel="Endpoint.Filesystem", file_path=r"C:\x\RyukReadMe.txt")
    assert plan.predicate.evaluate(evt)
