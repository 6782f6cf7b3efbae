"""The Faust app: the intake service, and the agent that aggregates matches into findings.

This is the only module that uses Faust.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import faust
import orjson
from confluent_kafka import Message
from mode import Service

from pipeline import metrics
from pipeline.aggregate import Aggregator, StagedWrites
from pipeline.emit import build_risk_events
from pipeline.health import AgentStatus, Health, IntakeStatus
from pipeline.intake import run_intake_process
from pipeline.kafka import first_offset, read_range
from pipeline.match import RuleMatch
from pipeline.ocsf import to_ocsf
from pipeline.rejects import RejectReason, dead_letter_record
from pipeline.risk import RiskScorer
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.watermark import MergedWatermark

STALE_TICKS = 30  # an intake silent this many tick intervals no longer vouches for its partitions
RISK = "risk"
log = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """One record to publish, with what its metric counts: a finding's status, or ``risk``."""

    topic: faust.types.TopicT
    key: str
    value: Any
    rule_id: str
    kind: str


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Return Faust credentials matching the librdkafka security settings."""
    if settings.security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=settings.ssl_ca_location)
    if settings.ssl_certificate_location:
        context.load_cert_chain(settings.ssl_certificate_location, settings.ssl_key_location)
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=password,
        mechanism=settings.sasl_mechanism,
        ssl_context=context if settings.security_protocol == "SASL_SSL" else None,
    )


def create_app(settings: Settings, health: Health) -> faust.App:
    """Build the worker app: rules, topics, tables, the two agents and the intake service."""
    rules = load_rules(settings.rules_dir)
    topics = settings.topics()
    rules_by_id = {rule.id: rule for rule in rules}
    metrics.rules_loaded.set(len(rules))
    matches_spec = topics.spec("wmiwatch.matches")
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store=settings.table_store,
        datadir=str(settings.data_dir),
        web_enabled=False,
        topic_partitions=matches_spec.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.instance_id,
    )
    # Internal topics are read as bytes and decoded inside the per-record containment.
    matches_topic = app.topic(topics.matches, value_serializer="raw", internal=False)
    findings_topic = app.topic(topics.findings, value_serializer="json", internal=False)
    risk_topic = app.topic(topics.risk, value_serializer="raw", internal=False)
    incidents_topic = app.topic(topics.incidents, value_serializer="json", internal=False)
    dead_letter_topic = app.topic(topics.dead_letter, value_serializer="raw", internal=False)
    changelog = settings.topic_config()  # Faust creates the changelogs with these
    dest_to_rule_stats = app.Table(
        "dest_to_rule_stats",
        default=dict,
        partitions=matches_spec.partitions,
        extra_topic_configs=changelog,
    )
    risk_object_to_contributions = app.Table(
        "risk_object_to_contributions",
        default=dict,
        partitions=topics.spec("wmiwatch.risk").partitions,
        extra_topic_configs=changelog,
    )
    partition_offsets = app.Table(
        "matches_partition_offsets",
        partitions=matches_spec.partitions,
        extra_topic_configs=changelog,
    )
    staged = StagedWrites(dest_to_rule_stats)
    aggregator = Aggregator(rules_by_id, staged, settings.window_policy())
    scorer = RiskScorer(risk_object_to_contributions, settings.risk_policy())
    render = to_ocsf if settings.output_format == "ocsf" else dict
    watermarks: dict[int, MergedWatermark] = {}  # per matches partition, from its ticks
    stale_after = STALE_TICKS * settings.tick_interval_seconds

    def outgoing(due: list[dict[str, Any]]) -> list[Outgoing]:
        """Return every record due: the findings, and the risk events of new ones."""
        records = []
        for finding in due:
            rule_id, status = finding["rule_id"], finding["status"]
            records.append(
                Outgoing(findings_topic, finding["dest"], render(finding), rule_id, status)
            )
            if status == "new":
                for risk in build_risk_events(rules_by_id[rule_id], finding):
                    value = orjson.dumps(risk)
                    records.append(Outgoing(risk_topic, risk["risk_object"], value, rule_id, RISK))
        return records

    async def publish(records: list[Outgoing], ingested_at: float | None) -> None:
        """Send the records, wait for every acknowledgement, then write the table."""
        sent = [await r.topic.send(key=r.key, value=r.value) for r in records]
        await asyncio.gather(*sent)
        staged.apply()
        for record in records:
            if record.kind == RISK:
                metrics.risk_events_emitted_total.labels(record.rule_id).inc()
                continue
            metrics.findings_emitted_total.labels(record.rule_id, record.kind).inc()
            if record.kind == "new" and ingested_at is not None:
                metrics.finding_latency_seconds.observe(time.time() - ingested_at)

    async def reject(
        topic: str, partition: int, offset: int, payload: bytes, error: Exception
    ) -> None:
        """Dead-letter one record of an internal topic that cannot be handled, and go on."""
        log.warning("dead-lettering %s[%d]@%d: %r", topic, partition, offset, error)
        record = dead_letter_record(
            RejectReason.UNPROCESSABLE, repr(error), topic, partition, offset, payload
        )
        await (await dead_letter_topic.send(key=topic.encode(), value=orjson.dumps(record)))
        metrics.aggregation_rejected_total.labels(topic).inc()

    def decide(record: dict[str, Any], partition: int) -> tuple[list[dict[str, Any]], float | None]:
        """Count a match, or advance the partition's watermark on a tick; return what is due."""
        merged = watermarks.setdefault(
            partition, MergedWatermark(stale_after, settings.max_event_future_seconds)
        )
        if record["type"] == "tick":
            watermark = merged.apply(record, time.time())
            metrics.event_time_watermark_seconds.set(max(w.value for w in watermarks.values()))
            metrics.raw_partitions_silent.set(max(w.silent for w in watermarks.values()))
            metrics.table_keys.labels("dest_to_rule_stats").set(len(dest_to_rule_stats))
            metrics.table_keys.labels("risk_object_to_contributions").set(
                len(risk_object_to_contributions)
            )
            owned = [
                dest
                for dest, groups in dest_to_rule_stats.items()
                if any(g.get("partition") == partition for g in groups.values())
            ]
            return aggregator.advance(watermark, time.time(), owned), None
        match = RuleMatch.from_record(record)
        if aggregator.is_redelivery(match):
            metrics.matches_redelivered_total.labels(match.rule_id).inc()
            return [], None
        due = aggregator.add(match, merged.value, time.time(), {"partition": partition})
        metrics.matches_aggregated_total.labels(match.rule_id).inc()
        if aggregator.is_late(match, merged.value):
            metrics.late_matches_total.labels(match.rule_id).inc()
        return due, float(record["ingested_at"])

    async def handle(payload: bytes, partition: int, offset: int) -> None:
        """Handle one record of the matches topic; one it cannot handle is dead-lettered."""
        try:
            due, ingested_at = decide(orjson.loads(payload), partition)
            records = outgoing(due)
        except Exception as error:  # the record's fault: nothing of it is published or kept
            staged.discard()
            await reject(topics.matches, partition, offset, payload, error)
            return
        await publish(records, ingested_at)

    async def skipped_records(partition: int, offset: int) -> list[Message]:
        """Re-read the records of ``partition`` the stream skipped before ``offset``.

        Faust 0.15 can commit past records it never delivered around restarts and rebalances
        (faust-streaming issue 312); the next offset the aggregation expects is kept in a
        changelog-backed table (a partition never aggregated expects its oldest record), so
        such a hole is seen and read again from the broker.
        """
        stored = partition_offsets.get(str(partition))
        expected = (  # a partition never aggregated here expects all it holds
            stored
            if stored is not None
            else await asyncio.to_thread(first_offset, settings, topics.matches, partition)
        )
        if offset <= expected:
            return []
        records = await asyncio.to_thread(
            read_range, settings, topics.matches, partition, expected, offset
        )
        metrics.matches_reread_total.inc(len(records))
        return records

    @app.agent(matches_topic)
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        """Count matches into their dest's table entry; on ticks, close windows and update."""
        with _counting_crashes("aggregate", health.agents):
            async for event in stream.events():
                partition, offset = event.message.partition, event.message.offset
                for skipped in await skipped_records(partition, offset):
                    await handle(skipped.value() or b"", partition, skipped.offset() or 0)
                await handle(event.value, partition, offset)
                partition_offsets[str(partition)] = offset + 1
                health.agents.handled()

    @app.agent(risk_topic)
    async def score(stream: faust.StreamT[bytes]) -> None:
        """Sum risk per risk object over event time and send incidents as they become due."""
        with _counting_crashes("score", health.agents):
            async for event in stream.events():
                try:
                    risk = orjson.loads(event.value)
                    incidents = scorer.add(risk, datetime.fromisoformat(risk["time"]).timestamp())
                except Exception as error:
                    message = event.message
                    await reject(topics.risk, message.partition, message.offset, event.value, error)
                    continue
                for incident in incidents:
                    await incidents_topic.send(key=incident["risk_object"], value=incident)
                    metrics.incidents_emitted_total.labels(incident["kind"]).inc()

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def watch_assignment() -> None:
        """Tell health whether this worker owns matches partitions (so ticks must arrive)."""
        assigned = app.consumer.assignment()
        health.agents.assigned(any(tp.topic == topics.matches for tp in assigned))

    health.recovered = app.tables.recovery.completed.is_set  # type: ignore[attr-defined]
    app.service(_intake_service(settings, health.intake))
    return app


