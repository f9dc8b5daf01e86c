"""Each inbound flow through its decorated function, against Azurite and the F&O emulator."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage

from devtools import mes
from functions import inventory_adjusted as adjusted_fn
from functions import inventory_moved as inventory_fn
from functions import material_consumed as consumed_fn
from functions import operation_reported as operation_fn
from functions import output_reported as output_fn
from functions import production_ended as ended_fn
from functions import production_started as started_fn
from functions import quality_result as quality_fn
from shared.clock import utcnow
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.order_gate import Step
from shared.store.ledger import LedgerEntry, State, lease, payload_hash
from tests.e2e.conftest import failures_other_than_storage_hiccups

pytestmark = pytest.mark.e2e

FUNCTIONS = {
    "production_started": started_fn.production_started,
    "material_consumed": consumed_fn.material_consumed,
    "operation_reported": operation_fn.operation_reported,
    "output_reported": output_fn.output_reported,
    "production_ended": ended_fn.production_ended,
    "quality_result": quality_fn.quality_result,
    "inventory_moved": inventory_fn.inventory_moved,
    "inventory_adjusted": adjusted_fn.inventory_adjusted,
}


def trigger(
    document: dict[str, Any] | bytes, *, delivery_count: int = 1, broker_id: str | None = None, session: str | None = None
):
    body = document if isinstance(document, bytes) else mes.encode(document)
    order = document.get("production_order") if isinstance(document, dict) else None
    return ServiceBusMessage(
        body=body,
        message_id=broker_id or uuid.uuid4().hex,
        session_id=session or order or "no-order",
        delivery_count=delivery_count,
        enqueued_time_utc=datetime.now(UTC),
        application_properties={},
        user_properties={},
    )


def order_lifecycle(order: str, item: str, quantity: float, *, sequenced: bool = False) -> list[dict[str, Any]]:
    """The five events of one order; `sequenced` numbers them 1..5 as a MES that orders across flows does."""
    events = [
        mes.event("production_started", order, {"started_quantity": quantity}),
        mes.event(
            "material_consumed",
            order,
            {
                "lines": [
                    {"item_number": "RM-0001", "batch_number": "B0001-002", "quantity": 2.5},
                    {"item_number": "RM-0002", "batch_number": "B0002-001", "quantity": 1.0},
                ]
            },
        ),
        mes.event(
            "operation_reported",
            order,
            {"lines": [{"operation_number": 10, "hours": 1.5, "good_quantity": quantity, "operation_completed": True}]},
        ),
        mes.event(
            "output_reported",
            order,
            {"item_number": item, "batch_number": f"FG-{order}", "good_quantity": quantity, "end_job": True},
        ),
        mes.event("production_ended", order, {}),
    ]
    if sequenced:
        for number, event in enumerate(events, start=1):
            event["sequence"] = number
    return events


def quality_result() -> dict[str, Any]:
    body = {
        "item_number": "RM-0003",
        "batch_number": "B0003-001",
        "test_group": "CHEM",
        "outcome": "pass",
        "tests": [{"test_id": "PH", "value": 7.0, "outcome": "pass"}],
    }
    return mes.event("quality_result", None, body)


def test_every_flow_takes_effect_exactly_once_when_delivered_three_times(stack):
    emulator = stack.emulator
    order = emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000011")
    events = order_lifecycle("P000011", order["ItemNumber"], order["ScheduledQuantity"])
    events.append(quality_result())
    events.append(
        mes.event(
            "inventory_moved",
            None,
            {
                "item_number": "RM-0004",
                "batch_number": "B0004-001",
                "quantity": 12.0,
                "from_site": "1",
                "from_warehouse": "11",
                "to_site": "1",
                "to_warehouse": "12",
            },
        )
    )
    for document in events:
        function = FUNCTIONS[document["type"]]
        for count in (1, 2, 3):  # a redelivery and a MES resend with a fresh broker id
            function(trigger(document, delivery_count=count))
    assert emulator.wait_idle(10)

    sent = emulator.app.messages
    assert [m.message_type for m in sent] == [
        "ProdProductionOrderStart",
        "ProdProductionOrderPickingList",
        "ProdProductionOrderRouteCard",
        "ProdProductionOrderReportFinished",
        "ProdProductionOrderEnd",
    ]
    assert all(m.state == "Processed" for m in sent), [m.infolog for m in sent]
    totals = emulator.app.order_ledgers[("usmf", "P000011")]
    assert dict(totals.consumed) == {"RM-0001/B0001-002": 2.5, "RM-0002/B0002-001": 1.0}
    assert dict(totals.reported_good) == {f"{order['ItemNumber']}/FG-P000011": order["ScheduledQuantity"]}
    assert order["ProductionOrderStatus"] == "Completed"
    assert len(emulator.app.quality_results) == 1
    assert len(emulator.app.tables["InventoryTransferJournalHeaders"]) == 1
    [line] = emulator.app.tables["InventoryTransferJournalEntries"]
    assert (line["InventoryQuantity"], line["SourceWarehouseId"], line["DestinationWarehouseId"]) == (12.0, "11", "12")
    assert emulator.app.tables["InventoryMovementJournalHeaders"] == []  # a move is no movement journal

    ledger = stack.ports.ledger
    for document in events:
        entry = ledger.get("USMF", document["message_id"])
        assert entry.state is State.FORWARDED, (document["type"], entry)
        assert [h["state"] for h in entry.history] == ["Forwarding", "Forwarded"]

    upstream = stack.ports.lineage.upstream("USMF", order["ItemNumber"], "FG-P000011")
    consumed = upstream["orders"][0]["consumed"]
    assert upstream["orders"][0]["order"] == "P000011"
    assert {(c["item"], c["batch"], c["quantity"]) for c in consumed} == {
        ("RM-0001", "B0001-002", 2.5),
        ("RM-0002", "B0002-001", 1.0),
    }
    downstream = stack.ports.lineage.downstream("USMF", "RM-0001", "B0001-002")
    assert downstream["orders"][0]["produced"][0]["batch"] == "FG-P000011"
    # The moved batch: its genealogy shows the transfer to warehouse 12, once for three deliveries.
    [transfer] = stack.ports.lineage.downstream("USMF", "RM-0004", "B0004-001")["transfers"]
    assert (transfer["from_warehouse"], transfer["to_warehouse"]) == ("11", "12")
    assert [(b["batch"], b["warehouse"], b["quantity"]) for b in transfer["produced"]] == [("B0004-001", "12", 12.0)]


def test_a_batch_to_batch_move_is_one_transfer_line_and_the_genealogy_follows_the_new_batch(stack):
    body = {"item_number": "RM-0004", "batch_number": "B0004-001", "to_batch_number": "B0004-002", "quantity": 2.0}
    body |= {"from_site": "1", "from_warehouse": "11", "to_site": "1", "to_warehouse": "11", "to_location": "QC-01"}
    move = mes.event("inventory_moved", None, body)
    FUNCTIONS["inventory_moved"](trigger(move))
    [line] = stack.emulator.app.tables["InventoryTransferJournalEntries"]
    assert (line["SourceItemBatchNumber"], line["DestinationItemBatchNumber"]) == ("B0004-001", "B0004-002")
    assert line["DestinationWarehouseLocationId"] == "QC-01" and line["TransactionDate"].endswith("T00:00:00Z")
    [transfer] = stack.ports.lineage.downstream("USMF", "RM-0004", "B0004-001")["transfers"]
    assert [child["batch"] for child in transfer["produced"]] == ["B0004-002"]
    upstream = stack.ports.lineage.upstream("USMF", "RM-0004", "B0004-002")
    assert upstream["transfers"][0]["consumed"][0]["batch"] == "B0004-001"

    same = mes.event("inventory_moved", None, {**body, "to_batch_number": "B0004-001", "to_location": None})
    FUNCTIONS["inventory_moved"](trigger({**same, "body": {k: v for k, v in same["body"].items() if v is not None}}))
    entry = stack.ports.ledger.get("USMF", same["message_id"])
    assert entry.state is State.PARKED and entry.reason == "invalid_message" and "changes nothing" in entry.detail


def test_an_adjustment_posts_once_against_its_offset_account_and_without_one_is_parked(stack):
    emulator = stack.emulator
    body = {"item_number": "RM-0004", "batch_number": "B0004-001", "quantity": -3.0, "site": "1", "warehouse": "11"}
    adjustment = mes.event("inventory_adjusted", None, {**body, "offset_account": "600140"})
    for count in (1, 2, 3):
        FUNCTIONS["inventory_adjusted"](trigger(adjustment, delivery_count=count))
    [header] = emulator.app.tables["InventoryMovementJournalHeaders"]
    [line] = emulator.app.tables["InventoryMovementJournalEntries"]
    assert header["JournalNameId"] == "IMov" and header["JournalNumber"] == line["JournalNumber"]
    assert (line["InventoryQuantity"], line["OffsetMainAccountIdDisplayValue"]) == (-3.0, "600140")
    assert emulator.app.tables["InventoryTransferJournalHeaders"] == []
    assert stack.ports.ledger.get("USMF", adjustment["message_id"]).state is State.FORWARDED

    no_account = mes.event("inventory_adjusted", None, body)
    FUNCTIONS["inventory_adjusted"](trigger(no_account))
    entry = stack.ports.ledger.get("USMF", no_account["message_id"])
    assert entry.state is State.PARKED and entry.reason == "rejected"
    assert "OffsetMainAccountIdDisplayValue" in entry.infolog
    assert len(emulator.app.tables["InventoryMovementJournalHeaders"]) == 1  # the changeset was rolled back


def test_flows_run_through_the_local_host_in_session_order(stack):
    # The five flows run on five queues, concurrently: only the MES sequence number orders an order's
    # messages across them (README, "The order gate"). Without it, an end taken in at the same moment
    # as its report as finished may reach F&O first, and F&O then fails the end.
    emulator, broker = stack.emulator, stack.broker
    for n in range(12, 20):
        order = emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber=f"P{n:06d}")
        lifecycle = order_lifecycle(
            order["ProductionOrderNumber"], order["ItemNumber"], order["ScheduledQuantity"], sequenced=True
        )
        for document in lifecycle:
            broker.send(INBOUND_FLOWS[document["type"]].queue, mes.encode(document), session_id=document["production_order"])
    with stack.host:
        assert stack.host.wait_idle(60)
    assert emulator.wait_idle(10)
    assert failures_other_than_storage_hiccups(stack.host) == []
    assert len(emulator.app.messages) == 40
    assert all(m.state == "Processed" for m in emulator.app.messages), [m.infolog for m in emulator.app.messages if m.infolog]


def test_an_end_without_sequence_waits_for_a_message_taken_in_while_its_gate_decided(stack, monkeypatch):
    # The interleaving that made an end overtake its report as finished under load: the output was
    # taken in while the end's gate decided (its ledger row, written after its own decision, was not
    # there yet) and is being forwarded when the end would be sent. The end looks again once its own
    # row is written, and waits for it.
    emulator = stack.emulator
    order = emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000024")
    start, *_, output, end = order_lifecycle("P000024", order["ItemNumber"], order["ScheduledQuantity"])
    started_fn.production_started(trigger(start))
    plan = stack.ports.gate.plan

    def decide_while_the_output_is_taken_in(company, order_number, step, sequence, **kwargs):
        decision = plan(company, order_number, step, sequence, **kwargs)
        if step is Step.END:
            body = mes.encode(output)
            in_flight = LedgerEntry(
                company="USMF",
                message_id=output["message_id"],
                state=State.FORWARDING,
                flow="output_reported",
                attempts=1,
                production_order="P000024",
                payload_hash=payload_hash(body),
                payload_size=len(body),
                received_at=utcnow(),
                lease_until=lease(60),
            )
            stack.ports.ledger.create(in_flight, payload=body)
        return decision

    monkeypatch.setattr(stack.ports.gate, "plan", decide_while_the_output_is_taken_in)
    FUNCTIONS["production_ended"](trigger(end))
    entry = stack.ports.ledger.get("USMF", end["message_id"])
    assert entry.state is State.WAITING and entry.reason == "ordering", entry
    assert "1 earlier message(s) of P000024" in entry.detail
    assert [m.message_type for m in emulator.app.messages] == ["ProdProductionOrderStart"]  # no end before the output


HOSTILE = [
    (b"this is not json", "invalid_json"),
    (b"", "empty"),
    (b'{"a": "' + b"x" * 300_000 + b'"}', "too_large"),
    (b"[" * 100 + b"]" * 100, "too_deep"),
    (b"[1, 2]", "invalid_message"),
    ({"drop": "production_order"}, "invalid_message"),
    ({"type": "machine_breakdown"}, "unknown_type"),
    ({"type": "output_reported"}, "wrong_queue"),
    ({"schema_version": "9.0"}, "unsupported_version"),
    ({"body": {"lines": [{"item_number": "RM-0001", "quantity": "lots"}]}}, "invalid_message"),
    ({"body": {"lines": [{"item_number": "RM-0001", "quantity": 5}], "extra": 1}}, "invalid_message"),
    (
        b'{"message_id": "nan-1", "type": "material_consumed", "company": "USMF", "plant": "1", "production_order": "P000001", '
        b'"occurred_at": "2026-11-23T08:00:00+00:00", "body": {"lines": [{"item_number": "RM-0001", "quantity": NaN}]}}',
        "invalid_json",
    ),
    ({"body": {"lines": [{"item_number": "RM-0001", "quantity": 1e999}]}}, "invalid_json"),
    ({"body": {"lines": [{"item_number": "RM-0001", "quantity": 2e9}]}}, "invalid_message"),
    ({"body": {"lines": [{"item_number": "RM-0001", "quantity": -4}]}}, "invalid_message"),
    ({"occurred_at": "1899-12-31T00:00:00+00:00"}, "invalid_message"),
    ({"occurred_at": "2026-11-23T08:00:00"}, "invalid_message"),
    ({"production_order": "P00\x0701"}, "invalid_message"),
    ({"production_order": "P0'01*"}, "invalid_message"),
    ({"body": {"lines": [{"item_number": "RM-0001' or 1 eq 1", "quantity": 1}]}}, "invalid_message"),
    ({"company": "DEMF"}, "unknown_company"),
    ({"message_id": ""}, "invalid_message"),
    ({"body": {"lines": []}}, "invalid_message"),
]


@pytest.mark.parametrize(("change", "reason"), HOSTILE, ids=[f"{n}-{r}" for n, (_, r) in enumerate(HOSTILE)])
def test_hostile_input_is_parked_with_its_own_reason_and_never_reaches_fo(stack, change, reason):
    if isinstance(change, bytes):
        body = change
    else:
        document = mes.event(
            "material_consumed", "P000001", {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-001", "quantity": 1}]}
        )
        for key, value in change.items():
            if key == "drop":
                del document[value]
            else:
                document[key] = value
        body = json.dumps(document).encode()
    broker_id = uuid.uuid4().hex
    consumed_fn.material_consumed(trigger(body, broker_id=broker_id, session="P000001"))
    parked = list(stack.ports.ledger.query(state=State.PARKED))
    assert len(parked) == 1 and parked[0].reason == reason, parked
    assert parked[0].detail
    assert stack.ports.ledger.payload(parked[0].company, parked[0].message_id)[:1000] == body[:1000]
    assert stack.emulator.stats.by_route.get("api", 0) == stack.emulator.stats.by_route.get("data", 0) == 0
    # A second delivery of the same broken message is a duplicate, not a second parked row.
    consumed_fn.material_consumed(trigger(body, broker_id=broker_id, session="P000001", delivery_count=2))
    assert len(list(stack.ports.ledger.query(state=State.PARKED))) == 1


def test_a_business_rejection_is_parked_with_the_infolog(stack):
    move = mes.event(
        "inventory_moved",
        None,
        {
            "item_number": "RM-0004",
            "quantity": 1.0,
            "from_site": "1",
            "from_warehouse": "99",
            "to_site": "1",
            "to_warehouse": "12",
        },
    )
    inventory_fn.inventory_moved(trigger(move))
    entry = stack.ports.ledger.get("USMF", move["message_id"])
    assert entry.state is State.PARKED and entry.reason == "rejected"
    assert "Warehouse 99 does not belong to site 1" in entry.infolog


def test_an_outage_waits_without_burning_the_delivery_count(stack):
    emulator, broker = stack.emulator, stack.broker
    emulator.set_faults(error_5xx_rate=1.0)
    start = mes.event("production_started", "P000021", {})
    broker.send(INBOUND_FLOWS["production_started"].queue, mes.encode(start), session_id="P000021")
    with stack.host:
        deadline = time.monotonic() + 15
        # No row yet while the host has not picked the message up.
        while (
            (entry := stack.ports.ledger.get("USMF", start["message_id"])) is None or entry.state is not State.WAITING
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert entry is not None and entry.state is State.WAITING and entry.reason == "transient"
        emulator.set_faults(error_5xx_rate=0.0)
        assert stack.host.wait_idle(30)
    assert stack.ports.ledger.get("USMF", start["message_id"]).state is State.FORWARDED
    assert broker.dead_letters() == []
    assert failures_other_than_storage_hiccups(stack.host) == []  # F&O's outage never spent a delivery


def test_no_answer_after_a_send_message_parks_it_in_doubt_but_a_quality_result_is_resent(stack):
    emulator = stack.emulator
    start = mes.event("production_started", "P000022", {})
    started_fn.production_started(trigger(start))
    emulator.set_faults(drop_rate=1.0)
    consume = mes.event(
        "material_consumed", "P000022", {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-002", "quantity": 1}]}
    )
    consumed_fn.material_consumed(trigger(consume))
    entry = stack.ports.ledger.get("USMF", consume["message_id"])
    assert entry.state is State.PARKED and entry.reason == "in_doubt"
    assert entry.extra["Lineage"] and entry.extra["ContentHash"]  # what settling it will need
    # SendMessage has no idempotency key in F&O: a start or an end in doubt is parked as well.
    other_start = mes.event("production_started", "P000023", {})
    started_fn.production_started(trigger(other_start))
    assert stack.ports.ledger.get("USMF", other_start["message_id"]).reason == "in_doubt"
    quality = quality_result()
    quality_fn.quality_result(trigger(quality))
    # The quality service dedupes on the MES message id: repeating it is safe, so it is retried.
    assert stack.ports.ledger.get("USMF", quality["message_id"]).state is State.WAITING
    # A redelivery of the parked message (no operator's token) never sends it again.
    emulator.set_faults(drop_rate=0.0)
    sends = emulator.app.send_message_calls
    consumed_fn.material_consumed(trigger(consume, delivery_count=2))
    consumed_fn.material_consumed(trigger(consume, broker_id="resent-by-the-mes"))
    assert stack.ports.ledger.get("USMF", consume["message_id"]).reason == "in_doubt"
    assert emulator.app.send_message_calls == sends
