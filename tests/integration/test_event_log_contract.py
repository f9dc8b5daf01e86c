"""The event log's contract, run against the Table Storage `EventLog` (Azurite) and the in-memory fake
the unit tests use (tests/fakes.py): the same cases, so the fake cannot drift from the real store."""

import threading

import pytest

from shared.store import tables
from shared.store.event_log import RELEASE, STATUS, STATUS_UNITS, EventLog, EventStore
from shared.store.tables import EVENTS_TABLE, table
from tests.fakes import InMemoryEventLog


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.integration)])
def log(request) -> EventStore:
    if request.param == "memory":
        return InMemoryEventLog()
    service, prefix = request.getfixturevalue("table_service"), request.getfixturevalue("table_prefix")
    return EventLog(table(service, prefix + EVENTS_TABLE))


def guard(log: EventStore, kind: str, company: str, order: str) -> tuple[int, str] | None:
    applied = log.applied(kind, company, order)
    return None if applied is None else (applied.control_number, applied.status)


def test_the_control_number_only_moves_up(log):
    assert log.applied(STATUS, "usmf", "P1") is None
    assert log.apply_control_number(STATUS, "usmf", "P1", 5, "Started")
    assert guard(log, STATUS, "USMF", "P1") == (5, "Started")  # the company is upper-cased
    assert not log.apply_control_number(STATUS, "USMF", "P1", 5, "Stopped")  # the same number again
    assert not log.apply_control_number(STATUS, "USMF", "P1", 3, "Scheduled")  # an older event, delivered late
    assert guard(log, STATUS, "USMF", "P1") == (5, "Started")
    assert log.apply_control_number(STATUS, "USMF", "P1", 9, "Ended")
    assert log.applied_status("usmf", "P1") == log.applied(STATUS, "USMF", "P1")
    assert guard(log, STATUS, "usmf", "P1") == (9, "Ended")


def test_the_guard_names_the_event_id_that_moved_it_whatever_its_case(log):
    assert log.apply_control_number(RELEASE, "USMF", "P6", 4, "Released", event_id="3c47a4cd-6edc")
    applied = log.applied(RELEASE, "USMF", "P6")
    assert applied.brought_by("3C47A4CD-6EDC") and applied.brought_by("3c47a4cd-6edc")  # GUIDs: case carries nothing
    assert not applied.brought_by("3c47a4cd-6edd") and not applied.brought_by("")
    assert log.apply_control_number(RELEASE, "USMF", "P6", 8, "Released", event_id="e-8", since=applied)
    assert log.applied(RELEASE, "USMF", "P6").brought_by("e-8")


def test_a_write_from_a_read_that_is_out_of_date_still_compares_with_the_guard_as_it_is(log):
    assert log.apply_control_number(STATUS, "USMF", "P7", 5, "Started")
    read = log.applied(STATUS, "USMF", "P7")
    assert log.apply_control_number(STATUS, "USMF", "P7", 9, "Ended", since=read)  # another event moved it since
    assert not log.apply_control_number(STATUS, "USMF", "P7", 7, "Stopped", since=read)  # older than what is there now
    assert log.apply_control_number(STATUS, "USMF", "P7", 10, "Reported", since=read)
    assert not log.apply_control_number(STATUS, "USMF", "P7", 6, "Started", since=None)  # read when there was none
    assert log.apply_control_number(STATUS, "USMF", "P7", 11, "Ended", since=None)
    assert guard(log, STATUS, "USMF", "P7") == (11, "Ended")


def test_a_release_and_a_status_change_never_make_each_other_stale(log):
    assert log.apply_control_number(STATUS, "USMF", "P2", 10, "Stopped")
    assert log.applied(RELEASE, "USMF", "P2") is None
    assert log.apply_control_number(RELEASE, "USMF", "P2", 4, "Released")
    assert guard(log, RELEASE, "USMF", "P2") == (4, "Released")
    assert guard(log, STATUS, "USMF", "P2") == (10, "Stopped")
    assert log.applied(STATUS, "USMF", "P3") is None  # another order


def test_a_status_name_is_bounded(log):
    assert log.apply_control_number(STATUS, "USMF", "P4", 1, "x" * (STATUS_UNITS + 500))
    applied = log.applied_status("USMF", "P4")
    assert applied is not None and applied.control_number == 1 and len(applied.status) <= STATUS_UNITS


def test_racing_applies_leave_the_highest_and_only_its_writer_is_told_it_won_last(log):
    numbers = list(range(1, 9))
    results: dict[int, bool] = {}
    start = threading.Barrier(len(numbers))

    def apply(n: int) -> None:
        start.wait()
        results[n] = log.apply_control_number(STATUS, "USMF", "P5", n, f"status {n}")

    threads = [threading.Thread(target=apply, args=(n,)) for n in numbers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert guard(log, STATUS, "USMF", "P5") == (8, "status 8")
    assert results[8] is True


@pytest.mark.integration
def test_a_read_then_a_write_from_it_are_two_table_operations(table_service, table_prefix):
    log = EventLog(table(table_service, table_prefix + EVENTS_TABLE))
    before = tables.TABLE_OPS.count
    applied = log.applied(STATUS, "USMF", "P9")
    assert log.apply_control_number(STATUS, "USMF", "P9", 3, "Started", event_id="e-3", since=applied)
    applied = log.applied(STATUS, "USMF", "P9")
    assert log.apply_control_number(STATUS, "USMF", "P9", 4, "Stopped", event_id="e-4", since=applied)
    assert tables.TABLE_OPS.count - before == 4  # no write reads the guard again
