"""When the intake sends the batches it processed while a commit was in flight."""

from __future__ import annotations

import pytest

from pipeline.intake import MAX_HELD_BYTES, MAX_TRANSACTION_BATCHES, send_now


@pytest.mark.parametrize(
    ("held", "size", "read", "committed", "expected"),
    [
        (0, 0, False, True, False),  # nothing to send
        (1, 100, True, True, True),  # nothing in flight: each batch at once
        (1, 100, True, False, False),  # the commit before runs, more was read: read on
        (3, 300, False, False, True),  # nothing more to read: wait for the commit, then send
        (MAX_TRANSACTION_BATCHES, 100, True, False, True),  # enough batches for one transaction
        (1, MAX_HELD_BYTES, True, False, True),  # enough bytes (large dead letters)
        (2, MAX_HELD_BYTES - 1, True, False, False),
    ],
)
def test_batches_are_sent_once_the_commit_returned_the_reading_paused_or_enough_are_held(
    held: int, size: int, read: bool, committed: bool, expected: bool
) -> None:
    assert send_now(held, size, read, committed) is expected
