"""Per-order aggregation (issue 20): what the order gate already holds of an order and a flow goes
to F&O as one message, and the ledger, F&O's processed event and MES see every MES message."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from devtools import mes
from shared.inbound.flows import INBOUND_FLOWS
from shared.ops import operations
from shared.store.ledger import State
from tests.conftest import small_plant
from tests.e2e.conftest import FAST, failures_other_than_storage_hiccups

pytestmark = pytest.mark.e2e


@pytest.fixture
def emulator_config():
    from devtools.fo_emulator import EmulatorConfig

    return EmulatorConfig(plant=small_plant(orders=20))


@pytest.fixture
def stack_env():
    return {**FAST, "GATE_MAX_WAIT_S": "0.3", "GATE_GAP_TIMEOUT_S": "600"}


@pytest.fixture
def running(stack):
    with stack.host:
        yield stack


def send(stack, document: dict[str, Any]) -> None:
    flow = INBOUND_FLOWS[document["type"]]
    stack.broker.send(flow.queue, mes.encode(document), session_id=document["production_order"])


def consumption(order: str, sequence: int, item: str, quantity: float) -> dict[str, Any]:
    body = {"lines": [{"item_number": item, "batch_number": f"B{item[3:]}-001", "quantity": quantity}]}
    return mes.event("material_consumed", order, body, message_id=f"{order}-c{sequence}", sequence=sequence)


def wait_waiting(stack, order: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [e for e in stack.ports.ledger.query(company="USMF", production_order=order) if e.state is State.WAITING]
        if len(waiting) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} messages of {order} never waited")


def contents(stack, order: str) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in stack.emulator.app.messages if m.order == order]


def outcomes(stack) -> list[dict[str, Any]]:
    from shared.topology import MES_TOPIC

    bodies = [json.loads(m.body) for m in stack.broker.queue(MES_TOPIC).active]
    return [b for b in bodies if b["type"] == "message_outcome"]


def settle(stack, timeout: float = 30) -> None:
    assert stack.host.wait_idle(timeout)
    assert stack.emulator.wait_idle(timeout)
    assert stack.host.wait_idle(timeout)


def test_waiting_consumptions_of_one_order_go_to_fo_as_one_picking_list_and_each_is_settled(running):
    stack = running
    stack.emulator.subscribe(stack.host.event_grid_sink(), test_event=False)
    order = "P000003"
    waiting = [consumption(order, n, f"RM-000{n}", 0.5 * n) for n in range(2, 7)]
    for document in waiting:
        send(stack, document)
    # The start is late (another queue, another backlog): the five wait in the order gate.
    wait_waiting(stack, order, 5)
    send(stack, mes.event("production_started", order, {}, message_id=f"{order}-start", sequence=1))
    settle(stack)
    assert not failures_other_than_storage_hiccups(stack.host)

    sent = contents(stack, order)
    assert "StartedDate" in sent[0] and len(sent) == 2  # the start alone, then one picking list
    picking = [c for c in sent if "PickingListLines" in c]
    assert len(picking) == 1, "five waiting consumptions: one F&O message"
    assert [line["ItemNumber"] for line in picking[0]["PickingListLines"]] == [f"RM-000{n}" for n in range(2, 7)]
    consumed = stack.emulator.app.order_ledgers[("usmf", order)].consumed
    assert sum(consumed.values()) == pytest.approx(sum(0.5 * n for n in range(2, 7)))

    ids = [d["message_id"] for d in waiting]
    for message_id in ids:
        story = operations.trace(stack.ports.ledger, "USMF", message_id)
        # F&O's one processed event settled every MES message of the merged one.
        assert story["state"] == "Processed", story
        assert story["fo_message"]["head"] == ids[0] and story["fo_message"]["members"] == ids
        assert story["fo_message"]["siblings"] == [m for m in ids if m != message_id]
        assert story["fo_message"]["lines"] == 5
    # MES hears about each of its messages, once.
    accepted = sorted(o["mes_message_id"] for o in outcomes(stack) if o["outcome"] == "accepted")
    assert accepted == sorted([*ids, f"{order}-start"])
    # Genealogy per MES message: every consumed batch with its own quantity.
    batches = stack.ports.lineage.batches_of_order("USMF", order, "consumed")
    assert {(ref.item, ref.batch): quantity for ref, quantity in batches.items()} == {
        (f"RM-000{n}", f"B000{n}-001"): pytest.approx(0.5 * n) for n in range(2, 7)
    }


def test_at_low_load_nothing_waits_and_nothing_is_merged(running):
    stack = running
    order = "P000004"
    send(stack, mes.event("production_started", order, {}, message_id=f"{order}-start", sequence=1))
    settle(stack)
    for n in range(2, 5):
        send(stack, consumption(order, n, "RM-0001", 1.0))
        settle(stack)
    picking = [c for c in contents(stack, order) if "PickingListLines" in c]
    assert len(picking) == 3
    for n in range(2, 5):
        assert operations.trace(stack.ports.ledger, "USMF", f"{order}-c{n}")["fo_message"] is None


def test_a_merged_message_fo_refuses_is_split_and_only_the_bad_one_is_parked(running):
    stack = running
    order = "P000005"
    stack.emulator.set_faults(refuse_content="RM-0009")
    documents = [
        consumption(order, 2, "RM-0001", 1.0),
        consumption(order, 3, "RM-0009", 1.0),
        consumption(order, 4, "RM-0002", 1.0),
    ]
    for document in documents:
        send(stack, document)
    wait_waiting(stack, order, 3)
    send(stack, mes.event("production_started", order, {}, message_id=f"{order}-start", sequence=1))

    def state(message_id: str) -> dict[str, Any]:
        return operations.trace(stack.ports.ledger, "USMF", message_id)

    deadline = time.monotonic() + 30
    while state(f"{order}-c3")["state"] != "Parked" and time.monotonic() < deadline:
        time.sleep(0.1)
    states = {d["message_id"]: state(d["message_id"]) for d in documents}
    assert states[f"{order}-c2"]["state"] in ("Forwarded", "Processed")
    assert states[f"{order}-c3"]["state"] == "Parked" and states[f"{order}-c3"]["reason"] == "rejected"
    # F&O has each good consumption once, and nothing of the refused merged message.
    picking = [c for c in contents(stack, order) if "PickingListLines" in c]
    items = [line["ItemNumber"] for c in picking for line in c["PickingListLines"]]
    assert items == ["RM-0001"]
    # The one after the bad one waits behind it, as any message behind a rejected one does, and is
    # never merged again: F&O refused the merged message.
    assert states[f"{order}-c4"]["state"] in ("Waiting", "Parked")
    behind = stack.ports.ledger.get("USMF", f"{order}-c4")
    assert behind is not None and "RM-0009" in str(behind.extra.get("MergeRefused"))


def test_a_merged_message_in_doubt_parks_all_its_mes_messages_and_fos_processed_event_settles_them_all(running):
    stack = running
    order = "P000006"
    stack.emulator.set_faults(drop_after_content="RM-0007")
    documents = [consumption(order, 2, "RM-0001", 1.0), consumption(order, 3, "RM-0007", 2.0)]
    for document in documents:
        send(stack, document)
    wait_waiting(stack, order, 2)
    send(stack, mes.event("production_started", order, {}, message_id=f"{order}-start", sequence=1))
    ids = [d["message_id"] for d in documents]

    def states() -> list[tuple[str, str]]:
        return [(s["state"], s["reason"]) for s in (operations.trace(stack.ports.ledger, "USMF", m) for m in ids)]

    deadline = time.monotonic() + 30
    while states() != [("Parked", "in_doubt")] * 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # No answer: both MES messages are in doubt together, never re-sent.
    assert states() == [("Parked", "in_doubt")] * 2
    picking = [c for c in contents(stack, order) if "PickingListLines" in c]
    assert len(picking) == 1 and len(picking[0]["PickingListLines"]) == 2
    # F&O had it: its one processed event (delivered now) settles both, and the genealogy of each is caught up.
    assert stack.emulator.wait_idle(30)
    events = stack.emulator.app.events
    processed = [e for e in events.raised if "RM-0007" in str(e.get("MessageContent", ""))]
    assert len(processed) == 1
    stack.host.event_grid_sink()([events.envelope(processed[0])])
    settle(stack)
    assert [s["state"] for s in (operations.trace(stack.ports.ledger, "USMF", m) for m in ids)] == ["Processed"] * 2
    assert sum(stack.emulator.app.order_ledgers[("usmf", order)].consumed.values()) == pytest.approx(3.0)
    batches = stack.ports.lineage.batches_of_order("USMF", order, "consumed")
    assert sorted(ref.item for ref in batches) == ["RM-0001", "RM-0007"]
