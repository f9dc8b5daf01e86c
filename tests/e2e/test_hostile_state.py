"""Hostile input against the stored state (issue 16): what an adversarial probe broke, end to end
through the decorated functions, Azurite and the F&O emulator."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

from devtools import mes
from devtools.local_host.host import to_event_grid_event
from functions import material_consumed as consumed_fn
from functions import message_processed as processed_fn
from functions import operations_http as http
from functions import production_started as started_fn
from shared.ops import operations
from shared.store.ledger import State
from shared.store.lineage import BatchRef
from shared.store.tables import LEDGER_TABLE, service_client, table
from shared.topology import INBOUND_QUEUES, MES_TOPIC

pytestmark = pytest.mark.e2e


def trigger(document: dict[str, Any] | bytes, *, session: str | None = None) -> ServiceBusMessage:
    body = document if isinstance(document, bytes) else mes.encode(document)
    order = document.get("production_order") if isinstance(document, dict) else None
    return ServiceBusMessage(
        body=body,
        message_id=uuid.uuid4().hex,
        session_id=session or order or "no-order",
        delivery_count=1,
        enqueued_time_utc=datetime.now(UTC),
        application_properties={},
        user_properties={},
    )


def request(method: str, route: str, params: dict[str, str], body: Any = None) -> func.HttpRequest:
    raw = json.dumps(body).encode() if body is not None else b""
    return func.HttpRequest(method=method, url=f"http://localhost/api/{route}", params=params, body=raw)


def consumption(order: str, lines: list[tuple[str, str, float]]) -> dict[str, Any]:
    body = {"lines": [{"item_number": item, "batch_number": batch, "quantity": qty} for item, batch, qty in lines]}
    return mes.event("material_consumed", order, body)


def test_the_same_batch_on_two_lines_is_forwarded_with_one_summed_genealogy_edge(stack):
    started_fn.production_started(trigger(mes.event("production_started", "P000024", {})))
    consume = consumption("P000024", [("RM-0002", "B0002-001", 1.0), ("RM-0002", "B0002-001", 2.5), ("RM-0001", "B0001-002", 1)])
    consumed_fn.material_consumed(trigger(consume))
    assert stack.ports.ledger.get("USMF", consume["message_id"]).state is State.FORWARDED
    consumed = stack.ports.lineage.batches_of_order("USMF", "P000024", "consumed")
    assert consumed == {BatchRef("RM-0002", "B0002-001"): 3.5, BatchRef("RM-0001", "B0001-002"): 1.0}
    assert stack.ports.lineage.orders_of_batch("USMF", "RM-0002", "B0002-001", "consumed") == {"P000024"}


def test_the_same_batch_on_two_lines_in_doubt_is_confirmed_with_its_genealogy(stack):
    started_fn.production_started(trigger(mes.event("production_started", "P000025", {})))
    stack.emulator.set_faults(drop_rate=1.0)
    consume = consumption("P000025", [("RM-0002", "B0002-001", 1.0), ("RM-0002", "B0002-001", 2.0)])
    consumed_fn.material_consumed(trigger(consume))
    stack.emulator.set_faults(drop_rate=0.0)
    assert stack.ports.ledger.get("USMF", consume["message_id"]).reason == "in_doubt"
    ports = stack.ports
    confirmed = operations.confirm_applied(
        ports.ledger,
        ports.gate,
        ports.lineage,
        ports.requeue,
        "USMF",
        consume["message_id"],
        "seen in Message processor messages",
    )
    assert confirmed["state"] == "Forwarded"
    assert ports.lineage.batches_of_order("USMF", "P000025", "consumed") == {BatchRef("RM-0002", "B0002-001"): 3.0}


def many_lines(count: int) -> list[tuple[str, str, float]]:
    return [(f"RM-{n % 7 + 1:04d}", f"B{n:04d}-{n % 3 + 1:03d}", 0.5 + n % 4) for n in range(count)]


def test_a_large_in_doubt_consumption_keeps_its_whole_genealogy_and_every_read_works(stack):
    started_fn.production_started(trigger(mes.event("production_started", "P000026", {})))
    stack.emulator.set_faults(drop_rate=1.0)
    consume = consumption("P000026", many_lines(250))
    consumed_fn.material_consumed(trigger(consume))
    stack.emulator.set_faults(drop_rate=0.0)
    ports, message_id = stack.ports, consume["message_id"]
    entry = ports.ledger.get("USMF", message_id)
    assert entry.reason == "in_doubt" and len(entry.extra["Lineage"]) == 250 and entry.unreadable == ()
    assert operations.trace(ports.ledger, "USMF", message_id)["unreadable"] == []
    assert [r["message_id"] for r in operations.parked(ports.ledger, operations.ParkedFilter(reason="in_doubt"))] == [message_id]
    assert len(operations.order_story(ports.ledger, "USMF", "P000026")) == 2
    response = http.list_parked(request("GET", "ops/parked", {"reason": "in_doubt"}))
    assert response.status_code == 200
    confirmed = http.confirm_applied(
        request("POST", "ops/confirm", {"company": "USMF", "id": message_id}, {"note": "seen in F&O"})
    )
    assert confirmed.status_code == 200, confirmed.get_body()
    consumed = ports.lineage.batches_of_order("USMF", "P000026", "consumed")
    assert len(consumed) == 250 and sum(consumed.values()) == sum(q for _, _, q in many_lines(250))


def ledger_rows(stack) -> Any:
    """The ledger's table itself, to plant or read rows as stored (the Ledger keeps its client to itself)."""
    settings = stack.ports.settings
    return table(service_client(settings), settings.tables_prefix + LEDGER_TABLE)


