"""The Faust app: the two stages' agents, their commits and rebalances, and the intake service.

This is the only module that uses Faust, and it decides nothing: the aggregation and the risk
scoring are ``pipeline.stream``'s, their state and commits ``pipeline.transactional``'s, the
intake is ``pipeline.intake``'s. Faust delivers the records and runs the consumer group.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.process
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, get_args

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message, TransportT
from mode import Service

from pipeline import __version__, metrics
from pipeline.health import AgentStatus, Health, IntakeStatus
from pipeline.intake import STACKS_SIGNAL, run_intake_process
from pipeline.ocsf import RENDERERS
from pipeline.records import DEAD_LETTER, DEST_STATE, OBJECT_STATE, IncidentKind, Status
from pipeline.rejects import dead_letter_record
from pipeline.rules.loader import load_rules
from pipeline.rules.model import Rule
from pipeline.settings import Settings
from pipeline.state import MATCHES_POSITION, RISK_BATCHES_POSITION, PartitionedTable
from pipeline.stream import Aggregation, Decisions, EncodedTable, Output, Rejected, Scoring
from pipeline.transactional import Outbound, Stage
from pipeline.watermark import MergedWatermark

STALE_TICKS = 30  # an intake silent this many tick intervals no longer vouches for its partitions
# Records a stage may hold read and not yet handled. A matches or risk batch is up to 256 KiB:
# Faust's default (4,096) reads a backlog into the process whole, up to a GiB; 64 hold at most
# 16 MiB, and fetching resumes when 25 are left. 16 paused the intake's small records too and
# left the exactly-once worker's last matches a second behind its intake.
READ_AHEAD_RECORDS = 64
# The Faust process's event loop shares the GIL with Faust's consumer thread and the stages'
# commit threads, and each librdkafka call lets it go: with Python's 5 ms switch interval the
# loop waited longer to get it back (docs/performance.md, twentieth round).
SWITCH_INTERVAL_SECONDS = 0.001
# Faust's fetch loop waits up to 1 s for records of the partitions it reads; a partition whose
# read-ahead drained is read again only when that wait ends, its agent idle meanwhile.
FETCH_WAIT_SECONDS = 0.05
STACKS_SECONDS = 1.0  # given to the intakes to write their stacks before they are killed
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


class CommittedReadingApp(faust.App):
    """A Faust app whose consumer reads only committed records (``read_committed``).

    Faust reads uncommitted records unless it runs its own exactly-once mode; the intake and
    the stages write in transactions, so a record of an aborted one must never be handled.
    """

    def _new_transport(self) -> TransportT:
        return _CommittedTransport(self.conf.broker_consumer, self)


class _CommittedConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        created = super()._create_worker_consumer(transport)
        created._isolation_level = "read_committed"  # aiokafka reads it when the consumer starts
        return created


class _CommittedConsumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> _CommittedConsumerThread:
        return _CommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Fetch records, waiting at most ``FETCH_WAIT_SECONDS`` for them."""
        return super().getmany(min(timeout, FETCH_WAIT_SECONDS))


class _CommittedTransport(aiokafka_driver.Transport):
    Consumer = _CommittedConsumer


