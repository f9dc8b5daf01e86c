"""The F&O -> MES handlers that read F&O and move the ledger, in milliseconds over the fakes of
tests/fakes.py: a released order becomes one work order for MES (or a parked row when F&O's order
cannot make one), and F&O's processed-message event settles the MES message it names, including one
the bridge was in doubt about, then tells MES. The status handler and `receive` are in
test_outbound_handlers.py."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.schemas import example
from shared.errors import InDoubt, Transient
from shared.fo.client import message_content
from shared.fo.production_order import BOM_LINES, HEADERS, RELEASED_PRODUCTS, ROUTE_OPERATIONS
from shared.inbound.attempt import Outcome
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.pipeline import process
from shared.inbound.servicebus import Delivery
from shared.outbound.envelope import MESSAGE_PROCESSED, ORDER_RELEASED, parse
from shared.outbound.handlers import MATCH_GRACE, Handling, message_processed, order_released
from shared.reasons import ParkReason
from shared.store.event_log import RELEASE
from shared.store.ledger import State, content_index_row
from shared.store.lineage import BatchRef
from shared.topology import INBOUND_QUEUES
from tests.fakes import FakeBridge, fake_bridge

ORDER = "P000123"


def released_order(quantity: float | None = 40.0) -> dict[str, list[dict[str, Any]]]:
    header = {
        "dataAreaId": "usmf",
        "ProductionOrderNumber": ORDER,
        "ItemNumber": "FG-0006",
        "ScheduledQuantity": quantity,
        "ProductionOrderStatus": "Released",
        "ProductionSiteId": "1",
        "ProductionWarehouseId": "11",
    }
    bom = [
        {
            "dataAreaId": "usmf",
            "ProductionOrderNumber": ORDER,
            "LineNumber": n,
            "ItemNumber": f"RM-000{n}",
            "BOMLineQuantity": 2.0 * n,
            "BOMLineUnitSymbol": "kg",
        }
        for n in (2, 1)  # F&O's order is not the line order
    ]
    route = [
        {
            "dataAreaId": "usmf",
            "ProductionOrderNumber": ORDER,
            "OperationNumber": n,
            "OperationPriority": "Primary",
            "OperationId": f"OP{n}",
        }
        for n in (20, 10)
    ]
    product = {"dataAreaId": "usmf", "ItemNumber": "FG-0006", "InventoryUnitSymbol": "pcs"}
    return {HEADERS: [header], BOM_LINES: bom, ROUTE_OPERATIONS: route, RELEASED_PRODUCTS: [product]}


def release(control_number: int = 7) -> Any:
    return parse(
        {
            "BusinessEventId": ORDER_RELEASED,
            "EventId": f"e-{control_number}",
            "ControlNumber": control_number,
            "ProductionOrderNumber": ORDER,
            "CompanyId": "usmf",
        }
    )


# --- order released -> one work order ---------------------------------------------------------


def test_a_released_order_is_read_over_odata_and_published_as_one_work_order():
    bridge = fake_bridge(fo_rows=released_order())
    handled = order_released(release(), bridge.ports)
    assert handled.outcome is Handling.PUBLISHED and "2 BOM lines, 2 operations" in handled.detail
    [sent] = bridge.publisher.sent
    assert (sent.message_id, sent.session_id, sent.correlation_id) == (f"work-order|USMF|{ORDER}|7", ORDER, "e-7")
    work_order = json.loads(sent.body)
    assert (work_order["quantity"], work_order["unit"], work_order["item_number"]) == (40.0, "pcs", "FG-0006")
    assert [line["line_number"] for line in work_order["bom"]] == [1, 2]
    assert [op["operation_number"] for op in work_order["route"]] == [10, 20]
    applied = bridge.events.applied(RELEASE, "USMF", ORDER)
    assert applied is not None and (applied.control_number, applied.status) == (7, "Released") and applied.brought_by("e-7")


def test_an_order_not_readable_yet_is_retried_by_event_grid_and_publishes_nothing():
    bridge = fake_bridge(fo_rows={})
    with pytest.raises(Transient):
        order_released(release(), bridge.ports)
    assert bridge.publisher.sent == [] and bridge.events.applied(RELEASE, "USMF", ORDER) is None


def test_a_failed_read_publishes_nothing_and_moves_no_guard():
    bridge = fake_bridge(fo_rows=released_order())
    bridge.fo.fail_reads(Transient("F&O unavailable (HTTP 503)", status=503))
    with pytest.raises(Transient):
        order_released(release(), bridge.ports)
    assert bridge.publisher.sent == [] and bridge.events.applied(RELEASE, "USMF", ORDER) is None


def test_an_order_that_makes_no_valid_work_order_is_parked_once_not_published():
    bridge = fake_bridge(fo_rows=released_order(quantity=0))
    handled = order_released(release(), bridge.ports)
    assert handled.outcome is Handling.PARKED and "quantity" in handled.detail
    reads = bridge.fo.stats.requests
    again = order_released(release(), bridge.ports)  # a redelivery: the guard knows it, F&O is not read again
    assert again.outcome is Handling.DUPLICATE and "parked" in again.detail and bridge.fo.stats.requests == reads
    assert order_released(release(6), bridge.ports).outcome is Handling.STALE  # an older release
    [parked] = list(bridge.ledger.query(state=State.PARKED))
    assert (parked.message_id, parked.reason, parked.flow) == (
        f"work-order|USMF|{ORDER}|7",
        ParkReason.INVALID_WORK_ORDER,
        "order_released",
    )
    applied = bridge.events.applied(RELEASE, "USMF", ORDER)
    assert bridge.publisher.sent == [] and applied is not None and (applied.control_number, applied.status) == (7, "Parked")


def test_a_newer_release_of_a_parked_order_is_read_again_and_published():
    bridge = fake_bridge(fo_rows=released_order(quantity=0))
    assert order_released(release(7), bridge.ports).outcome is Handling.PARKED
    bridge.fo.rows[HEADERS][0]["ScheduledQuantity"] = 40.0  # the planner fixed the order, F&O released it again
    assert order_released(release(9), bridge.ports).outcome is Handling.PUBLISHED
    assert [m.message_id for m in bridge.publisher.sent] == [f"work-order|USMF|{ORDER}|9"]


# --- message processed -> the MES message settled, MES told -----------------------------------


def deliver(bridge: FakeBridge, kind: str, message_id: str, **fields: Any) -> Outcome:
    document = {**example(kind), "message_id": message_id, **fields}
    body = json.dumps(document).encode()
    delivery = Delivery(body, message_id, INBOUND_QUEUES[kind], session_id=ORDER)
    return process(delivery, INBOUND_FLOWS[kind], bridge.ports).outcome


def sent_content(bridge: FakeBridge, message_type: str) -> str:
    """`_messageContent` exactly as the bridge sent it (what F&O echoes in its event)."""
    [call] = [c for c in bridge.fo.calls if c.what == message_type]
    return message_content(call.body["content"])


def processed(content: str, state: str = "Processed", *, event_id: str = "p-1", at: datetime | None = None, **fields: Any) -> Any:
    return parse(
        {
            "BusinessEventId": MESSAGE_PROCESSED,
            "EventId": event_id,
            "ControlNumber": 1,
            "EventTime": f"/Date({int((at or datetime.now(UTC)).timestamp() * 1000)})/",
            "BusinessEventLegalEntity": "usmf",
            "MessageContent": content,
            "MessageState": state,
            "MessageType": "ProdProductionOrderStart",
            **fields,
        }
    )


@pytest.fixture
def bridge() -> FakeBridge:
    return fake_bridge()


def test_a_processed_message_is_marked_processed_and_mes_hears_it_was_accepted(bridge):
    assert deliver(bridge, "production_started", "start-1", sequence=1) is Outcome.FORWARDED
    handled = message_processed(processed(sent_content(bridge, "ProdProductionOrderStart")), bridge.ports)
    assert handled.outcome is Handling.MATCHED
    row = bridge.ledger.get("USMF", "start-1")
    assert row is not None and row.state is State.PROCESSED and row.extra["FoEventId"] == "p-1"
    [told] = bridge.publisher.sent
    outcome = json.loads(told.body)
    assert told.message_id == "outcome|USMF|start-1|accepted" and (outcome["outcome"], outcome["mes_message_id"]) == (
        "accepted",
        "start-1",
    )


def test_a_failed_message_keeps_f_and_o_s_infolog_and_mes_hears_the_rejection_then_its_withdrawal(bridge):
    deliver(bridge, "production_started", "start-1", sequence=1)
    content = sent_content(bridge, "ProdProductionOrderStart")
    failed = message_processed(processed(content, "Failed", MessageInfolog="Order P000123 is not released."), bridge.ports)
    assert failed.outcome is Handling.MATCHED
    row = bridge.ledger.get("USMF", "start-1")
    assert row is not None and (row.state, row.reason, row.infolog) == (
        State.FAILED,
        ParkReason.FO_FAILED,
        "Order P000123 is not released.",
    )
    reprocessed = message_processed(processed(content, event_id="p-2"), bridge.ports)
    assert reprocessed.outcome is Handling.MATCHED and bridge.ledger.get("USMF", "start-1").state is State.PROCESSED
    outcomes = [json.loads(m.body) for m in bridge.publisher.sent]
    assert [(o["outcome"], o.get("supersedes")) for o in outcomes] == [("rejected", None), ("accepted", "rejected")]
    assert outcomes[0]["infolog"] == "Order P000123 is not released."


def test_a_processed_event_settles_an_in_doubt_message_and_does_the_forward_s_bookkeeping(bridge):
    bridge.fo.answer(InDoubt("no answer"))
    assert deliver(bridge, "material_consumed", "m-1", sequence=1) is Outcome.PARKED
    assert (
        deliver(bridge, "material_consumed", "m-2", sequence=2, body={"lines": example("material_consumed")["body"]["lines"][:1]})
        is Outcome.WAITING
    )
    [call] = bridge.fo.calls
    content = message_content(call.body["content"])
    handled = message_processed(processed(content, MessageType="ProdProductionOrderPickingList"), bridge.ports)
    assert handled.outcome is Handling.MATCHED
    row = bridge.ledger.get("USMF", "m-1")
    assert row is not None and row.state is State.PROCESSED and "settles the doubt" in row.detail
    assert bridge.gate.read("USMF", ORDER).watermark == 1  # the watermark the forward would have moved
    lines = example("material_consumed")["body"]["lines"]
    assert set(bridge.lineage.batches_of_order("USMF", ORDER, "consumed")) == {
        BatchRef(line["item_number"], line["batch_number"]) for line in lines
    }
    assert bridge.requeue.scheduled[-1].message_id.startswith("m-2|wake-")  # what waited behind it resumes


def test_a_final_state_f_and_o_has_not_reached_is_ignored(bridge):
    assert message_processed(processed("{}", "Queued"), bridge.ports).outcome is Handling.IGNORED


def test_a_processed_message_not_matched_yet_is_retried_then_ignored_once_old(bridge):
    with pytest.raises(Transient):
        message_processed(processed('{"not":"ours"}'), bridge.ports)
    late = processed('{"not":"ours"}', at=datetime.now(UTC) - MATCH_GRACE - timedelta(seconds=1))
    assert message_processed(late, bridge.ports).outcome is Handling.IGNORED
    assert bridge.publisher.sent == []


def test_a_content_whose_messages_are_all_settled_is_a_duplicate(bridge):
    deliver(bridge, "production_started", "start-1", sequence=1)
    content = sent_content(bridge, "ProdProductionOrderStart")
    message_processed(processed(content), bridge.ports)
    assert message_processed(processed(content, event_id="p-2"), bridge.ports).outcome is Handling.DUPLICATE
    assert message_processed(processed(content), bridge.ports).outcome is Handling.DUPLICATE  # p-1 redelivered
    assert len(bridge.publisher.sent) == 1


def test_the_redelivery_of_the_event_that_settled_one_message_does_not_settle_another_with_its_content(bridge):
    deliver(bridge, "production_started", "start-1", sequence=1)
    content = sent_content(bridge, "ProdProductionOrderStart")
    twin = bridge.ledger.get("USMF", "start-1")
    assert twin is not None
    bridge.ledger.create(replace(twin, message_id="start-2", etag="", history=()))
    bridge.ledger.write(content_index_row("USMF", twin.extra["ContentHash"], "start-2", "ProdProductionOrderStart"))
    assert message_processed(processed(content), bridge.ports).detail == "start-1 Processed"
    again = message_processed(processed(content), bridge.ports)
    assert again.outcome is Handling.DUPLICATE and bridge.ledger.get("USMF", "start-2").state is State.FORWARDED
    assert message_processed(processed(content, event_id="p-2"), bridge.ports).detail == "start-2 Processed"


def test_a_failed_publish_leaves_the_row_open_for_event_grid_s_retry(bridge):
    deliver(bridge, "production_started", "start-1", sequence=1)
    content = sent_content(bridge, "ProdProductionOrderStart")
    bridge.publisher.refuse = 1
    with pytest.raises(RuntimeError):
        message_processed(processed(content), bridge.ports)
    assert bridge.ledger.get("USMF", "start-1").state is State.FORWARDED
    assert message_processed(processed(content), bridge.ports).outcome is Handling.MATCHED