def damaged_row(stack, message_id: str) -> None:
    """A row as an older version wrote it: Extra and History cut at a fixed length, no longer JSON."""
    extra = json.dumps({"ContentHash": "ab", "Lineage": [{"company": "USMF", "order": "P000027"}] * 1000})[:30000]
    ledger_rows(stack).create_entity(
        {
            "PartitionKey": "USMF",
            "RowKey": message_id,
            "Company": "USMF",
            "MessageId": message_id,
            "State": "Parked",
            "Flow": "material_consumed",
            "Reason": "in_doubt",
            "Detail": "no answer",
            "ProductionOrder": "P000027",
            "History": '[{"at": "2026-11-23T09:00:00", "state": "Forw',
            "Extra": extra,
            "Payload0": mes.encode(consumption("P000027", many_lines(2)) | {"message_id": message_id}),
            "PayloadChunks": 1,
        }
    )


def test_a_row_that_cannot_be_parsed_is_listed_and_shown_as_unreadable_and_no_operation_answers_500(stack):
    message_id = f"damaged-{uuid.uuid4().hex[:6]}"
    damaged_row(stack, message_id)
    ledger = stack.ports.ledger
    entry = ledger.get("USMF", message_id)
    assert {u.name for u in entry.unreadable} == {"Extra", "History"} and entry.state is State.PARKED
    shown = operations.trace(ledger, "USMF", message_id)
    assert {u["property"] for u in shown["unreadable"]} == {"Extra", "History"}
    assert "not valid JSON" in shown["unreadable"][0]["error"]
    assert [r["message_id"] for r in operations.parked(ledger, operations.ParkedFilter(production_order="P000027"))] == [
        message_id
    ]
    for response in (
        http.trace_message(request("GET", "ops/message", {"company": "USMF", "id": message_id})),
        http.trace_order(request("GET", "ops/order", {"company": "USMF", "order": "P000027"})),
        http.list_parked(request("GET", "ops/parked", {})),
    ):
        assert response.status_code == 200 and b"unreadable" in response.get_body()
    # A resubmission works, and the damaged text is kept beside the fresh one.
    resubmitted = http.resubmit(request("POST", "ops/resubmit", {"company": "USMF", "id": message_id}))
    assert resubmitted.status_code == 202, resubmitted.get_body()
    stored = ledger_rows(stack).get_entity("USMF", message_id)
    assert stored["ExtraUnreadable"].startswith('{"ContentHash"') and "ResubmitToken" in json.loads(stored["Extra"])


def test_confirming_a_row_whose_genealogy_cannot_be_read_takes_it_from_the_stored_payload(stack):
    message_id = f"damaged-{uuid.uuid4().hex[:6]}"
    damaged_row(stack, message_id)
    confirmed = http.confirm_applied(request("POST", "ops/confirm", {"company": "USMF", "id": message_id}, {"note": "in F&O"}))
    assert confirmed.status_code == 200, confirmed.get_body()
    consumed = stack.ports.lineage.batches_of_order("USMF", "P000027", "consumed")
    assert consumed == {BatchRef(item, batch): quantity for item, batch, quantity in many_lines(2)}
    # Neither the kept genealogy nor the payload readable: refused with the reason, not a 500.
    other = f"damaged-{uuid.uuid4().hex[:6]}"
    damaged_row(stack, other)
    ledger_rows(stack).update_entity({"PartitionKey": "USMF", "RowKey": other, "Payload0": b"{not json"})
    refused = http.confirm_applied(request("POST", "ops/confirm", {"company": "USMF", "id": other}, {"note": "in F&O"}))
    assert refused.status_code == 400 and b"nor its stored payload can be read" in refused.get_body()


