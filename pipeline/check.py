"""``wmiwatch check``: settings, rules, broker, topics and the principal's rights, one line each."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclOperation,
    AdminClient,
    TopicDescription,
)
from pydantic import ValidationError

from pipeline.kafka import watched_admin
from pipeline.rules.errors import RuleErrors
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings, problems, unknown_variables
from pipeline.topics import TopicSpec

OPERATIONS = {"read": AclOperation.READ, "write": AclOperation.WRITE}


class Check(NamedTuple):
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str


def run_checks(
    environ: Mapping[str, str], overrides: Mapping[str, object], timeout: float = 15.0
) -> Iterator[Check]:
    """Yield each check's outcome; later checks need the earlier ones to pass."""
    unknown = unknown_variables(environ)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        yield Check("settings", False, "; ".join(unknown + problems(error)))
        return
    yield Check("settings", not unknown, "; ".join(unknown) or "valid")
    yield _rules(settings)
    admin, refused = watched_admin(settings)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as error:
        admin.poll(0)  # serve the error callback
        reason = refused[0].str() if refused else error.args[0].str()
        yield Check("broker", False, f"{settings.bootstrap_servers}: {reason}")
        return
    brokers = len(metadata.brokers)
    found = f"{settings.bootstrap_servers}: cluster {metadata.cluster_id}, {brokers} broker(s)"
    yield Check("broker", True, found)
    yield from _topics(settings, admin, timeout)


def _rules(settings: Settings) -> Check:
    try:
        rules = load_rules(settings.rules_dir)
    except RuleErrors as errors:
        return Check("rules", False, "; ".join(map(str, errors.errors)))
    return Check("rules", True, f"{len(rules)} rules compiled from {settings.rules_dir}")


def _topics(settings: Settings, admin: AdminClient, timeout: float) -> Iterator[Check]:
    topics = settings.topics()
    specs = {topics.name(spec.name): spec for spec in topics.deployed(raw=True)}
    futures = admin.describe_topics(
        TopicCollection(list(specs)), include_authorized_operations=True, request_timeout=timeout
    )
    for name, future in futures.items():
        try:
            description = future.result()
        except KafkaException as error:
            yield Check(f"topic {name}", False, _missing(error.args[0]))
            continue
        yield _shape(settings, specs[name], description)
        yield _access(specs[name], description)


def _missing(error: KafkaError) -> str:
    if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return "the principal may not describe it (grant it ACLs)"
    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return "missing: create it (wmiwatch topics create, or the KafkaTopics in k8s/kafka)"
    return str(error.str())


def _shape(settings: Settings, spec: TopicSpec, description: TopicDescription) -> Check:
    partitions = len(description.partitions)
    replicas = min(len(p.replicas) for p in description.partitions)
    found = f"partitions {partitions}, replication {replicas}"
    if spec.role == "raw":  # another team's topic: any shape will do
        return Check(f"topic {description.name}", True, found)
    wrong = [
        f"expected {what} {want}"
        for what, want, have in (
            ("partitions", spec.partitions, partitions),
            ("replication", settings.replication_factor, replicas),
        )
        if want != have
    ]
    return Check(f"topic {description.name}", not wrong, "; ".join([found, *wrong]))


def _access(spec: TopicSpec, description: TopicDescription) -> Check:
    needed = list(spec.worker_access)
    granted = description.authorized_operations
    name = f"access {description.name}"
    if granted is None:
        return Check(name, True, f"needs {'+'.join(needed)}; the broker reports no ACLs")
    missing = [access for access in needed if OPERATIONS[access] not in granted]
    if missing:
        return Check(name, False, f"may not {' or '.join(missing)} (grant it ACLs)")
    return Check(name, True, f"may {' and '.join(needed)}")
