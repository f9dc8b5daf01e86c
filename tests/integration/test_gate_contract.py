"""The order gate's progress store, run against Table Storage (Azurite) and the in-memory fake
(tests/fakes.py): the same cases, so the gate the unit tests run over the fake behaves as in production.
The gate itself is the real `OrderGate` in both; only where it keeps the rows differs."""

import threading
from datetime import UTC, datetime

import pytest

from shared.inbound.order_gate import Admit, Gap, OrderGate, ProgressStore, Step, Wait
from shared.reasons import ParkReason
from shared.store.progress import Progress, ProgressChanged, TableProgressStore
from shared.store.tables import LEDGER_TABLE, table
from tests.fakes import FakeClock, InMemoryProgress


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.integration)])
def store(request) -> ProgressStore:
    if request.param == "memory":
        return InMemoryProgress()
    service, prefix = request.getfixturevalue("table_service"), request.getfixturevalue("table_prefix")
    return TableProgressStore(table(service, prefix + LEDGER_TABLE))


def test_an_order_without_a_row_has_a_fresh_progress_without_etag(store):
    assert store.read("USMF", "P1") == Progress("USMF", "P1")


def test_every_field_reads_back_as_written(store):
    since = datetime(2026, 11, 23, 9, 0, 0, 123000, tzinfo=UTC)
    skipped = ({"sequence": 3, "through": 5, "reason": "never sent", "by": "ana", "at": "2026-11-23T09:00:00+00:00"},)
    wanted = Progress(
        "USMF", "P/1'#?", watermark=2**40, started=True, waiting_for=2**40 + 2, waiting_since=since, skipped=skipped, held=True
    )
    written = store.write(wanted)
    assert written.etag
    read = store.read("USMF", "P/1'#?")
    assert read == written
    assert store.read("DEMF", "P/1'#?") == Progress("DEMF", "P/1'#?")


def test_a_write_from_a_stale_read_or_a_second_create_is_refused(store):
    created = store.write(Progress("USMF", "P1", watermark=1))
    with pytest.raises(ProgressChanged):
        store.write(Progress("USMF", "P1", watermark=5))  # no ETag: it believed there was no row
    moved = store.write(Progress("USMF", "P1", watermark=2, etag=created.etag))
    with pytest.raises(ProgressChanged):
        store.write(Progress("USMF", "P1", watermark=3, etag=created.etag))
    assert store.read("USMF", "P1").watermark == 2 and moved.etag != created.etag


def test_a_wait_is_noted_once_and_a_gap_parks_when_the_clock_passes_the_timeout(store):
    clock = FakeClock()
    gate = OrderGate(store, gap_timeout_s=600, clock=clock)
    started = clock.now
    assert isinstance(gate.decide("USMF", "P7", Step.DURING, 2), Wait)
    clock.advance(599)
    assert isinstance(gate.decide("USMF", "P7", Step.DURING, 2), Wait)
    assert gate.read("USMF", "P7").waiting_since == started
    clock.advance(1)
    assert gate.decide("USMF", "P7", Step.DURING, 2) == Gap(ParkReason.GAP, "sequence 1 never arrived within 600 s", 1)
    assert isinstance(gate.decide("USMF", "P7", Step.START, 1), Admit)
    moved = gate.advance("USMF", "P7", Step.START, 1)
    assert (moved.watermark, moved.started, moved.waiting_for, moved.waiting_since) == (1, True, None, None)


def test_a_released_gap_moves_the_watermark_past_it_stamped_with_the_clock(store):
    gate = OrderGate(store, gap_timeout_s=600, clock=FakeClock(datetime(2026, 11, 23, 9, 30, tzinfo=UTC)))
    gate.advance("USMF", "P8", Step.DURING, 1)
    progress = gate.release_gap("USMF", "P8", 2, "never sent", "ana", through=4)
    assert progress.watermark == 4
    assert progress.skipped == (
        {"sequence": 2, "through": 4, "reason": "never sent", "by": "ana", "at": "2026-11-23T09:30:00+00:00"},
    )
    with pytest.raises(ValueError):
        gate.release_gap("USMF", "P8", 7, "not next")


def test_the_held_flag_is_cleared_only_from_the_version_that_saw_nothing_parked(store):
    gate = OrderGate(store, gap_timeout_s=600)
    held = gate.note_held("USMF", "P9")
    assert held.held
    gate.clear_held(held)
    assert not gate.read("USMF", "P9").held
    seen = gate.note_held("USMF", "P9")
    gate.note_held("USMF", "P9")  # unchanged: no write
    gate.advance("USMF", "P9", Step.DURING, 1)  # the row moved after `seen` was read
    gate.clear_held(seen)
    assert gate.read("USMF", "P9").held


def test_racing_advances_all_land(store):
    gate = OrderGate(store, gap_timeout_s=600)
    start = threading.Barrier(8)

    def advance(sequence: int) -> None:
        start.wait()
        gate.advance("USMF", "P10", Step.DURING, sequence)

    threads = [threading.Thread(target=advance, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gate.read("USMF", "P10").watermark == 8
