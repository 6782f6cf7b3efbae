"""wmiwatch: Splunk-style WMI detections over Kafka streams of Windows events."""

from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

__version__ = version("wmiwatch")

# The shipped rules, topic definitions and rule-test fixtures (the repository's top-level
# ``rules/``, ``topics/`` and ``tests/fixtures/``, carried in the wheel as package data).
CONTENT = Path(str(files(__name__) / "content"))
