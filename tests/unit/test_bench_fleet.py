"""The benchmark's fleet mix: real events of each kind, only their host and time varied."""

from __future__ import annotations

from bench.fleet import SECURITY_MIX, SYSMON_MIX, background, events, templates, vary
from pipeline.parse import parse_event

# A field the events of each kind carry as Windows writes them (Sysmon's and Security's schemas)
CARRIES = {
    ("sysmon", "1"): "CommandLine",
    ("sysmon", "3"): "DestinationIp",
    ("sysmon", "5"): "Image",
    ("sysmon", "7"): "ImageLoaded",
    ("sysmon", "10"): "GrantedAccess",
    ("sysmon", "11"): "TargetFilename",
    ("sysmon", "12"): "TargetObject",
    ("sysmon", "13"): "Details",
    ("sysmon", "22"): "QueryName",
    ("security", "4624"): "LogonType",
    ("security", "4688"): "NewProcessName",
}


def unvaried(payload: bytes) -> bytes:
    """Return ``payload`` with what the fleet varies, its host and its time, made the same."""
    return vary(payload, "host", 0.0)


def test_each_kind_the_mix_draws_has_real_events_of_its_own_layout() -> None:
    kinds = background()
    drawn = {("sysmon", code) for code in SYSMON_MIX} | {("security", c) for c in SECURITY_MIX}
    assert set(kinds) == drawn == set(CARRIES)
    for (source, code), found in kinds.items():
        assert len(found) == (7 if (source, code) == ("sysmon", "22") else 12)
        for payload in found:
            event = parse_event(payload)
            assert event.fields["EventID"] == code
            assert CARRIES[source, code] in event.fields, payload[:300]


def test_fleet_events_are_real_events_of_their_own_event_code() -> None:
    real = {kind: {unvaried(p) for p in found} for kind, found in background().items()}
    attacks = {unvaried(p) for p in templates()["attack"]}  # sprinkled in, of their own codes
    seen = set()
    for source, host, payload in events(3000):
        fields = parse_event(payload).fields
        assert fields["Computer"] == host
        kind = (source, fields["EventID"])
        if kind in real and unvaried(payload) not in attacks:
            assert unvaried(payload) in real[kind], payload[:300]
            seen.add(kind)
    assert seen == set(real)
