"""When the intake sends the batches it processed while a commit was in flight."""

from __future__ import annotations

import pytest

from pipeline.intake import MAX_TRANSACTION_BATCHES, send_now


@pytest.mark.parametrize(
    ("held", "read", "committed", "expected"),
    [
        (0, False, True, False),  # nothing to send
        (1, True, True, True),  # nothing in flight: each batch at once
        (1, True, False, False),  # the commit before runs, more was read: read on
        (3, False, False, True),  # nothing more to read: wait for the commit, then send
        (MAX_TRANSACTION_BATCHES, True, False, True),  # enough for one transaction
    ],
)
def test_batches_are_sent_once_the_commit_returned_the_reading_paused_or_enough_are_held(
    held: int, read: bool, committed: bool, expected: bool
) -> None:
    assert send_now(held, read, committed) is expected
