"""Every branch of the order gate's decision, as a pure function of the order's progress and the time
(shared.inbound.order_gate.decision): no Azurite, no clock. The ETag-guarded progress rows around it
are covered through the real tables in tests/e2e/test_order_gate.py."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.inbound.order_gate import Admit, Conflict, Duplicate, Gap, Progress, Step, Wait, decision
from shared.reasons import NotParked, ParkReason

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=600)


def decide(progress, step=Step.DURING, sequence=None, now=NOW, **options):
    return decision(progress, step, sequence, now, gap_timeout=TIMEOUT, **options)


def progress(**fields):
    return Progress("USMF", "P000123", **fields)


# --- with MES sequence numbers ----------------------------------------------------------------


def test_the_next_in_sequence_is_admitted_with_the_progress_it_was_decided_on():
    read = progress(watermark=4, started=True, etag="e")
    assert decide(read, sequence=5) == (Admit(read), None)


def test_one_at_or_below_the_watermark_is_a_duplicate():
    verdict, waiting = decide(progress(watermark=4), sequence=4)
    assert isinstance(verdict, Duplicate) and "watermark 4" in verdict.detail and waiting is None


def test_one_an_operator_released_as_a_gap_is_a_conflict_naming_the_release():
    released = {"sequence": 3, "through": 4, "reason": "never sent", "by": "ana", "at": "2026-11-23T09:00:00+00:00"}
    verdict, waiting = decide(progress(watermark=4, skipped=(released,)), sequence=4)
    assert isinstance(verdict, Conflict) and "released as a gap by ana" in verdict.detail and waiting is None
    assert isinstance(decide(progress(watermark=4, skipped=(released,)), sequence=2)[0], Duplicate)  # before the release


def test_a_message_after_a_gap_waits_and_the_wait_starts_now():
    verdict, waiting = decide(progress(watermark=4), sequence=7)
    assert verdict == Wait(NotParked.ORDERING, "waiting for sequence 5 of P000123") and waiting == (5, NOW)


def test_a_wait_already_noted_is_not_noted_again():
    read = progress(watermark=4, waiting_for=5, waiting_since=NOW - timedelta(seconds=30))
    assert decide(read, sequence=7) == (Wait(NotParked.ORDERING, "waiting for sequence 5 of P000123"), None)


def test_a_gap_older_than_the_timeout_parks_with_the_missing_number():
    read = progress(watermark=4, waiting_for=5, waiting_since=NOW - TIMEOUT)
    verdict, waiting = decide(read, sequence=7)
    assert verdict == Gap(ParkReason.GAP, "sequence 5 never arrived within 600 s", 5) and waiting is None
    assert isinstance(decide(read, sequence=7, now=NOW - timedelta(seconds=1))[0], Wait)  # one second before


def test_a_wait_noted_for_another_number_starts_a_new_wait():
    read = progress(watermark=5, waiting_for=5, waiting_since=NOW - 2 * TIMEOUT)
    assert decide(read, sequence=8)[1] == (6, NOW)


# --- without sequence numbers -------------------------------------------------------------------


def test_the_start_is_admitted_at_once():
    assert decide(progress(), step=Step.START) == (Admit(progress()), None)


def test_nothing_overtakes_the_start():
    verdict, waiting = decide(progress(), step=Step.DURING)
    assert verdict == Wait(NotParked.ORDERING, "waiting for the production start of P000123") and waiting == (0, NOW)


def test_a_start_that_never_came_parks_as_no_start():
    read = progress(waiting_for=0, waiting_since=NOW - TIMEOUT - timedelta(seconds=1))
    verdict, _ = decide(read, step=Step.DURING)
    assert verdict == Gap(ParkReason.NO_START, "the production start never arrived within 600 s", None)


def test_after_the_start_messages_are_admitted():
    read = progress(started=True)
    assert decide(read, step=Step.DURING) == (Admit(read), None)


@pytest.mark.parametrize("require_start", [True, False])
def test_the_end_overtakes_nothing_still_waiting(require_start):
    read = progress(started=True)
    verdict, waiting = decide(read, step=Step.END, later_waiting=2, require_start=require_start)
    # Noted nowhere: no watermark move wakes it, its rescheduled copy looks again.
    assert verdict == Wait(NotParked.ORDERING, "waiting for 2 earlier message(s) of P000123", wakes=False) and waiting is None
    assert decide(read, step=Step.END, require_start=require_start) == (Admit(read), None)


def test_without_require_start_nothing_waits_for_the_start():
    assert decide(progress(), step=Step.DURING, require_start=False) == (Admit(progress()), None)
