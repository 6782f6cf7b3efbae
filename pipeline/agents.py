"""The Faust app: topics, tables, the two agents and the intake service, wired together.

This is the only module that uses Faust, and it decides nothing: the aggregation and the risk
scoring are ``pipeline.stream``'s, the intake is ``pipeline.intake``'s.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
from confluent_kafka import Message
from faust.types import TableT
from mode import Service

from pipeline import metrics
from pipeline.health import AgentStatus, Health, IntakeStatus
from pipeline.intake import run_intake_process
from pipeline.kafka import first_offset, read_range
from pipeline.ocsf import RENDERERS
from pipeline.records import DEAD_LETTER, DEST_STATE, OBJECT_STATE
from pipeline.rejects import RejectReason, dead_letter_record
from pipeline.rules.loader import load_rules
from pipeline.settings import Settings
from pipeline.stream import Aggregation, EncodedTable, Output, Scoring, Step
from pipeline.watermark import MergedWatermark

STALE_TICKS = 30  # an intake silent this many tick intervals no longer vouches for its partitions
log = logging.getLogger(__name__)


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
    rules = {rule.id: rule for rule in load_rules(settings.rules_dir)}
    topics = settings.topics()
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
    # Every topic and table value is bytes: the records' own codecs decode them inside the
    # per-record containment.
    outputs = {
        Output.FINDINGS: app.topic(topics.findings, value_serializer="raw", internal=False),
        Output.RISK: app.topic(topics.risk, value_serializer="raw", internal=False),
        Output.INCIDENTS: app.topic(topics.incidents, value_serializer="raw", internal=False),
    }
    matches_topic = app.topic(topics.matches, value_serializer="raw", internal=False)
    dead_letter_topic = app.topic(topics.dead_letter, value_serializer="raw", internal=False)
    changelog = settings.topic_config()  # Faust creates the changelogs with these

    def table(name: str, partitions: int, value_type: type | None = bytes) -> TableT[str, Any]:
        """Declare a table; its values are records' JSON bytes (Faust: the raw serializer)."""
        return app.Table(
            name,
            partitions=partitions,
            value_type=value_type,
            extra_topic_configs=changelog,
        )

    groups = table("dest_to_rule_stats", matches_spec.partitions)
    objects = table("risk_object_to_contributions", topics.spec("wmiwatch.risk").partitions)
    partition_offsets = table("matches_partition_offsets", matches_spec.partitions, None)
    stale_after = STALE_TICKS * settings.tick_interval_seconds
    aggregation = Aggregation(
        rules,
        EncodedTable(groups, DEST_STATE),
        settings.window_policy(),
        RENDERERS[settings.output_format],
        lambda: MergedWatermark(stale_after, settings.max_event_future_seconds),
    )
    scoring = Scoring(EncodedTable(objects, OBJECT_STATE), settings.risk_policy())

    async def publish(step: Step) -> None:
        """Send the step's records and wait for every acknowledgement."""
        sent = [await outputs[r.output].send(key=r.key, value=r.value) for r in step.outgoing]
        await asyncio.gather(*sent)

    async def reject(
        topic: str, partition: int, offset: int, payload: bytes, error: Exception
    ) -> None:
        """Dead-letter one record of an internal topic that cannot be handled, and go on."""
        log.warning("dead-lettering %s[%d]@%d: %r", topic, partition, offset, error, exc_info=error)
        record = dead_letter_record(
            RejectReason.UNPROCESSABLE, repr(error), topic, partition, offset, payload
        )
        await (await dead_letter_topic.send(key=topic.encode(), value=DEAD_LETTER.encode(record)))
        metrics.aggregation_rejected_total.labels(topic).inc()

    async def handle(payload: bytes, partition: int, offset: int) -> None:
        """Handle one record of the matches topic; one it cannot handle is dead-lettered."""
        try:
            step = aggregation.handle(payload, partition, time.time())
        except Exception as error:  # the record's fault: nothing of it is published or kept
            aggregation.discard()
            await reject(topics.matches, partition, offset, payload, error)
            return
        await publish(step)
        aggregation.commit(step, time.time())

    async def skipped_records(partition: int, offset: int) -> list[Message]:
        """Re-read the records of ``partition`` the stream skipped before ``offset``.

        Faust 0.15 can commit past records it never delivered around restarts and rebalances
        (faust-streaming issue 312); the next offset the aggregation expects is kept in a
        changelog-backed table (a partition never aggregated expects its oldest record), so
        such a hole is seen and read again from the broker.
        """
        stored: int | None = partition_offsets.get(str(partition))
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
        """Hand each match and tick to the aggregation and publish what it returns."""
        with _counting_crashes("aggregate", health.agents):
            async for event in stream.events():
                partition, offset = event.message.partition, event.message.offset
                for skipped in await skipped_records(partition, offset):
                    await handle(skipped.value() or b"", partition, skipped.offset() or 0)
                await handle(event.value, partition, offset)
                partition_offsets[str(partition)] = offset + 1
                health.agents.handled()

    @app.agent(outputs[Output.RISK])
    async def score(stream: faust.StreamT[bytes]) -> None:
        """Hand each risk event to the scoring and publish the incidents it returns."""
        with _counting_crashes("score", health.agents):
            async for event in stream.events():
                try:
                    step = scoring.handle(event.value)
                except Exception as error:
                    message = event.message
                    await reject(topics.risk, message.partition, message.offset, event.value, error)
                    continue
                await publish(step)
                scoring.commit(step, time.time())

    def reindex(_app: Any, *_: Any, signal: Any, **__: Any) -> None:
        """Have the aggregation re-read which dests are open: its partitions changed."""
        aggregation.forget_index()

    app.on_partitions_assigned.connect(reindex)  # type: ignore[arg-type]  # mode's stub

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def observe() -> None:
        """Report table sizes, and whether this worker owns matches partitions (ticks due)."""
        metrics.table_keys.labels("dest_to_rule_stats").set(len(groups))
        metrics.table_keys.labels("risk_object_to_contributions").set(len(objects))
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
