"""wmiwatch: Splunk-style WMI detections over Kafka streams of Windows events."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