@contextmanager
def _counting_crashes(agent: str, status: AgentStatus) -> Iterator[None]:
    """Count an exception escaping an agent's loop (Faust restarts the agent) and re-raise it."""
    try:
        yield
    except Exception:
        status.crashed()
        metrics.agent_crashes_total.labels(agent).inc()
        raise


def _intake_service(settings: Settings, status: IntakeStatus) -> type[Service]:
    spawn = multiprocessing.get_context("spawn")

    class IntakeService(Service):
        """Run the batched intake in a child process; its exit crashes the worker."""

        halt = spawn.Event()

        async def on_start(self) -> None:
            self.process = spawn.Process(
                target=run_intake_process,
                args=(settings, status, self.halt, logging.getLogger().getEffectiveLevel()),
                name="wmiwatch-intake",
                daemon=True,
            )
            self.process.start()

        @Service.task
        async def _watch(self) -> None:
            while not self.should_stop:
                if not self.process.is_alive() and not self.halt.is_set():
                    code = self.process.exitcode
                    await self.crash(RuntimeError(f"intake process exited with code {code}"))
                    return
                await self.sleep(1.0)

        async def on_stop(self) -> None:
            self.halt.set()
            await asyncio.get_running_loop().run_in_executor(None, self.process.join)

    return IntakeService
