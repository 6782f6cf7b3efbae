"""The ``wmiwatch`` command line."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from pipeline import CONTENT, __version__
from pipeline.broker import (
    BrokerUnavailable,
    free_port,
    running_broker,
    start_broker,
    stop_broker,
)
from pipeline.ocsf import RENDERERS
from pipeline.records import Finding
from pipeline.rules.errors import RuleErrors
from pipeline.rules.model import Rule
from pipeline.settings import Settings, problems, unknown_variables

app = typer.Typer(
    help="Splunk-style WMI detections over Kafka streams of Windows events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Topic administration.", no_args_is_help=True)
rules_app = typer.Typer(help="Rule files.", no_args_is_help=True)
suppress_app = typer.Typer(
    help="Live suppressions (the compacted suppressions topic).", no_args_is_help=True
)
app.add_typer(topics_app, name="topics")
app.add_typer(rules_app, name="rules")
app.add_typer(suppress_app, name="suppress")
k8s_app = typer.Typer(help="Kubernetes manifests.", no_args_is_help=True)
app.add_typer(k8s_app, name="k8s")
console = Console(stderr=True)


def _print_version(wanted: bool) -> None:
    if wanted:
        print(f"wmiwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Splunk-style WMI detections over Kafka streams of Windows events."""


Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        help="Kafka bootstrap servers (env WMIWATCH_BOOTSTRAP_SERVERS, default 127.0.0.1:9092)",
    ),
]
RulesDir = Annotated[
    Path | None, typer.Option("--rules", help="Rules directory (env WMIWATCH_RULES_DIR)")
]
DEMO_SAMPLES = CONTENT / "tests" / "fixtures" / "demo"


