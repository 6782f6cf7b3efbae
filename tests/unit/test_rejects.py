"""The dead letter of a rejected record."""

from __future__ import annotations

import base64

from pipeline.policy import DEAD_LETTER_PAYLOAD_BYTES
from pipeline.records import DEAD_LETTER
from pipeline.rejects import RejectReason, dead_letter_record


def test_a_dead_letter_holds_a_small_record_whole() -> None:
    letter = dead_letter_record(RejectReason.NOT_XML, "no root", "raw", 2, 7, b"<Event")
    assert base64.b64decode(letter.payload_base64) == b"<Event"
    assert (letter.payload_bytes, letter.topic, letter.partition, letter.offset) == (6, "raw", 2, 7)


def test_a_dead_letter_holds_the_start_of_a_large_record_and_its_size() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    letter = dead_letter_record(RejectReason.TOO_LARGE, "x" * 5000, "raw", 0, 0, payload)
    assert base64.b64decode(letter.payload_base64) == payload[:DEAD_LETTER_PAYLOAD_BYTES]
    assert letter.payload_bytes == len(payload)
    assert len(letter.error) == 2000
    assert len(DEAD_LETTER.encode(letter)) < 2 * DEAD_LETTER_PAYLOAD_BYTES