def test_a_validation_error_naming_long_emoji_keys_is_parked_with_its_whole_detail(stack):
    document = mes.event("production_started", "P000028", {})
    keys = [f"{n}" + "😀" * 2000 for n in range(10)]  # 40,000 UTF-16 units of key names in the detail
    document["body"] = {**document["body"], **dict.fromkeys(keys, 1)}
    started_fn.production_started(trigger(json.dumps(document, ensure_ascii=False).encode(), session="P000028"))
    entry = stack.ports.ledger.get("USMF", document["message_id"])
    assert entry.state is State.PARKED and entry.reason == "invalid_message"
    assert all(key in entry.detail for key in keys) and entry.unreadable == ()


def test_a_40k_emoji_infolog_on_a_processed_event_is_kept_whole_and_told_to_mes(stack):
    emulator = stack.emulator
    events: list[dict[str, Any]] = []
    emulator.subscribe(events.extend, test_event=False)
    start = mes.event("production_started", "P000029", {})
    started_fn.production_started(trigger(start))
    assert emulator.wait_idle(10)
    [processed] = [e for e in events if e["data"] and "MessageInfolog" in str(e["data"])]
    data = json.loads(processed["data"]) if isinstance(processed["data"], str) else dict(processed["data"])
    infolog = "警告 😀" * 10_000  # 40,000 characters, 50,000 UTF-16 units
    processed = {**processed, "id": uuid.uuid4().hex, "data": json.dumps({**data, "MessageInfolog": infolog})}
    processed_fn.message_processed(to_event_grid_event(processed))
    entry = stack.ports.ledger.get("USMF", start["message_id"])
    assert entry.state is State.PROCESSED and entry.infolog == infolog
    [outcome] = [json.loads(m.body) for m in stack.broker.queue(MES_TOPIC).active if b'"message_outcome"' in m.body]
    assert outcome["infolog"].startswith(infolog[:1000]) and "50000 UTF-16 units did not fit" in outcome["infolog"]
    assert len(outcome["infolog"].encode()) < 128 * 1024


@pytest.mark.parametrize("wrong_first", [True, False])
def test_a_misrouted_copy_never_blocks_the_real_message_whichever_arrives_first(stack, wrong_first):
    start = mes.event("production_started", "P000030", {})
    deliveries = [
        lambda: consumed_fn.material_consumed(trigger(start)),  # a copy on the wrong queue
        lambda: started_fn.production_started(trigger(start)),
    ]
    for deliver in deliveries if wrong_first else deliveries[::-1]:
        deliver()
    ledger = stack.ports.ledger
    assert ledger.get("USMF", start["message_id"]).state is State.FORWARDED
    [misrouted] = [e for e in ledger.query(company="USMF", state=State.PARKED) if e.reason == "wrong_queue"]
    assert misrouted.message_id != start["message_id"] and start["message_id"] in misrouted.message_id
    assert "production_started event arrived on the material_consumed queue" in misrouted.detail
    assert stack.emulator.app.send_message_calls == 1


def test_resubmitting_a_misrouted_copy_sends_it_to_its_own_queue_once(stack):
    start = mes.event("production_started", "P000031", {})
    consumed_fn.material_consumed(trigger(start))  # only the wrong queue ever saw it
    ledger = stack.ports.ledger
    assert ledger.get("USMF", start["message_id"]) is None  # the real id stays free for the real message
    [misrouted] = [e for e in ledger.query(company="USMF", state=State.PARKED) if e.reason == "wrong_queue"]
    done = operations.resubmit(ledger, stack.ports.requeue, "USMF", misrouted.message_id, who="tester")
    assert done.queue == INBOUND_QUEUES["production_started"]
    with stack.host:
        assert stack.host.wait_idle(30)
    assert ledger.get("USMF", start["message_id"]).state is State.FORWARDED
    rerouted = ledger.get("USMF", misrouted.message_id)
    assert rerouted.state is State.CANCELLED and rerouted.reason == "rerouted"
    assert INBOUND_QUEUES["production_started"] in rerouted.detail
    # Resubmitting it again is refused (it is no longer parked); the real message took effect once.
    with pytest.raises(operations.OperationError):
        operations.resubmit(ledger, stack.ports.requeue, "USMF", misrouted.message_id)
    assert stack.emulator.app.send_message_calls == 1


def test_an_operators_reason_or_note_of_any_length_is_bounded_where_it_enters(stack):
    message_id = f"damaged-{uuid.uuid4().hex[:6]}"
    damaged_row(stack, message_id)
    huge = "😀" * 60_000
    for route, handler, body in (
        ("ops/cancel", http.cancel, {"reason": huge}),
        ("ops/confirm", http.confirm_applied, {"note": huge}),
        ("ops/release-gap", http.release_gap, {"reason": huge}),
    ):
        params = {"company": "USMF", "id": message_id, "order": "P000027", "missing": "1"}
        response = handler(request("POST", route, params, body))
        assert response.status_code == 400 and b"UTF-16 code units" in response.get_body(), route
    assert stack.ports.ledger.get("USMF", message_id).state is State.PARKED