def load_settings(bootstrap: str | None = None, **overrides: object) -> Settings:
    """Read settings from the environment, with command-line overrides; exit on errors."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if bootstrap:
        values["bootstrap_servers"] = bootstrap
    unknown = unknown_variables(os.environ)
    if unknown:
        console.print("[red]invalid settings[/red]: " + "; ".join(unknown), soft_wrap=True)
        raise typer.Exit(2)
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as error:
        console.print("[red]invalid settings[/red]: " + "; ".join(problems(error)), soft_wrap=True)
        raise typer.Exit(2) from None


def load_rules_or_exit(folder: Path) -> tuple[Rule, ...]:
    """Load the rules, or print every problem and exit with status 2."""
    from pipeline.rules.loader import load_rules

    try:
        return load_rules(folder)
    except RuleErrors as errors:
        console.print(f"[red]{escape(str(errors))}[/red]")
        raise typer.Exit(2) from None


class Engine(StrEnum):
    """Which broker ``wmiwatch broker`` runs."""

    EMBEDDED = "embedded"
    APACHE_KAFKA = "apache-kafka"


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (of the first broker)")] = 9092,
    data_dir: Annotated[Path, typer.Option(help="Where the broker keeps data")] = Path(
        ".wmiwatch/broker"
    ),
    engine: Annotated[
        Engine, typer.Option(help="embedded: the noida-db broker; apache-kafka: KRaft nodes")
    ] = Engine.EMBEDDED,
    brokers: Annotated[int, typer.Option(min=1, help="Apache Kafka nodes to run")] = 1,
) -> None:
    """Run a local Kafka broker (or an Apache Kafka cluster) in the foreground until SIGTERM."""
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: received.append(number))
    if engine is Engine.APACHE_KAFKA:
        _run_apache_kafka(port, data_dir, brokers, received)
        return
    try:
        process = start_broker(port, data_dir)
    except BrokerUnavailable as error:
        console.print(str(error), style="red", markup=False)
        raise typer.Exit(1) from None
    console.print(f"broker listening on 127.0.0.1:{port} (data in {data_dir}); Ctrl-C stops it")
    try:
        while not received and process.poll() is None:
            time.sleep(0.2)
    finally:
        stop_broker(process)
    if not received:
        console.print(f"[red]the broker exited with status {process.returncode}[/red]")
        raise typer.Exit(1)


def _run_apache_kafka(port: int, data_dir: Path, brokers: int, received: list[int]) -> None:
    """Run Apache Kafka nodes until a signal arrives or a node exits."""
    from pipeline.apache_kafka import KAFKA_VERSION, KafkaCluster

    cluster = KafkaCluster(data_dir, brokers, port)
    try:
        cluster.start()
        console.print(
            f"Apache Kafka {KAFKA_VERSION}, {len(cluster.nodes)} node(s): "
            f"{cluster.bootstrap} (data in {data_dir}); Ctrl-C stops it"
        )
        while not received and all(n.process and n.process.poll() is None for n in cluster.nodes):
            time.sleep(0.2)
    except BrokerUnavailable as error:
        console.print(f"[red]{escape(str(error))}[/red]")
        raise typer.Exit(1) from None
    finally:
        cluster.stop()
    if not received:
        console.print("[red]a Kafka node exited[/red]")
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(
    bootstrap: Bootstrap = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Also create missing raw topics (for tests and demos)")
    ] = False,
) -> None:
    """Create the missing topics wmiwatch owns; never alters an existing topic."""
    from pipeline.kafka import create_topics

    settings = load_settings(bootstrap)
    status = create_topics(settings, settings.topics(), raw=raw)
    for name, state in sorted(status.items()):
        console.print(f"{state:8} {name}")


@topics_app.command("render")
def topics_render(
    strimzi: Annotated[bool, typer.Option("--strimzi", help="Strimzi KafkaTopic resources")],
    cluster: Annotated[str, typer.Option(help="Strimzi cluster name")] = "kafka",
    raw: Annotated[bool, typer.Option("--raw", help="Include the raw topics")] = False,
) -> None:
    """Print the topic definitions as Kubernetes resources (Strimzi KafkaTopic)."""
    import yaml

    from pipeline.deploy import strimzi_topics

    settings = load_settings(None)
    if not strimzi:
        console.print("only --strimzi rendering exists")
        raise typer.Exit(2)
    resources = strimzi_topics(
        settings.topics(),
        cluster,
        settings.replication_factor,
        settings.min_insync_replicas,
        raw=raw,
    )
    sys.stdout.write(yaml.safe_dump_all(resources, sort_keys=False))


@k8s_app.command("generate")
def k8s_generate(
    check: Annotated[bool, typer.Option(help="Only report drift; exit 1 if any")] = False,
) -> None:
    """Regenerate k8s/base/generated/ and k8s/kafka/generated/ (run in a checkout)."""
    from pipeline.deploy import GENERATED, KAFKA_GENERATED, drift, generate

    if not check:
        generate(Path.cwd(), Path.cwd())
        console.print(f"wrote {GENERATED} and {KAFKA_GENERATED}")
        return
    stale = drift(Path.cwd())
    for name in stale:
        console.print(f"[red]out of date[/red]: {name}")
    if stale:
        console.print("run: wmiwatch k8s generate")
        raise typer.Exit(1)
    console.print("the generated Kubernetes files are in sync with their sources")


@app.command()
def replay(paths: list[Path], bootstrap: Bootstrap = None) -> None:
    """Produce the events in PATHS (XML, JSON lines, EVTX, zip/tar.gz) to their raw topics."""
    from pipeline.replay import replay_files

    settings = load_settings(bootstrap)
    topics = settings.topics()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("replaying", total=None)
        counts = replay_files(paths, settings, topics, lambda: progress.advance(task))
    for topic, count in sorted(counts.items()):
        console.print(f"{count:8d}  {topic}")


@app.command()
def worker(
    bootstrap: Bootstrap = None,
    rules: RulesDir = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve /metrics here")] = None,
    loglevel: str = "warning",
) -> None:
    """Run a detection worker (Faust, and its intake process) with Prometheus metrics."""
    settings = load_settings(bootstrap, rules_dir=rules, metrics_port=metrics_port)
    load_rules_or_exit(settings.rules_dir)
    _use_multiprocess_metrics(settings.data_dir / "metrics")
    import faust
    from confluent_kafka import KafkaException

    from pipeline.agents import SWITCH_INTERVAL_SECONDS, create_app
    from pipeline.health import Health, IntakeStatus, serve
    from pipeline.kafka import create_leader_topic
    from pipeline.logs import logging_config

    _check_access(settings)
    try:
        create_leader_topic(settings)
    except KafkaException as error:  # Faust creates it then, with the broker's defaults
        console.print(f"[yellow]could not create Faust's leader topic[/yellow]: {error}")
    health = Health(tuple(IntakeStatus() for _ in range(settings.intake_processes)))
    serve(settings.metrics_port, health)
    console.print(
        f"metrics on http://127.0.0.1:{settings.metrics_port}/metrics (probes: /healthz, /readyz)"
    )
    json_logs = logging_config(loglevel.upper(), "json") if settings.log_format == "json" else None
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    faust.Worker(
        create_app(settings, health), loglevel=loglevel, logging_config=json_logs
    ).execute_from_commandline()


def _check_access(settings: Settings) -> None:
    """Exit with a clear error when the principal is refused or may not use a needed topic.

    A cluster that cannot be reached yet is not an error here: the worker waits for it.
    """
    from confluent_kafka import KafkaError, KafkaException

    from pipeline.kafka import denied_topics

    principal = settings.sasl_username or "the anonymous principal"
    try:
        denied = denied_topics(settings, settings.topics())
    except KafkaException as error:
        if error.args[0].code() != KafkaError._AUTHENTICATION:
            console.print(f"[yellow]cannot check topic access yet[/yellow]: {error}")
            return
        console.print(f"[red]Kafka refused the login of {principal}[/red]: {error.args[0].str()}")
        raise typer.Exit(2) from None
    if denied:
        console.print(
            f"[red]{principal} may not use these topics (grant it ACLs on them)[/red]: "
            + ", ".join(denied)
        )
        raise typer.Exit(2)


def _use_multiprocess_metrics(folder: Path) -> None:
    """Start ``folder`` empty and keep every process's metrics there (before any is defined)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


