"""F&O -> MES: business events through the Event Grid functions to the MES topic."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage

from devtools import mes
from devtools.local_host.host import to_event_grid_event
from functions import material_consumed as consumed_fn
from functions import operation_reported as operation_fn
from functions import order_released as released_fn
from functions import order_status_changed as status_fn
from functions import production_started as started_fn
from shared.errors import Transient
from shared.outbound.handlers import receive
from shared.store.ledger import State
from shared.topology import MES_TOPIC

pytestmark = pytest.mark.e2e


def published(stack, kind: str | None = None) -> list[dict[str, Any]]:
    messages = stack.broker.queue(MES_TOPIC).active
    bodies = [dict(json.loads(m.body), _session=m.session_id, _message_id=m.message_id) for m in messages]
    return [b for b in bodies if kind is None or b["type"] == kind]


def trigger(document):
    return ServiceBusMessage(
        body=mes.encode(document),
        message_id=uuid.uuid4().hex,
        session_id=document.get("production_order", "x"),
        delivery_count=1,
        enqueued_time_utc=datetime.now(UTC),
        application_properties={},
        user_properties={},
    )


def test_one_work_order_per_release_even_when_delivered_twice_and_out_of_order(stack):
    emulator = stack.emulator
    emulator.app.events.duplicate_rate = 1.0
    emulator.app.events.reorder_window = 4
    emulator.subscribe(stack.host.event_grid_sink())
    orders = ["P000031", "P000032", "P000033", "P000034"]
    for order in orders:
        emulator.app.change_status("usmf", order, "Scheduled")
        emulator.app.release_order("usmf", order)
    assert emulator.wait_idle(20)
    work_orders = published(stack, "work_order")
    assert sorted(w["production_order"] for w in work_orders) == orders
    for work_order in work_orders:
        number = work_order["production_order"]
        assert work_order["_session"] == number and work_order["_message_id"].startswith("work-order|")
        bom = [r for r in emulator.app.tables["ProductionOrderBillOfMaterialLines"] if r["ProductionOrderNumber"] == number]
        route = [r for r in emulator.app.tables["ProductionOrderRouteOperations"] if r["ProductionOrderNumber"] == number]
        assert [(b["item_number"], b["quantity"]) for b in work_order["bom"]] == [
            (r["ItemNumber"], r["BOMLineQuantity"]) for r in bom
        ]
        assert [(o["operation_number"], o["operation_id"]) for o in work_order["route"]] == [
            (r["OperationNumber"], r["OperationId"]) for r in route
        ]
        header = emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber=number)
        assert work_order["item_number"] == header["ItemNumber"] and work_order["quantity"] == header["ScheduledQuantity"]
    assert stack.host.stats.event_grid_invocations >= 2 * 3 * len(orders)  # doubled, to three functions


def test_a_message_fo_fails_is_marked_failed_with_its_infolog_and_rejected_to_mes(stack):
    emulator = stack.emulator
    emulator.subscribe(stack.host.event_grid_sink())
    start = mes.event("production_started", "P000035", {}, sequence=1)
    consume = mes.event(
        "operation_reported", "P000035", {"lines": [{"operation_number": 990, "hours": 1}]}, sequence=2
    )  # not on the route
    started_fn.production_started(trigger(start))
    operation_fn.operation_reported(trigger(consume))
    assert emulator.wait_idle(20)
    ledger = stack.ports.ledger
    assert ledger.get("USMF", start["message_id"]).state is State.PROCESSED
    failed = ledger.get("USMF", consume["message_id"])
    assert failed.state is State.FAILED and "Operation 990 does not exist" in failed.infolog
    outcomes = {o["mes_message_id"]: o for o in published(stack, "message_outcome")}
    assert outcomes[start["message_id"]]["outcome"] == "accepted"
    assert (
        outcomes[consume["message_id"]]["outcome"] == "rejected" and "Operation 990" in outcomes[consume["message_id"]]["infolog"]
    )


def test_a_stale_status_event_does_not_overwrite_a_newer_one(stack):
    app = stack.emulator.app
    received: list[dict[str, Any]] = []
    stack.emulator.subscribe(received.extend, test_event=False)
    app.change_status("usmf", "P000037", "Stopped")
    app.change_status("usmf", "P000037", "Released")
    assert stack.emulator.wait_idle(10)
    older, newer = received
    status_fn.order_status_changed(to_event_grid_event(newer))
    status_fn.order_status_changed(to_event_grid_event(older))  # arrives late
    statuses = [m["status"] for m in published(stack, "order_status_changed")]
    assert statuses == ["Released"]
    assert stack.ports.events.applied_status("USMF", "P000037").status == "Released"


def test_data_as_an_object_test_events_and_other_events_are_handled(stack):
    emulator = stack.emulator
    emulator.app.events.as_object = True
    emulator.subscribe(stack.host.event_grid_sink())  # sends the activation test event first
    emulator.app.change_status("usmf", "P000038", "Stopped")
    assert emulator.wait_idle(10)
    assert [m["status"] for m in published(stack, "order_status_changed")] == ["Stopped"]
    assert stack.host.stats.errors == []


def test_an_in_doubt_message_is_settled_when_fo_reports_it_processed(stack):
    emulator = stack.emulator
    emulator.subscribe(stack.host.event_grid_sink())
    started_fn.production_started(trigger(mes.event("production_started", "P000039", {}, sequence=1)))
    assert emulator.wait_idle(10)
    emulator.set_faults(drop_rate=1.0)
    consume = mes.event(
        "material_consumed", "P000039", {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-002", "quantity": 1}]}
    )
    consume["sequence"] = 2
    # Seeded faults drop half the connections before and half after F&O did the work; retry until one was applied.
    for attempt in range(20):
        document = {**consume, "message_id": f"{consume['message_id']}-{attempt}"}
        consumed_fn.material_consumed(trigger(document))
        if emulator.app.send_message_calls >= 2:
            break
    emulator.set_faults(drop_rate=0.0)
    assert emulator.wait_idle(10)
    entry = stack.ports.ledger.get("USMF", document["message_id"])
    assert entry.state is State.PROCESSED and "settles the doubt" in entry.detail
    in_doubt = [e for e in stack.ports.ledger.query(state=State.PARKED) if e.reason == "in_doubt"]
    assert all(e.message_id != document["message_id"] for e in in_doubt)
    # What the forward would have recorded is caught up: the order's watermark and the genealogy.
    assert stack.ports.gate.read("USMF", "P000039").watermark == 2
    consumed = stack.ports.lineage.batches_of_order("USMF", "P000039", "consumed")
    assert {(r.item, r.batch) for r in consumed} == {("RM-0001", "B0001-002")}


class Flaky:
    """A port whose `method` raises `error` on its first `failures` calls (those `when` accepts), then works."""

    def __init__(
        self, inner: Any, method: str, failures: int, error: Exception, when: Callable[..., bool] = lambda *a, **k: True
    ) -> None:
        self.inner, self.method, self.failures, self.error, self.when = inner, method, failures, error, when
        self.raised = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name != self.method:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                fail = self.raised < self.failures and self.when(*args, **kwargs)
                self.raised += fail
            if fail:
                raise self.error
            return attribute(*args, **kwargs)

        return call


def work_orders_of(stack, order: str) -> list[dict[str, Any]]:
    return [w for w in published(stack, "work_order") if w["production_order"] == order]


def test_a_release_whose_order_read_fails_is_published_when_event_grid_retries(stack):
    stack.ports.fo = Flaky(stack.ports.fo, "query", 2, Transient("F&O answered 503"))
    stack.emulator.subscribe(stack.host.event_grid_sink())
    stack.emulator.app.change_status("usmf", "P000024", "Scheduled")
    stack.emulator.app.release_order("usmf", "P000024")
    assert stack.emulator.wait_idle(20)
    assert stack.ports.fo.raised == 2
    assert len(work_orders_of(stack, "P000024")) == 1


def test_a_refused_publish_is_retried_and_reaches_mes_once(stack):
    stack.ports.publisher = Flaky(stack.ports.publisher, "publish", 3, RuntimeError("the MES topic refused the send"))
    stack.emulator.subscribe(stack.host.event_grid_sink())
    stack.emulator.app.change_status("usmf", "P000025", "Scheduled")
    stack.emulator.app.release_order("usmf", "P000025")
    start = mes.event("production_started", "P000025", {}, sequence=1)
    started_fn.production_started(trigger(start))
    assert stack.emulator.wait_idle(20)
    assert stack.ports.publisher.raised == 3
    assert len(work_orders_of(stack, "P000025")) == 1
    assert [o["outcome"] for o in published(stack, "message_outcome") if o["mes_message_id"] == start["message_id"]] == [
        "accepted"
    ]
    assert stack.ports.ledger.get("USMF", start["message_id"]).state is State.PROCESSED


def test_a_crash_between_publish_and_record_sends_nothing_twice(stack):
    stack.ports.events = Flaky(stack.ports.events, "apply_control_number", 1, RuntimeError("worker stopped"))
    settling = lambda entry, state, **changes: state is State.PROCESSED  # noqa: E731
    stack.ports.ledger = Flaky(stack.ports.ledger, "transition", 1, RuntimeError("worker stopped"), when=settling)
    stack.emulator.subscribe(stack.host.event_grid_sink())
    stack.emulator.app.change_status("usmf", "P000026", "Scheduled")
    stack.emulator.app.release_order("usmf", "P000026")
    assert stack.emulator.wait_idle(20)
    start = mes.event("production_started", "P000026", {}, sequence=1)
    started_fn.production_started(trigger(start))
    assert stack.emulator.wait_idle(20)
    assert stack.ports.events.raised == 1 and stack.ports.ledger.raised == 1
    assert len(work_orders_of(stack, "P000026")) == 1
    outcomes = [o for o in published(stack, "message_outcome") if o["mes_message_id"] == start["message_id"]]
    assert [o["outcome"] for o in outcomes] == ["accepted"]
    assert stack.broker.queue(MES_TOPIC).duplicates_dropped >= 2  # the retries' copies


def test_a_status_change_delivered_before_the_release_leaves_the_release_its_work_order(stack):
    app = stack.emulator.app
    received: list[dict[str, Any]] = []
    stack.emulator.subscribe(received.extend, test_event=False)
    app.change_status("usmf", "P000027", "Scheduled")
    app.release_order("usmf", "P000027")
    app.change_status("usmf", "P000027", "Stopped")
    assert stack.emulator.wait_idle(10)
    scheduled, released, stopped = received
    status_fn.order_status_changed(to_event_grid_event(stopped))
    released_fn.order_released(to_event_grid_event(released))
    late = to_event_grid_event(scheduled)
    handled = receive("order_status_changed", late.id, late.get_json(), stack.ports)
    assert handled.outcome == "superseded" and "older than Stopped" in handled.detail
    assert len(work_orders_of(stack, "P000027")) == 1
    assert [m["status"] for m in published(stack, "order_status_changed")] == ["Stopped"]
    # Its redelivery is recognised by the same read: still older, nothing published.
    assert receive("order_status_changed", late.id, late.get_json(), stack.ports).outcome == "superseded"
    assert [m["status"] for m in published(stack, "order_status_changed")] == ["Stopped"]


def test_a_failed_message_processed_after_all_is_accepted_and_supersedes_the_rejection(stack):
    emulator = stack.emulator
    emulator.subscribe(stack.host.event_grid_sink())
    start = mes.event("production_started", "P000028", {}, sequence=1)
    report = mes.event("operation_reported", "P000028", {"lines": [{"operation_number": 990, "hours": 1}]}, sequence=2)
    started_fn.production_started(trigger(start))
    operation_fn.operation_reported(trigger(report))
    assert emulator.wait_idle(20)
    assert stack.ports.ledger.get("USMF", report["message_id"]).state is State.FAILED
    # The planner adds the missing operation, an operator re-processes the message in F&O.
    with emulator.app.lock:
        emulator.app.tables["ProductionOrderRouteOperations"].append(
            {
                **next(
                    r for r in emulator.app.tables["ProductionOrderRouteOperations"] if r["ProductionOrderNumber"] == "P000028"
                ),
                "OperationNumber": 990,
            }
        )
    failed = next(m for m in emulator.app.messages if m.order == "P000028" and m.state == "Failed")
    emulator.app.reprocess_message(failed.id)
    assert emulator.wait_idle(20)
    entry = stack.ports.ledger.get("USMF", report["message_id"])
    assert entry.state is State.PROCESSED and "re-processed" in entry.detail
    outcomes = [o for o in published(stack, "message_outcome") if o["mes_message_id"] == report["message_id"]]
    assert [(o["outcome"], o.get("supersedes")) for o in outcomes] == [("rejected", None), ("accepted", "rejected")]
    assert len({o["_message_id"] for o in outcomes}) == 2
    assert stack.ports.gate.read("USMF", "P000028").watermark == 2


def test_a_released_order_without_quantity_or_unit_is_parked_with_the_reason_not_published(stack):
    app = stack.emulator.app
    app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000029")["ScheduledQuantity"] = None
    header = app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000030")
    app.find("ReleasedProductsV2", dataAreaId="usmf", ItemNumber=header["ItemNumber"])["InventoryUnitSymbol"] = ""
    stack.emulator.subscribe(stack.host.event_grid_sink())
    for order in ("P000029", "P000030"):
        app.change_status("usmf", order, "Scheduled")
        app.release_order("usmf", order)
    assert stack.emulator.wait_idle(20)
    assert work_orders_of(stack, "P000029") == work_orders_of(stack, "P000030") == []
    parked = {e.production_order: e for e in stack.ports.ledger.query(state=State.PARKED) if e.flow == "order_released"}
    assert parked["P000029"].reason == parked["P000030"].reason == "invalid_work_order"
    assert "quantity" in parked["P000029"].detail and "unit" in parked["P000030"].detail
    assert stack.host.stats.errors == []


def test_the_work_order_carries_the_documented_fields(stack):
    stack.emulator.subscribe(stack.host.event_grid_sink())
    stack.emulator.app.change_status("usmf", "P000023", "Scheduled")
    stack.emulator.app.release_order("usmf", "P000023")
    assert stack.emulator.wait_idle(20)
    (work_order,) = work_orders_of(stack, "P000023")
    app = stack.emulator.app
    header = app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000023")
    product = app.find("ReleasedProductsV2", dataAreaId="usmf", ItemNumber=header["ItemNumber"])
    assert (work_order["quantity"], work_order["unit"]) == (header["ScheduledQuantity"], product["InventoryUnitSymbol"])
    bom = [r for r in app.tables["ProductionOrderBillOfMaterialLines"] if r["ProductionOrderNumber"] == "P000023"]
    assert [(b["unit"], b["operation_number"]) for b in work_order["bom"]] == [
        (r["BOMLineUnitSymbol"], r["RouteOperationNumber"]) for r in bom
    ]
    route = [r for r in app.tables["ProductionOrderRouteOperations"] if r["ProductionOrderNumber"] == "P000023"]
    assert [o["resource"] for o in work_order["route"]] == [r["CostingOperationResourceId"] for r in route]
    assert all(o["resource"] and o["operation_id"] for o in work_order["route"])
