"""The event log's contract, run against the Table Storage `EventLog` (Azurite) and the in-memory fake
the unit tests use (tests/fakes.py): the same cases, so the fake cannot drift from the real store."""

import threading

import pytest

from shared.store.event_log import RELEASE, STATUS, STATUS_UNITS, EventLog, EventStore
from shared.store.tables import EVENTS_TABLE, table
from tests.fakes import InMemoryEventLog


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.integration)])
def log(request) -> EventStore:
    if request.param == "memory":
        return InMemoryEventLog()
    service, prefix = request.getfixturevalue("table_service"), request.getfixturevalue("table_prefix")
    return EventLog(table(service, prefix + EVENTS_TABLE))


def test_an_event_id_is_seen_once_remembered_per_consumer_whatever_its_case(log):
    assert not log.seen("order_released", "e-1")
    log.remember("order_released", "e-1", "ProdProductionOrderReleasedBusinessEvent", "published")
    assert log.seen("order_released", "e-1")
    assert log.seen("order_released", "E-1")  # F&O's EventIds are GUIDs; their case carries no meaning
    assert not log.seen("order_status_changed", "e-1")
    assert not log.seen("order_released", "e-2")


def test_the_control_number_only_moves_up(log):
    assert log.applied(STATUS, "usmf", "P1") is None
    assert log.apply_control_number(STATUS, "usmf", "P1", 5, "Started")
    assert log.applied(STATUS, "USMF", "P1") == (5, "Started")  # the company is upper-cased
    assert not log.apply_control_number(STATUS, "USMF", "P1", 5, "Stopped")  # the same number again
    assert not log.apply_control_number(STATUS, "USMF", "P1", 3, "Scheduled")  # an older event, delivered late
    assert log.applied_status("USMF", "P1") == (5, "Started")
    assert log.apply_control_number(STATUS, "USMF", "P1", 9, "Ended")
    assert log.applied_status("usmf", "P1") == (9, "Ended")


def test_a_release_and_a_status_change_never_make_each_other_stale(log):
    assert log.apply_control_number(STATUS, "USMF", "P2", 10, "Stopped")
    assert log.applied(RELEASE, "USMF", "P2") is None
    assert log.apply_control_number(RELEASE, "USMF", "P2", 4, "Released")
    assert log.applied(RELEASE, "USMF", "P2") == (4, "Released")
    assert log.applied(STATUS, "USMF", "P2") == (10, "Stopped")
    assert log.applied(STATUS, "USMF", "P3") is None  # another order


def test_a_status_name_is_bounded(log):
    assert log.apply_control_number(STATUS, "USMF", "P4", 1, "x" * (STATUS_UNITS + 500))
    applied = log.applied_status("USMF", "P4")
    assert applied is not None and applied[0] == 1 and len(applied[1]) <= STATUS_UNITS


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
    assert log.applied_status("USMF", "P5") == (8, "status 8")
    assert results[8] is True