class OutputFormat(StrEnum):
    """The shape of finding records (``WMIWATCH_OUTPUT_FORMAT``)."""

    NATIVE = "native"
    OCSF = "ocsf"


class DetectFormat(StrEnum):
    """How ``detect`` prints its findings."""

    TABLE = "table"
    JSONL = "jsonl"


@app.command()
def detect(
    paths: list[Path],
    rules: RulesDir = None,
    format: Annotated[DetectFormat, typer.Option(help="How to print the findings")] = (
        DetectFormat.TABLE
    ),
    jobs: Annotated[
        int, typer.Option(min=1, help="Processes detecting in parallel (same findings as one)")
    ] = 1,
    output_format: Annotated[
        OutputFormat | None,
        typer.Option(help="Record shape of jsonl lines [env: WMIWATCH_OUTPUT_FORMAT]"),
    ] = None,
) -> None:
    """Run every rule over files with no broker and print the findings."""
    from pipeline.offline import detect_files

    settings = load_settings(
        None, rules_dir=rules, output_format=output_format and output_format.value
    )
    report = detect_files(
        paths,
        load_rules_or_exit(settings.rules_dir),
        settings.window_policy(),
        settings.max_event_bytes,
        settings.time_policy(),
        jobs,
    )
    if format is DetectFormat.JSONL:
        render = RENDERERS[settings.output_format]
        for finding in report.findings:
            sys.stdout.buffer.write(render(finding) + b"\n")
    else:
        _print_findings(report.findings)
    rejected = ", ".join(f"{r}={n}" for r, n in sorted(report.rejected.items())) or "none"
    console.print(f"{report.events} events, {len(report.findings)} findings, rejected: {rejected}")


def _print_findings(findings: list[Finding]) -> None:
    table = Table("first_time", "rule", "dest", "count", "title", show_lines=False)
    for f in findings:
        table.add_row(f.first_time, f.rule_name, f.dest, str(f.count), f.title)
    Console().print(table)


@rules_app.command("import")
def rules_import(
    sources: Annotated[list[Path], typer.Argument(help="ESCU detection files or folders")],
    out: Annotated[Path, typer.Option(help="Folder to write the rule files and macros.yml to")],
    rules: RulesDir = None,
) -> None:
    """Import Splunk security_content detections; report each one that cannot run here."""
    from pipeline.rules.importer import import_detections

    settings = load_settings(None, rules_dir=rules)
    report = import_detections(sources, out, settings.rules_dir / "macros.yml")
    for path, reason in report.refused:
        typer.echo(f"not imported: {path}: {reason}")
    typer.echo(f"{report.summary} into {out}")


@rules_app.command("list")
def rules_list(rules: RulesDir = None) -> None:
    """Print the rules with their data sources, MITRE ids and the words that screen them."""
    from pipeline.normalize import default_normalizer
    from pipeline.prefilter import screening_clauses

    settings = load_settings(None, rules_dir=rules)
    loaded = load_rules_or_exit(settings.rules_dir)
    clauses = screening_clauses(loaded, default_normalizer())
    table = Table("name", "type", "data sources", "MITRE", "score", "screened by")
    for rule in loaded:
        spec = rule.spec
        table.add_row(
            spec.name,
            spec.type,
            ", ".join(spec.data_source),
            ", ".join(spec.mitre_attack_id),
            str(spec.finding.entity.score),
            escape(screened_by(clauses.get(rule.id, ()))),
        )
    Console().print(table)


