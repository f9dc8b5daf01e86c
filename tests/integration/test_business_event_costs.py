"""What each F&O business event costs in Table operations (issue 15: at most 3 on the processed-event
leg), counted against the real stores on Azurite: a processed message 3 (content index, ledger row,
its settling write), a release or a status change 2 (the guard's read, its write on that read's
ETag), and a redelivery only the reads that recognise it. Each saved operation has its count here,
with the guarantee it must not cost: duplicates, older events and same-content messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.fo.production_order import BOM_LINES, HEADERS, RELEASED_PRODUCTS, ROUTE_OPERATIONS
from shared.outbound.envelope import MESSAGE_PROCESSED, ORDER_RELEASED, ORDER_STATUS_CHANGED
from shared.outbound.handlers import Handled, Handling, receive
from shared.store import tables
from shared.store.event_log import EventLog
from shared.store.ledger import Ledger, LedgerEntry, State, content_index_row, payload_hash
from shared.store.tables import EVENTS_TABLE, LEDGER_TABLE, table
from tests.fakes import RecordingPublisher, ports

pytestmark = pytest.mark.integration


class ReleasedOrders:
    """F&O's OData for one valid released order (the release handler's four reads)."""

    def __init__(self) -> None:
        self.reads = 0

    def query(self, entity: str, **_: Any) -> Iterator[dict[str, Any]]:
        self.reads += 1
        rows: dict[str, list[dict[str, Any]]] = {
            HEADERS: [{"ProductionOrderNumber": "P000100", "ItemNumber": "FG-1", "ScheduledQuantity": 5}],
            RELEASED_PRODUCTS: [{"ItemNumber": "FG-1", "InventoryUnitSymbol": "ea"}],
            BOM_LINES: [],
            ROUTE_OPERATIONS: [],
        }
        return iter(rows[entity])


@pytest.fixture
def stack(table_service, table_prefix):
    ledger = Ledger(table(table_service, table_prefix + LEDGER_TABLE))
    events = EventLog(table(table_service, table_prefix + EVENTS_TABLE))
    mes = RecordingPublisher()
    return ports(ledger=ledger, events=events, publisher=mes, fo=ReleasedOrders())


def costs(port: Any, consumer: str, data: dict[str, Any]) -> tuple[Handled, int]:
    before = tables.TABLE_OPS.count
    handled = receive(consumer, uuid.uuid4().hex, json.dumps(data), port)
    return handled, tables.TABLE_OPS.count - before


def forwarded(port: Any, content: str) -> LedgerEntry:
    """A MES message the bridge forwarded, with the content index row the forward writes."""
    entry: LedgerEntry = port.ledger.create(
        LedgerEntry(
            company="USMF",
            message_id=uuid.uuid4().hex,
            state=State.FORWARDED,
            flow="production_started",
            production_order="P000100",
            extra={"ContentHash": payload_hash(content.encode())},
        )
    )
    port.ledger.write(content_index_row("USMF", payload_hash(content.encode()), entry.message_id, "ProdProductionOrderStart"))
    return entry


def processed(content: str, state: str = "Processed", event_id: str | None = None) -> dict[str, Any]:
    return {
        "BusinessEventId": MESSAGE_PROCESSED,
        "EventId": event_id or str(uuid.uuid4()),
        "ControlNumber": 1,
        "CompanyId": "USMF",
        "MessageContent": content,
        "MessageState": state,
        "MessageType": "ProdProductionOrderStart",
        "MessageInfolog": "" if state == "Processed" else "Operation 990 does not exist",
    }


def outcomes(port: Any) -> list[tuple[str, str | None]]:
    return [(json.loads(m.body)["outcome"], json.loads(m.body).get("supersedes")) for m in port.publisher.sent]


def test_a_processed_message_costs_three_operations_and_its_redelivery_two(stack):
    content = json.dumps({"ProductionOrderNumber": "P000100", "n": uuid.uuid4().hex})
    entry = forwarded(stack, content)
    event = processed(content)
    handled, operations = costs(stack, "message_processed", event)
    assert handled.outcome is Handling.MATCHED and operations == 3
    assert stack.ledger.get("USMF", entry.message_id).state is State.PROCESSED
    again, operations = costs(stack, "message_processed", {**event, "EventId": event["EventId"].lower()})
    assert again.outcome is Handling.DUPLICATE and operations == 2 and outcomes(stack) == [("accepted", None)]


def test_the_redelivery_of_a_processed_event_does_not_settle_another_message_with_the_same_content(stack):
    content = json.dumps({"ProductionOrderNumber": "P000100", "n": uuid.uuid4().hex})
    first, second = forwarded(stack, content), forwarded(stack, content)
    event = processed(content)
    assert costs(stack, "message_processed", event)[0].outcome is Handling.MATCHED
    handled, operations = costs(stack, "message_processed", event)
    assert handled.outcome is Handling.DUPLICATE and operations == 3  # the index, then both rows
    assert stack.ledger.get("USMF", second.message_id).state is State.FORWARDED
    assert costs(stack, "message_processed", processed(content))[0].outcome is Handling.MATCHED  # F&O's own event for it
    assert {stack.ledger.get("USMF", e.message_id).state for e in (first, second)} == {State.PROCESSED}


def test_failed_then_processed_costs_three_each_and_a_late_copy_of_the_failure_changes_nothing(stack):
    content = json.dumps({"ProductionOrderNumber": "P000100", "n": uuid.uuid4().hex})
    entry = forwarded(stack, content)
    failure = processed(content, "Failed")
    assert costs(stack, "message_processed", failure) == (Handled(Handling.MATCHED, f"{entry.message_id} Failed"), 3)
    handled, operations = costs(stack, "message_processed", processed(content))  # re-processed by an operator in F&O
    assert handled.outcome is Handling.MATCHED and operations == 3
    late, operations = costs(stack, "message_processed", failure)
    assert late.outcome is Handling.DUPLICATE and operations == 2
    assert stack.ledger.get("USMF", entry.message_id).state is State.PROCESSED
    assert outcomes(stack) == [("rejected", None), ("accepted", "rejected")]


def status(event_id: str, control_number: int, state: str) -> dict[str, Any]:
    return {
        "BusinessEventId": ORDER_STATUS_CHANGED,
        "EventId": event_id,
        "ControlNumber": control_number,
        "BusinessEventLegalEntity": "usmf",
        "ProductionOrderNumber": "P000100",
        "ProductionOrderStatus": state,
    }


def test_a_status_change_costs_two_operations_and_a_redelivery_or_an_older_one_one(stack):
    handled, operations = costs(stack, "order_status_changed", status("e-7", 7, "Started"))
    assert handled.outcome is Handling.PUBLISHED and operations == 2
    handled, operations = costs(stack, "order_status_changed", status("e-9", 9, "Stopped"))
    assert handled.outcome is Handling.PUBLISHED and operations == 2
    for late, outcome in ((status("e-9", 9, "Stopped"), Handling.DUPLICATE), (status("e-8", 8, "Started"), Handling.SUPERSEDED)):
        handled, operations = costs(stack, "order_status_changed", late)
        assert handled.outcome is outcome and operations == 1
    assert [json.loads(m.body)["status"] for m in stack.publisher.sent] == ["Started", "Stopped"]


def test_a_release_costs_two_operations_and_its_redelivery_one_without_reading_fo(stack):
    release = {
        "BusinessEventId": ORDER_RELEASED,
        "EventId": "r-1",
        "ControlNumber": 3,
        "CompanyId": "USMF",
        "ProductionOrderNumber": "P000100",
    }
    handled, operations = costs(stack, "order_released", release)
    assert handled.outcome is Handling.PUBLISHED and operations == 2 and stack.fo.reads == 4
    handled, operations = costs(stack, "order_released", release)
    assert handled.outcome is Handling.DUPLICATE and operations == 1 and stack.fo.reads == 4
    assert [m.message_id for m in stack.publisher.sent] == ["work-order|USMF|P000100|3"]
