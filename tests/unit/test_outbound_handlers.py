"""The business-event path (`receive`) and the status handler in milliseconds: the event log and the
MES topic are the in-memory fakes of tests/fakes.py (held to the real store by
tests/integration/test_event_log_contract.py); any other port the code touched would fail the test."""

import json

import pytest

from shared.outbound.envelope import ORDER_RELEASED, ORDER_STATUS_CHANGED, parse
from shared.outbound.handlers import Handling, order_released, receive
from shared.store.event_log import RELEASE, STATUS
from tests.fakes import InMemoryEventLog, RecordingPublisher, ports


def status_event(event_id="e-1", control_number=7, status="Started", **fields):
    return {
        "BusinessEventId": ORDER_STATUS_CHANGED,
        "EventId": event_id,
        "ControlNumber": control_number,
        "EventTime": "/Date(1795000000000)/",
        "BusinessEventLegalEntity": "usmf",
        "ProductionOrderNumber": "P000123",
        "ProductionOrderStatus": status,
        "PreviousProductionOrderStatus": "Released",
        **fields,
    }


def status_guard(events):
    applied = events.applied_status("USMF", "P000123")
    return None if applied is None else (applied.control_number, applied.status)


@pytest.fixture
def events():
    return InMemoryEventLog()


@pytest.fixture
def mes():
    return RecordingPublisher()


def test_a_status_change_is_published_once_with_a_message_id_from_what_it_is_about(events, mes):
    handled = receive("order_status_changed", "eg-1", json.dumps(status_event()), ports(events=events, publisher=mes))
    assert handled.outcome is Handling.PUBLISHED
    [sent] = mes.sent
    assert sent.message_id == "status|USMF|P000123|7" and sent.session_id == "P000123" and sent.correlation_id == "e-1"
    body = json.loads(sent.body)
    assert (body["status"], body["previous_status"], body["fo_control_number"]) == ("Started", "Released", 7)
    assert status_guard(events) == (7, "Started") and events.applied_status("USMF", "P000123").brought_by("e-1")


def test_data_as_an_object_is_the_same_event(events, mes):
    handled = receive("order_status_changed", "eg-1", status_event(), ports(events=events, publisher=mes))
    assert handled.outcome is Handling.PUBLISHED and len(mes.sent) == 1


def test_an_event_id_handled_before_is_not_published_again(events, mes):
    port = ports(events=events, publisher=mes)
    receive("order_status_changed", "eg-1", status_event(), port)
    again = receive("order_status_changed", "eg-2", status_event(), port)
    assert again.outcome is Handling.DUPLICATE and len(mes.sent) == 1
    # Another event with the same ControlNumber is not this one: an older status, not a redelivery.
    other = receive("order_status_changed", "eg-3", status_event("e-9"), port)
    assert other.outcome is Handling.SUPERSEDED and len(mes.sent) == 1


def test_an_older_status_delivered_late_is_superseded_and_so_is_its_redelivery(events, mes):
    port = ports(events=events, publisher=mes)
    receive("order_status_changed", "eg-1", status_event("e-2", 9, "Stopped"), port)
    late = receive("order_status_changed", "eg-2", status_event("e-1", 7, "Started"), port)
    assert late.outcome is Handling.SUPERSEDED and "Stopped" in late.detail
    assert [json.loads(m.body)["status"] for m in mes.sent] == ["Stopped"]
    assert status_guard(events) == (9, "Stopped")
    again = receive("order_status_changed", "eg-3", status_event("e-1", 7, "Started"), port)
    assert again.outcome is Handling.SUPERSEDED and len(mes.sent) == 1  # its redelivery too, from the same read


def test_a_newer_status_applied_while_publishing_is_named(events, mes):
    class NewerArrivesDuringThePublish(RecordingPublisher):
        def publish(self, message):
            super().publish(message)
            events.apply_control_number(STATUS, "USMF", "P000123", 8, "Stopped", event_id="e-8")

    handled = receive(
        "order_status_changed", "eg-1", status_event(), ports(events=events, publisher=NewerArrivesDuringThePublish())
    )
    assert handled.outcome is Handling.PUBLISHED and "a newer status (Stopped) was published meanwhile" in handled.detail
    assert status_guard(events) == (8, "Stopped")


def test_a_failed_publish_moves_nothing_so_event_grid_retries_in_full(events, mes):
    mes.refuse = 1
    port = ports(events=events, publisher=mes)
    with pytest.raises(RuntimeError):
        receive("order_status_changed", "eg-1", status_event(), port)
    assert events.applied_status("USMF", "P000123") is None
    assert receive("order_status_changed", "eg-1", status_event(), port).outcome is Handling.PUBLISHED


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"subject": "test event"}, "no BusinessEventId"),  # Event Grid's activation test
        ("not json", "not JSON"),
        (status_event() | {"BusinessEventId": ORDER_RELEASED}, "is not"),
        (status_event(ProductionOrderStatus=""), "no production order or status"),
    ],
)
def test_what_is_not_a_status_change_is_ignored_with_its_reason_and_publishes_nothing(events, mes, data, why):
    handled = receive("order_status_changed", "eg-1", data, ports(events=events, publisher=mes))
    assert handled.outcome is Handling.IGNORED and why in handled.detail
    assert mes.sent == []


def test_a_release_already_published_is_stale_without_reading_fo(events, mes):
    # ports.fo is untouchable here: a stale release must not cost an OData read.
    events.apply_control_number(RELEASE, "USMF", "P000123", 7, "Released")
    event = parse(
        {
            "BusinessEventId": ORDER_RELEASED,
            "EventId": "e-3",
            "ControlNumber": 7,
            "ProductionOrderNumber": "P000123",
            "CompanyId": "usmf",
        }
    )
    handled = order_released(event, ports(events=events, publisher=mes))
    assert handled.outcome is Handling.STALE and mes.sent == []
    published_by_it = InMemoryEventLog()
    published_by_it.apply_control_number(RELEASE, "USMF", "P000123", 7, "Released", event_id="E-3")
    again = order_released(event, ports(events=published_by_it, publisher=mes))
    assert again.outcome is Handling.DUPLICATE and mes.sent == []  # its own redelivery, told apart by the EventId


def test_a_release_without_an_order_is_ignored(events, mes):
    event = parse({"BusinessEventId": ORDER_RELEASED, "EventId": "e-4", "ControlNumber": 1, "CompanyId": "usmf"})
    assert order_released(event, ports(events=events, publisher=mes)).outcome is Handling.IGNORED