def screened_by(clauses: tuple[frozenset[bytes], ...]) -> str:
    """Return the words an event needs (one of each clause, joined by "and") before the rule
    is tried on it, or that every event of the rule's data sources is parsed for it."""
    if not clauses:
        return "nothing: every event parsed"
    return " and ".join(_one_of(clause) for clause in clauses)


def _one_of(clause: frozenset[bytes]) -> str:
    shown = sorted(word.decode() for word in clause)
    more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
    return "/".join(shown[:3]) + more


@suppress_app.command("add")
def suppress_add(
    key: Annotated[str, typer.Argument(help="Entry id (adding it again replaces it)")],
    field: Annotated[str, typer.Option(help="Event field, e.g. dest, user, process")],
    value: Annotated[str, typer.Option(help="Value; * matches any run, case-insensitive")],
    reason: Annotated[str, typer.Option()],
    author: Annotated[str, typer.Option()],
    rule: Annotated[str, typer.Option(help="Rule id, or * for every rule (needs --broad)")],
    expires: Annotated[str | None, typer.Option(help="ISO-8601 expiry")] = None,
    broad: Annotated[
        bool, typer.Option(help="Allow an entry of every rule, or of every value (*)")
    ] = False,
    rules: RulesDir = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Add or replace a suppression; running workers apply it within a second.

    The rule id and the field must be known to the loaded rules.
    """
    from pipeline.normalize import default_normalizer
    from pipeline.suppress import Suppression, known_fields

    values = {"rule_id": rule, "field": field, "value": value, "expires_at": expires}
    try:
        entry = Suppression.model_validate(
            {**values, "reason": reason, "author": author, "broad": broad}
        )
    except ValidationError as error:
        invalid = "; ".join(e["msg"] for e in error.errors())
        console.print(f"[red]suppression refused[/red]: {escape(invalid)}")
        raise typer.Exit(2) from None
    settings = load_settings(bootstrap, rules_dir=rules)
    known = known_fields(load_rules_or_exit(settings.rules_dir), default_normalizer())
    if problems := entry.problems(known):
        console.print(f"[red]suppression refused[/red]: {escape('; '.join(problems))}")
        raise typer.Exit(2)
    _write_suppression(bootstrap, key, entry.model_dump_json().encode())


@suppress_app.command("remove")
def suppress_remove(key: str, bootstrap: Bootstrap = None) -> None:
    """Remove a suppression (writes a tombstone)."""
    _write_suppression(bootstrap, key, None)


@suppress_app.command("list")
def suppress_list(bootstrap: Bootstrap = None) -> None:
    """Print the suppression entries on the topic (the latest of each key), expired ones marked."""
    from pipeline.kafka import RangeReader
    from pipeline.suppress import Suppression

    settings = load_settings(bootstrap)
    reader = RangeReader(settings, settings.topics().suppressions)
    latest: dict[str, bytes | None] = {}
    for message in reader.read_all(0):  # the suppressions topic has one partition
        latest[(message.key() or b"").decode("utf-8", "replace")] = message.value()
    table = Table("key", "rule", "field", "value", "expires", "author", "reason")
    for key, value in sorted((k, v) for k, v in latest.items() if v is not None):
        try:
            entry = Suppression.model_validate_json(value)
        except ValidationError:
            table.add_row(escape(key), "[red]not a valid entry (workers refuse it)[/red]")
            continue
        expires = entry.expires_at.isoformat() if entry.expires_at else "never"
        table.add_row(
            escape(key),
            entry.rule_id,
            escape(entry.field),
            escape(entry.value),
            f"{expires} (expired)" if entry.expired(time.time()) else expires,
            escape(entry.author),
            escape(entry.reason),
        )
    Console().print(table)


def _write_suppression(bootstrap: str | None, key: str, value: bytes | None) -> None:
    from pipeline.kafka import producer

    settings = load_settings(bootstrap)
    topic = settings.topics().suppressions
    client = producer(settings)
    client.produce(topic, value, key=key.encode())
    if client.flush(30):
        console.print("[red]the broker did not acknowledge the entry[/red]")
        raise typer.Exit(1)
    console.print(f"{'removed' if value is None else 'written'}: {key} on {topic}")


@app.command()
def check(bootstrap: Bootstrap = None, rules: RulesDir = None) -> None:
    """Check settings, rules, the broker, every topic and the principal's rights."""
    from pipeline.check import run_checks

    overrides = {"bootstrap_servers": bootstrap, "rules_dir": rules}
    failed = 0
    for outcome in run_checks(os.environ, {k: v for k, v in overrides.items() if v is not None}):
        print(f"{'ok  ' if outcome.ok else 'FAIL'} {outcome.name}: {outcome.detail}")
        failed += not outcome.ok
    if failed:
        console.print(f"{failed} check(s) failed")
        raise typer.Exit(1)


@app.command("test-rules")
def test_rules(rules: RulesDir = None) -> None:
    """Run every rule's tests section against its fixtures; exit 1 on any failure."""
    from pipeline.selftest import run_rule_tests

    settings = load_settings(None, rules_dir=rules)
    rules_found = load_rules_or_exit(settings.rules_dir)
    results = run_rule_tests(rules_found, settings.window_policy(), settings.rules_dir.parent)
    table = Table("result", "rule", "test", "expected", "actual")
    for result in results:
        verdict = "[green]pass[/green]" if result.passed else "[red]FAIL[/red]"
        table.add_row(verdict, result.rule, result.test, str(result.expected), str(result.actual))
    untested = [rule.spec.name for rule in rules_found if not rule.spec.tests]
    for name in untested:
        table.add_row("[yellow]untested[/yellow]", name, "", "", "")
    Console().print(table)
    failed = sum(not r.passed for r in results)
    console.print(f"{len(results) - failed} passed, {failed} failed, {len(untested)} untested")
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Broker port (0: any free port)")] = 0,
    metrics_port: int = 9108,
    stop_after: Annotated[
        int, typer.Option(help="Exit after N new findings (0: run until Ctrl-C)")
    ] = 0,
) -> None:
    """Start a local broker and a worker, replay the bundled samples, print findings live."""
    from pipeline.kafka import create_topics
    from pipeline.replay import replay_files

    port = port or free_port()
    data_dir = Path(".wmiwatch") / f"demo-{port}"
    with running_broker(port, data_dir / "broker") as address:
        settings = load_settings(address, data_dir=data_dir / "worker", metrics_port=metrics_port)
        topics = settings.topics()
        create_topics(settings, topics, raw=True)
        console.print(f"broker on {address}; topics created; starting worker")
        with _worker_process(settings, data_dir / "worker.log"):
            counts = replay_files(sorted(DEMO_SAMPLES.glob("*")), settings, topics)
            console.print(
                f"replayed {sum(counts.values())} events from {DEMO_SAMPLES}: {dict(counts)}"
            )
            console.print(f"metrics: http://127.0.0.1:{metrics_port}/metrics — Ctrl-C stops")
            news = (f for f in _follow(settings, topics.findings) if f["status"] == "new")
            for count, finding in enumerate(news, start=1):  # updates and finals repeat them
                console.print(
                    f"[bold red]FINDING[/bold red] {finding['rule_name']} on "
                    f"{finding['dest']} (score {finding['risk_score']}): "
                    f"{finding['title']}"
                )
                sys.stdout.buffer.write(orjson.dumps(finding) + b"\n")
                sys.stdout.flush()
                if count == stop_after:
                    break


@contextmanager
def _worker_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``wmiwatch worker`` as a child process for the block; SIGTERM it afterwards."""
    env = {
        **os.environ,
        "WMIWATCH_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WMIWATCH_DATA_DIR": str(settings.data_dir),
    }
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "worker",
        "--metrics-port",
        str(settings.metrics_port),
    ]
    with open(log, "ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _follow(settings: Settings, topic: str) -> Iterator[dict[str, object]]:
    """Yield records of ``topic`` from the beginning, as they arrive (Ctrl-C ends)."""
    from pipeline.kafka import consumer

    reader = consumer(settings, f"wmiwatch-demo-{os.getpid()}")
    reader.subscribe([topic])
    try:
        while True:
            message = reader.poll(0.5)
            if message is not None and not message.error():
                yield orjson.loads(message.value() or b"null")
    except KeyboardInterrupt:
        return
    finally:
        reader.close()


def main() -> None:
    """Run the CLI with logging configured."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app()
