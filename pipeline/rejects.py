"""Why an input record was rejected: a fixed taxonomy for the dead-letter topic."""

from __future__ import annotations

import base64
from enum import StrEnum

from pipeline.policy import DEAD_LETTER_PAYLOAD_BYTES
from pipeline.records import DeadLetter


class RejectReason(StrEnum):
    """The reasons a raw record goes to the dead-letter topic."""

    NOT_XML = "not_xml"
    NOT_JSON = "not_json"
    XML_ENTITIES = "xml_entities"
    TOO_LARGE = "too_large"
    MISSING_FIELD = "missing_field"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_SOURCE = "unknown_source"
    BAD_ENCODING = "bad_encoding"
    TOO_COMPLEX = "too_complex"
    DEST_FULL = "dest_full"
    TABLE_FULL = "table_full"
    REGEX_TIMEOUT = "regex_timeout"  # a rule's bounded expression ran out of time on it
    UNPROCESSABLE = "unprocessable"


class Rejected(Exception):
    """Raised by parse and normalize when a record cannot go on; carries the reason."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def dead_letter_record(
    reason: str, detail: str, topic: str, partition: int, offset: int, payload: bytes
) -> DeadLetter:
    """Return the dead-letter record of a record that could not be processed.

    It holds at most the first ``DEAD_LETTER_PAYLOAD_BYTES`` of the record, and its size: the
    whole of a large record, base64-encoded, would exceed what the broker accepts, and the
    batch holding it would be refused for ever.
    """
    kept = base64.b64encode(payload[:DEAD_LETTER_PAYLOAD_BYTES]).decode()
    return DeadLetter(reason, detail[:2000], topic, partition, offset, kept, len(payload))
