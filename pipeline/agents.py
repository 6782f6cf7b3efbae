"""The Faust app: the intake service, and the agent that aggregates matches into findings.

This is the only module that uses Faust.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import ssl
import time
from datetime import datetime
from typing import Any

import faust
import orjson
from mode import Service

from pipeline import metrics
from pipeline.aggregate import Aggregator, StagedWrites
from pipeline.emit import build_risk_events
from pipeline.health import Health, IntakeStatus
from pipeline.intake import run_intake_process
from pipeline.kafka import first_offset, read_range
from pipeline.match import RuleMatch
from pipeline.ocsf import to_ocsf
from pipeline.risk import RiskScorer
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.watermark import MergedWatermark

STALE_TICKS = 30  # an intake silent this many tick intervals no longer vouches for its partitions


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
        topic_replication_factor=matches_spec.replication_factor,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.instance_id,
    )
    matches_topic = app.topic(topics.matches, value_serializer="json", internal=False)
    findings_topic = app.topic(topics.findings, value_serializer="json", internal=False)
    risk_topic = app.topic(topics.risk, value_serializer="json", internal=False)
    incidents_topic = app.topic(topics.incidents, value_serializer="json", internal=False)
    dest_to_rule_stats = app.Table(
        "dest_to_rule_stats", default=dict, partitions=matches_spec.partitions
    )
    risk_object_to_contributions = app.Table(
        "risk_object_to_contributions",
        default=dict,
        partitions=topics.spec("wmiwatch.risk").partitions,
    )
    partition_offsets = app.Table("matches_partition_offsets", partitions=matches_spec.partitions)
    staged = StagedWrites(dest_to_rule_stats)
    aggregator = Aggregator(rules_by_id, staged, settings.window_policy())
    scorer = RiskScorer(risk_object_to_contributions, settings.risk_policy())
    render = to_ocsf if settings.output_format == "ocsf" else dict
    watermarks: dict[int, MergedWatermark] = {}  # per matches partition, from its ticks
    stale_after = STALE_TICKS * settings.tick_interval_seconds

    async def publish(records: list[dict[str, Any]], ingested_at: float | None) -> None:
        """Send findings (and risk events of new ones), wait for acks, then write the table."""
        sent = []
        for record in records:
            rule = rules_by_id[record["rule_id"]]
            sent.append(await findings_topic.send(key=record["dest"], value=render(record)))
            metrics.findings_emitted_total.labels(rule.id, record["status"]).inc()
            if record["status"] != "new":
                continue
            risk_events = build_risk_events(rule, record)
            for risk in risk_events:
                sent.append(await risk_topic.send(key=risk["risk_object"], value=risk))
            metrics.risk_events_emitted_total.labels(rule.id).inc(len(risk_events))
            if ingested_at is not None:
                metrics.finding_latency_seconds.observe(time.time() - ingested_at)
        await asyncio.gather(*sent)
        staged.apply()

    async def handle(record: dict[str, Any], partition: int) -> None:
        """Count a match, or advance the partition's watermark on a tick; publish what is due."""
        merged = watermarks.setdefault(partition, MergedWatermark(stale_after))
        if record["type"] == "tick":
            watermark = merged.apply(record)
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
            due = aggregator.advance(watermark, time.time(), owned)
            ingested_at = None
        else:
            match = RuleMatch.from_record(record)
            if aggregator.is_redelivery(match):
                metrics.matches_redelivered_total.labels(match.rule_id).inc()
                return
            due = aggregator.add(match, merged.value, time.time(), {"partition": partition})
            metrics.matches_aggregated_total.labels(match.rule_id).inc()
            if aggregator.is_late(match, merged.value):
                metrics.late_matches_total.labels(match.rule_id).inc()
            ingested_at = record["ingested_at"]
        await publish(due, ingested_at)

    async def skipped_records(partition: int, offset: int) -> list[dict[str, Any]]:
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
        return [orjson.loads(record.value() or b"{}") for record in records]

    @app.agent(matches_topic)
    async def aggregate(stream: faust.StreamT[dict[str, Any]]) -> None:
        """Count matches into their dest's table entry; on ticks, close windows and update."""
        async for event in stream.events():
            partition, offset = event.message.partition, event.message.offset
            for record in await skipped_records(partition, offset):
                await handle(record, partition)
            await handle(event.value, partition)
            partition_offsets[str(partition)] = offset + 1

    @app.agent(risk_topic)
    async def score(stream: faust.StreamT[dict[str, Any]]) -> None:
        """Sum risk per risk object over event time and send incidents as they become due."""
        async for risk in stream:
            moment = datetime.fromisoformat(risk["time"]).timestamp()
            for incident in scorer.add(risk, moment):
                await incidents_topic.send(key=incident["risk_object"], value=incident)
                metrics.incidents_emitted_total.labels(incident["kind"]).inc()

    health.recovered = app.tables.recovery.completed.is_set  # type: ignore[attr-defined]
    app.service(_intake_service(settings, health.intake))
    return app


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
