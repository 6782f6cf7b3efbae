"""Consume wmiwatch findings and forward them: print, or POST each one to a webhook.

    python examples/forward_findings.py --bootstrap 127.0.0.1:9092 [--webhook URL] [--new-only]

Uses the same WMIWATCH_* connection settings as the worker (SASL_SSL etc.) when set.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

from confluent_kafka import Consumer

from pipeline.settings import Settings


def forward(record: dict[str, object], webhook: str | None) -> None:
    """Print the finding, or POST it as JSON to ``webhook``."""
    if webhook is None:
        print(f"{record['status']:6} {record['rule_name']} on {record['dest']}: {record['title']}")
        return
    request = urllib.request.Request(
        webhook, data=json.dumps(record).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).close()


def main() -> None:
    """Follow the findings topic from the group's committed position."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--webhook")
    parser.add_argument("--group", default="wmiwatch-findings-forwarder")
    parser.add_argument("--new-only", action="store_true", help="skip update/final records")
    parser.add_argument("--max", type=int, default=0, help="stop after N records (0: never)")
    args = parser.parse_args()
    settings = Settings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
    consumer = Consumer(
        {
            **settings.librdkafka_config(),
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # wmiwatch writes its outputs in transactions: read only committed ones (this is
            # librdkafka's default; say it, as Java and aiokafka default to read_uncommitted).
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([f"{settings.topic_prefix}wmiwatch.findings"])
    seen = 0
    try:
        while not args.max or seen < args.max:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            record = json.loads(message.value() or b"{}")
            if not args.new_only or record.get("status") == "new":
                forward(record, args.webhook)
            consumer.commit(message, asynchronous=False)  # forwarded, then committed
            seen += 1
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