def create_app(settings: Settings, health: Health) -> faust.App:
    """Build the worker app: rules, topics, the two stages, their agents and the intake."""
    rules = {rule.id: rule for rule in load_rules(settings.rules_dir)}
    topics = settings.topics()
    export_info(rules.values())
    app = CommittedReadingApp(
        settings.group_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        datadir=str(settings.data_dir),
        web_enabled=False,
        stream_buffer_maxsize=READ_AHEAD_RECORDS,
        topic_partitions=topics.spec("wmiwatch.matches").partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.member_id((topics.matches, topics.risk_batches)),
    )
    outputs = {
        Output.FINDINGS: topics.findings,
        Output.RISK: topics.risk,
        Output.RISK_BATCHES: topics.risk_batches,
        Output.INCIDENTS: topics.incidents,
    }
    groups, objects = PartitionedTable(), PartitionedTable()
    stale_after = STALE_TICKS * settings.tick_interval_seconds
    aggregation = Aggregation(
        rules,
        EncodedTable(groups, DEST_STATE),
        settings.window_policy(),
        RENDERERS[settings.output_format],
        lambda: MergedWatermark(stale_after, settings.max_event_future_seconds),
        topics.spec("wmiwatch.risk-batches").partitions,
        settings.max_open_dests,
    )
    scoring = Scoring(EncodedTable(objects, OBJECT_STATE), settings.risk_policy())
    aggregating = Stage(
        settings,
        "aggregation",
        topics.matches,
        topics.name("wmiwatch.aggregation-state"),
        MATCHES_POSITION,
        groups,
        lambda partition: aggregation.forget_index(),  # its open groups join (or leave) the index
    )
    scoring_stage = Stage(
        settings,
        "scoring",
        topics.risk_batches,
        topics.name("wmiwatch.risk-state"),
        RISK_BATCHES_POSITION,
        objects,
        lambda partition: scoring.forget_index(),  # its objects join (or leave) the schedule
    )
    decisions: dict[str, Decisions] = {"aggregation": aggregation, "scoring": scoring}
    stages = (aggregating, scoring_stage)

    def handle(stage: Stage, source: TP, offset: int, payload: bytes) -> None:
        """Hand one record to its stage's decisions and send what they return; one that
        cannot be handled, or a part of it, is dead-lettered (in the same transaction)."""
        decide = decisions[stage.name]
        try:
            step = decide.handle(payload, source.partition, time.time())
        except Exception as error:  # the record's fault: nothing of it is published or kept
            decide.discard()
            log.warning("dead-lettering %s[%d]@%d: %r", *source, offset, error, exc_info=error)
            reject(stage, source, offset, Rejected(payload, repr(error)))
        else:
            for out in step.outgoing:
                topic, key = outputs[out.output], out.key.encode()
                stage.produce(source.partition, Outbound(topic, key, out.value, out.partition))
            for rejected in step.rejected:
                log.warning("dead-lettering part of %s[%d]@%d: %s", *source, offset, rejected.error)
                reject(stage, source, offset, rejected)
            decide.commit(step, time.time())
        stage.handled(source.partition, offset)

    def reject(stage: Stage, source: TP, offset: int, rejected: Rejected) -> None:
        """Send ``rejected`` (a record read at ``offset`` of ``source``, or part of it) to the
        dead-letter topic."""
        record = dead_letter_record(
            rejected.reason, rejected.error, *source, offset, rejected.payload
        )
        letter = DEAD_LETTER.encode(record)
        stage.produce(source.partition, Outbound(topics.dead_letter, source.topic.encode(), letter))
        metrics.aggregation_rejected_total.labels(source.topic).inc()

    async def run(stage: Stage, stream: faust.StreamT[bytes]) -> None:
        """Handle each record Faust delivers (and any it skipped), committing as due."""
        async for event in stream.events():
            source, offset = event.message.tp, event.message.offset
            async with stage.lock:
                for at, payload in await stage.due(source.partition, offset, event.value):
                    handle(stage, source, at, payload)
                if stage.commit_due():
                    stage.start_commit()
            health.agents.handled()

    @app.agent(app.topic(topics.matches, value_serializer="raw", internal=False))
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        """Hand each match and tick to the aggregation."""
        with _counting_crashes("aggregate", health.agents):
            await run(aggregating, stream)

    @app.agent(app.topic(topics.risk_batches, value_serializer="raw", internal=False))
    async def score(stream: faust.StreamT[bytes]) -> None:
        """Hand each batch of risk events to the scoring."""
        with _counting_crashes("score", health.agents):
            await run(scoring_stage, stream)

    @app.timer(interval=settings.commit_interval_seconds)  # type: ignore[untyped-decorator]
    async def commit_idle() -> None:
        """Commit what a stage handled when no record came to commit it."""
        for stage in stages:
            if stage.commit_due():
                stage.start_commit()

    async def on_revoked(_app: Any, revoked: set[TP], **_: Any) -> None:
        """Commit the stages and let go of the partitions revoked."""
        for stage in stages:
            async with stage.lock:
                await stage.revoke(tp.partition for tp in revoked if tp.topic == stage.source.topic)

    def on_assigned(_app: Any, assigned: set[TP], **_: Any) -> None:
        """Note the partitions each stage now owns; each is taken over at its first record."""
        for stage in stages:
            stage.assigned = {tp.partition for tp in assigned if tp.topic == stage.source.topic}
            decisions[stage.name].forget_index()

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # mode's stub
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def observe() -> None:
        """Report table sizes, and whether this worker owns matches partitions (ticks due)."""
        metrics.table_keys.labels("dest_to_rule_stats").set(len(groups))
        metrics.table_keys.labels("risk_object_to_contributions").set(len(objects))
        health.agents.assigned(bool(aggregating.assigned))

    app.sensors.add(ReadAheadFull({stage.source.topic: stage.name for stage in stages}))
    health.recovered = app.tables.recovery.completed.is_set  # type: ignore[attr-defined]
    app.service(_intake_service(settings, health.intakes))
    return app


