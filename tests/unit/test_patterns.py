"""Rules' regular expressions run on RE2 (linear time on endpoint values, PCRE's syntax), and
those only a backtracking engine runs on ``regex``, each call bounded in time."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.policy import PATTERN_SECONDS
from pipeline.rules.errors import RuleError
from pipeline.rules.patterns import Bounded, TimeBudget, Undecided, pcre

# From splunk/security_content (Apache-2.0): detections/endpoint/
# suspicious_process_executed_from_container_file.yml, its `regex` and `rex` (as the rule file
# holds them, after SPL's unquoting).
CONTAINER_REGEX = (
    r"(?i).*(ZIP|ISO|IMG|CAB|TAR|GZ|RAR|7Z)\\.+\.(BAT|BIN|CAB|CMD|COM|CPL|EX_|EXE|GADGET|INF1|"
    r"INS|INX||HTM|HTML|ISU|JAR|JOB|JS|JSE|LNK|MSC|MSI|MSP|MST|PAF|PIF|PS1|REG|RGS|SCR|SCT|SHB|"
    r'SHS|U3P|VB|VBE|VBS|VBSCRIPT|WS|WSF|WSH)"?$'
)
CONTAINER_REX = (
    r"(?i).+\\(?<file_name>[^\\]+\.(ZIP|ISO|IMG|CAB|TAR|GZ|RAR|7Z))\\((.+\\)+)?"
    r"(?<process_name>.+\.(BAT|BIN|CAB|CMD|COM|CPL|EX_|EXE|JS|LNK|MSI|PS1|VBS))\"?$"
)
# windows_unsigned_dll_side_loading_in_same_process_path.yml: run on every unsigned image load
# (Sysmon 7) outside the system folders, on its Image and ImageLoaded.
FOLDER_REX = r"(?<ImageFolderPath>.+\\)"
# Shapes the imported rules use: alternations, classes, counted and nested repeats, groups.
CORPUS_SHAPES = (
    CONTAINER_REGEX,
    CONTAINER_REX,
    r"(?<name>[^\\]+)\.exe$",
    r"-(e|en|enc|enco|encod|encode|encoded|encodedc|encodedcommand)\s+[A-Za-z0-9+/=]{20,}",
    r"(?i)\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b",
    r"[a-z]{3,}\.(dll|exe)(\s|$)",
)


def test_named_groups_are_pcre_s() -> None:
    pattern = pcre(r"(?<user>\w+)@(?<host>[a-z.]+)", "rex")
    assert dict(pattern.groupindex) == {"user": 1, "host": 2}
    found = pattern.search("mail ann@corp.example")
    assert found is not None and found.groupdict() == {"user": "ann", "host": "corp.example"}


# The lookaround of the four upstream detections RE2 cannot run (as their rule files hold them):
# windows_alternate_datastream___base64_content.yml and ___executable_content.yml (`regex`),
# ___process_execution.yml (`regex`), windows_known_abused_dll_loaded_suspiciously.yml
# (`replace()`).
UPSTREAM_LOOKAROUND = (
    r"(?<!\/)\b\w+(\.\w+)?:\w+(\.\w+)?$",
    r"(\b)\w+(\.\w+)?:\w+(\.\w{2,4})(?!\.)(\b|\s|&)",
    r"(.*\\)(?=.*(\.\w*)$|(\w+)$)",
)
BACKTRACKING_ONLY = [r"(?<!/)\bx", r"(?<=n)@", r"x(?!\.)", r"x(?=y)", r"(a)\1"]
EXPONENTIAL = r"^(a|aa)+(?!a)$"  # on "a" * 40 + "b": fib(40) paths, seconds in any engine


@pytest.mark.parametrize(
    "source",
    BACKTRACKING_ONLY,
    ids=["lookbehind-not", "lookbehind", "lookahead-not", "lookahead", "backreference"],
)
def test_what_only_backtracking_can_run_runs_bounded(source: str) -> None:
    pattern = pcre(source, "regex")
    assert isinstance(pattern, Bounded) and pattern.seconds == PATTERN_SECONDS
    for value in ("a x", "/x", "n@", "@", "x.", "xy", "x", "aa", "ab"):
        theirs = re.search(source, value)
        found = pattern.search(value)
        assert (None if found is None else found.group(0)) == (theirs and theirs.group(0))


@pytest.mark.timeout(20)
def test_a_bounded_expression_past_its_time_raises_undecided_naming_the_command() -> None:
    value = "a" * 40 + "b"
    for command, call in (
        ("regex", lambda p: p.search(value)),
        ("replace()", lambda p: p.sub(lambda found: "", value)),
    ):
        with pytest.raises(Undecided, match=rf"^{re.escape(command)}: .* ran past 0.05 s on a va"):
            call(pcre(EXPONENTIAL, command))


def test_a_spent_budget_runs_no_bounded_expression_until_time_refills_it() -> None:
    budget = TimeBudget(share=0.5, burst=0.01)
    pattern = dataclasses.replace(pcre(EXPONENTIAL, "regex"), budget=budget)
    with pytest.raises(Undecided, match="ran past"):
        pattern.search("a" * 40 + "b")  # 50 ms spent of 10
    with pytest.raises(Undecided, match=r"^regex: '.*' not run: the process's time for these"):
        pattern.search("aa")
    time.sleep(0.5)  # half of it comes back: 250 ms, more than any one call overdraws
    assert pattern.search("aa") is not None


@pytest.mark.timeout(20)
def test_a_flood_of_crafted_values_takes_at_most_the_budget_s_share_of_the_time() -> None:
    budget = TimeBudget(share=0.1, burst=0.1)
    pattern = dataclasses.replace(pcre(EXPONENTIAL, "regex"), budget=budget)
    calls, started = [], time.monotonic()
    while time.monotonic() - started < 1.0:
        call = time.monotonic()
        with pytest.raises(Undecided) as undecided:
            pattern.search("a" * 40 + "b")
        if "ran past" in str(undecided.value):
            calls.append(time.monotonic() - call)
    elapsed = time.monotonic() - started
    # the burst, a tenth of the time passed, and the one call that overdraws what is left
    assert len(calls) >= 2 and sum(calls) <= 0.1 + 0.1 * elapsed + max(calls) + 0.001
    assert sum(calls) < elapsed / 2


def test_a_bounded_expression_is_ascii_only_as_splunk_s_pcre() -> None:
    pattern = pcre(r"(?<=x)\w+", "regex")
    assert pattern.search("xé") is None
    found = pattern.search("xab")
    assert found is not None and found.group(0) == "ab"


def test_an_expression_neither_engine_runs_is_refused_with_the_reason() -> None:
    with pytest.raises(RuleError, match=r"^regex: bad regular expression: invalid group ref"):
        pcre(r"(a)\2", "regex")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("source", UPSTREAM_LOOKAROUND, ids=["ads", "ads-process", "dll-name"])
def test_a_crafted_value_holds_an_upstream_lookaround_no_longer_than_its_bound(
    source: str,
) -> None:
    pattern = pcre(source, "regex")
    for chunk in ("a", "a:", "a.", "C\\", "a.b\\", "\\x.dll"):
        value = chunk * (1_000_000 // len(chunk))
        started = time.monotonic()
        try:
            pattern.search(value)
            pattern.sub(lambda found: "", value)
        except Undecided:
            pass
        assert time.monotonic() - started < 10 * PATTERN_SECONDS


@given(
    st.sampled_from(UPSTREAM_LOOKAROUND),
    st.text(alphabet="abcxyzdll.:\\/ &_0123456789", max_size=60),
)
def test_a_bounded_expression_finds_what_python_s_re_finds(source: str, value: str) -> None:
    ours = pcre(source, "regex").search(value)
    theirs = re.compile(source, re.ASCII).search(value)
    assert (ours is None) == (theirs is None)
    if ours is not None and theirs is not None:
        assert ours.group(0) == theirs.group(0)


def test_a_malformed_expression_is_refused() -> None:
    with pytest.raises(RuleError, match=r"^rex: bad regular expression: missing \)") as caught:
        pcre("(", "rex")
    assert "RE2" not in str(caught.value)  # said only of what RE2 cannot run


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "source", [CONTAINER_REGEX, CONTAINER_REX, FOLDER_REX], ids=["regex", "rex", "folder"]
)
def test_a_crafted_value_cannot_stall_an_upstream_expression(source: str) -> None:
    """Python's ``re`` took 98 s on 3,000 characters of ``a.zip\\`` with the first, growing
    with their cube (``(.+\\)+`` in the second backtracks exponentially, the third is
    quadratic): on a megabyte none would end. RE2 answers at once."""
    pattern = pcre(source, "regex")
    for chunk in ("m", "D", "C\\", "a.zip\\", "x.ISO\\b\\"):
        value = chunk * (1_000_000 // len(chunk))
        found = pattern.search(value)
        if source == FOLDER_REX and "\\" in chunk:  # greedy: up to the last backslash
            assert found is not None and found.group(0) == value[: value.rindex("\\") + 1]
        else:
            assert found is None  # no file extension at the end, no backslash


@given(
    st.sampled_from(CORPUS_SHAPES),
    st.text(alphabet='abcdefzipisoexedllISOZIP\\/.-_ \t=+0123456789"', max_size=80),
)
def test_re2_finds_what_python_s_re_finds_on_ascii_values(source: str, value: str) -> None:
    ours = pcre(source, "regex").search(value)
    theirs = re.compile(source.replace("(?<", "(?P<")).search(value)
    assert (ours is None) == (theirs is None)
    if ours is not None and theirs is not None:
        assert ours.group(0) == theirs.group(0)
        assert ours.groupdict() == theirs.groupdict()