class ReadAheadFull(faust.Sensor):
    """Counts each time a stage's read-ahead filled and fetching its partition paused."""

    def __init__(self, stages: dict[str, str]) -> None:
        """``stages``: the stage reading each topic."""
        super().__init__()
        self.stages = stages
        for stage in stages.values():
            metrics.read_ahead_full_total.labels(stage)  # exported from zero

    def on_topic_buffer_full(self, tp: TP) -> None:
        """Count it for the stage reading ``tp`` (none for Faust's own topics)."""
        if (stage := self.stages.get(tp.topic)) is not None:
            metrics.read_ahead_full_total.labels(stage).inc()


def export_info(rules: Iterable[Rule]) -> None:
    """Export the version running, each rule's name and ids, and its counters from zero."""
    metrics.build_info.labels(__version__).set(1)
    metrics.rules_loaded.set(len(loaded := list(rules)))
    for rule in loaded:
        spec = rule.spec
        mitre = ",".join(spec.mitre_attack_id)
        metrics.rule_info.labels(rule.id, spec.name, str(spec.version), mitre).set(1)
        for counter in (
            metrics.matches_aggregated_total,
            metrics.late_matches_total,
            metrics.risk_events_emitted_total,
        ):
            counter.labels(rule.id)
        for status in get_args(Status):
            metrics.findings_emitted_total.labels(rule.id, status)
    for kind in get_args(IncidentKind):
        metrics.incidents_emitted_total.labels(kind)


@contextmanager
def _counting_crashes(agent: str, status: AgentStatus) -> Iterator[None]:
    """Count an exception escaping an agent's loop (Faust restarts the agent) and re-raise it."""
    try:
        yield
    except Exception:
        status.crashed()
        metrics.agent_crashes_total.labels(agent).inc()
        raise


def _intake_service(settings: Settings, statuses: tuple[IntakeStatus, ...]) -> type[Service]:
    spawn = multiprocessing.get_context("spawn")

    class IntakeService(Service):
        """Run the batched intake in child processes (``INTAKE_PROCESSES``); one exiting, or
        its loop stalling for ``INTAKE_STALL_SECONDS``, crashes the worker (which Kubernetes
        restarts), after the intakes still running have written their stacks to the log."""

        halt = spawn.Event()

        async def on_start(self) -> None:
            level = logging.getLogger().getEffectiveLevel()
            self.processes = [
                spawn.Process(
                    target=run_intake_process,
                    args=(settings.intake_settings(number), status, self.halt, level),
                    name=f"wmiwatch-intake-{number}",
                    daemon=True,
                )
                for number, status in enumerate(statuses)
            ]
            for process, status in zip(self.processes, statuses, strict=True):
                status.beat()  # the stall clock starts with the process
                process.start()

        @Service.task
        async def _watch(self) -> None:
            while not self.should_stop:
                if (problem := self._problem()) is not None and not self.halt.is_set():
                    log.error("%s: the intakes' stacks follow", problem)
                    for process in self.processes:
                        send_signal(process, STACKS_SIGNAL)
                    await self.sleep(STACKS_SECONDS)
                    for process in self.processes:
                        process.kill()  # one stuck in a Kafka call: its successor fences it
                    await self.crash(RuntimeError(problem))
                    return
                await self.sleep(1.0)

        def _problem(self) -> str | None:
            """Return why the intakes cannot go on, if one exited or stalled."""
            for number, (process, status) in enumerate(zip(self.processes, statuses, strict=True)):
                if not process.is_alive():
                    return f"intake process {number} exited with code {process.exitcode}"
                stalled = time.monotonic() - status.heartbeat
                if stalled > settings.intake_stall_seconds:
                    return f"intake process {number} loop stalled for {stalled:.0f} s"
            return None

        async def on_stop(self) -> None:
            self.halt.set()
            for process in self.processes:
                await asyncio.get_running_loop().run_in_executor(None, process.join)

    return IntakeService


def send_signal(process: multiprocessing.process.BaseProcess, number: int) -> None:
    """Send ``process`` signal ``number`` if it is still running."""
    if process.pid is not None and process.is_alive():
        with suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(process.pid, number)
