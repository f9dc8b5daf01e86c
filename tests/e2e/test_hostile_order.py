"""Hostile input against the order: sequences out of range, conflicting copies, times the plant cannot have seen."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools import mes
from functions import inventory_moved as inventory_fn
from functions import material_consumed as consumed_fn
from functions import production_started as started_fn
from shared.inbound.messages import MAX_SEQUENCE
from shared.ops import operations
from shared.store.ledger import State
from tests.e2e.conftest import FAST
from tests.e2e.test_inbound_flows import trigger
from tests.e2e.test_order_gate import send_all

pytestmark = pytest.mark.e2e


def consumption(order: str, sequence: object, **fields: object) -> dict[str, Any]:
    document = mes.event(
        "material_consumed", order, {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-001", "quantity": 1.0}]}
    )
    document["sequence"] = sequence
    document.update(fields)
    return document


@pytest.mark.parametrize("sequence", [2**64, -(2**64), MAX_SEQUENCE + 1, 0, -1, 1e30])
def test_a_sequence_out_of_range_is_parked_with_its_reason(stack, sequence):
    document = consumption("P000001", sequence)
    consumed_fn.material_consumed(trigger(document))  # raised TypeError for 2**64 (Int64 overflow)
    entry = stack.ports.ledger.get("USMF", document["message_id"])
    assert entry.state is State.PARKED and entry.reason == "sequence_out_of_range", entry
    assert f"1 to {MAX_SEQUENCE}" in entry.detail
    assert entry.sequence is None  # the row keeps the payload, never the number it could not store
    assert stack.ports.ledger.payload("USMF", document["message_id"]) == mes.encode(document)
    assert [r["reason"] for r in operations.parked(stack.ports.ledger, operations.ParkedFilter())] == ["sequence_out_of_range"]


def test_the_largest_sequence_is_accepted():
    from shared.inbound.messages import MaterialConsumed

    assert MaterialConsumed.model_validate(consumption("P000001", MAX_SEQUENCE)).sequence == MAX_SEQUENCE


@pytest.mark.parametrize("stack_env", [{**FAST, "GATE_MAX_WAIT_S": "0.3", "GATE_GAP_TIMEOUT_S": "1"}])
def test_releasing_a_gap_jumps_to_the_next_sequence_present(stack):
    order = "P000002"
    documents = [
        mes.event("production_started", order, {}, sequence=1),
        consumption(order, MAX_SEQUENCE - 5),
        consumption(order, MAX_SEQUENCE - 3),
    ]
    send_all(stack, documents)
    with stack.host:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parked = list(stack.ports.ledger.query(state=State.PARKED, production_order=order))
            if len(parked) == 2:
                break
            time.sleep(0.1)
        assert sorted((e.reason, e.extra.get("Missing")) for e in parked) == [("gap", 2), ("gap", 2)]
        progress, resubmitted = operations.release_gap(
            stack.ports.gate, stack.ports.ledger, stack.broker, "USMF", order, 2, "the MES numbers its events sparsely"
        )
        # One release skips every number up to the next message present, not 2 alone.
        assert progress.watermark == MAX_SEQUENCE - 6
        assert progress.skipped[-1]["sequence"] == 2 and progress.skipped[-1]["through"] == MAX_SEQUENCE - 6
        # The next message present resumes; the one after it waits on the next hole and parks naming it.
        assert [r.entry.sequence for r in resubmitted] == [MAX_SEQUENCE - 5]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parked = list(stack.ports.ledger.query(state=State.PARKED, production_order=order))
            if len(parked) == 1 and parked[0].extra.get("Missing") == MAX_SEQUENCE - 4:
                break
            time.sleep(0.1)
        # The next hole is its own gap, released the same way.
        assert [(e.sequence, e.reason, e.extra.get("Missing")) for e in parked] == [(MAX_SEQUENCE - 3, "gap", MAX_SEQUENCE - 4)]
        progress, _ = operations.release_gap(
            stack.ports.gate, stack.ports.ledger, stack.broker, "USMF", order, MAX_SEQUENCE - 4, "sparse"
        )
        assert progress.watermark == MAX_SEQUENCE - 4
        assert stack.host.wait_idle(30)
    states = {e.sequence: e.state for e in stack.ports.ledger.query(production_order=order)}
    assert states == {1: State.FORWARDED, MAX_SEQUENCE - 5: State.FORWARDED, MAX_SEQUENCE - 3: State.FORWARDED}
    assert stack.ports.gate.read("USMF", order).watermark == MAX_SEQUENCE - 3


# --- time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2099-01-01T00:00:00+00:00",
        "2099-01-01T00:00:00-12:00",
        timedelta(minutes=10),  # from the test's own now (not collection time): beyond the default 300 s window
    ],
    ids=["2099-utc", "2099-minus-12h", "now-plus-10-min"],
)
def test_a_time_the_plant_has_not_reached_is_parked_clock_skew(stack, occurred_at):
    if isinstance(occurred_at, timedelta):
        occurred_at = (datetime.now(UTC) + occurred_at).isoformat()
    document = consumption("P000003", None, occurred_at=occurred_at)
    del document["sequence"]
    consumed_fn.material_consumed(trigger(document))
    entry = stack.ports.ledger.get("USMF", document["message_id"])
    assert entry.state is State.PARKED and entry.reason == "clock_skew", entry
    assert "MES_MAX_CLOCK_SKEW_S" in entry.detail and "300" in entry.detail
    assert stack.emulator.app.messages == []


def test_a_sender_clock_a_little_ahead_is_within_the_window(stack):
    start = mes.event("production_started", "P000004", {}, occurred_at=datetime.now(UTC) + timedelta(seconds=60))
    started_fn.production_started(trigger(start))
    assert stack.ports.ledger.get("USMF", start["message_id"]).state is State.FORWARDED


def test_a_movement_day_in_the_future_is_parked_clock_skew(stack):
    body = {
        "item_number": "RM-0001",
        "quantity": 1.0,
        "from_site": "1",
        "from_warehouse": "11",
        "to_site": "1",
        "to_warehouse": "12",
    }
    move = mes.event("inventory_moved", None, {**body, "moved_on": (datetime.now(UTC) + timedelta(days=3)).date().isoformat()})
    inventory_fn.inventory_moved(trigger(move))
    entry = stack.ports.ledger.get("USMF", move["message_id"])
    assert entry.state is State.PARKED and entry.reason == "clock_skew", entry
    assert "moved_on" in entry.detail


# --- conflicts ----------------------------------------------------------------------------------


def conflicts(stack) -> list[dict[str, Any]]:
    return operations.parked(stack.ports.ledger, operations.ParkedFilter(reason="conflict"))


def test_the_same_sequence_with_other_content_is_parked_as_a_conflict(stack):
    start = mes.event("production_started", "P000005", {}, sequence=1)
    first = consumption("P000005", 2)
    other = consumption("P000005", 2, body={"lines": [{"item_number": "RM-0002", "batch_number": "B0002-001", "quantity": 2.5}]})
    copy = {**first, "message_id": "resent-under-a-new-id", "correlation_id": "resend"}
    started_fn.production_started(trigger(start))
    consumed_fn.material_consumed(trigger(first))
    consumed_fn.material_consumed(trigger(other))  # was: Duplicate, its 2.5 never reached F&O, nobody told
    consumed_fn.material_consumed(trigger(copy))  # the same content again: a duplicate, as before
    assert len(stack.emulator.app.messages) == 2
    assert stack.ports.ledger.get("USMF", copy["message_id"]).state is State.DUPLICATE
    [row] = conflicts(stack)
    assert row["message_id"] == other["message_id"] and row["sequence"] == 2
    assert first["message_id"] in row["detail"]
    held = row["conflicts_with"]
    assert held["message_id"] == first["message_id"] and held["state"] == "Forwarded"
    assert json.loads(held["payload"]) == first and json.loads(row["payload"]) == other
    # Resubmitted as it is, it is the same conflict again: still parked, still not in F&O.
    operations.resubmit(stack.ports.ledger, stack.broker, "USMF", other["message_id"])
    with stack.host:
        assert stack.host.wait_idle(20)
    assert [r["message_id"] for r in conflicts(stack)] == [other["message_id"]]
    assert len(stack.emulator.app.messages) == 2


@pytest.mark.parametrize("stack_env", [{**FAST, "GATE_MAX_WAIT_S": "0.3", "GATE_GAP_TIMEOUT_S": "1"}])
def test_a_sequence_that_arrives_after_its_gap_was_released_is_parked_as_a_conflict(stack):
    start, late, after = (
        mes.event("production_started", "P000006", {}, sequence=1),
        consumption("P000006", 2),
        consumption("P000006", 3),
    )
    send_all(stack, [start, after])
    with stack.host:
        deadline = time.monotonic() + 30
        while (entry := stack.ports.ledger.get("USMF", after["message_id"])) is None or entry.reason != "gap":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        operations.release_gap(stack.ports.gate, stack.ports.ledger, stack.broker, "USMF", "P000006", 2, "lost by the MES")
        assert stack.host.wait_idle(20)
        send_all(stack, [late])  # the lost message turns up after all: was Duplicate, out of every list
        assert stack.host.wait_idle(20)
    [row] = conflicts(stack)
    assert row["message_id"] == late["message_id"] and "released" in row["detail"] and "lost by the MES" in row["detail"]
    assert row["conflicts_with"] is None
    assert [m.order for m in stack.emulator.app.messages] == ["P000006", "P000006"]


def test_a_changed_payload_under_a_known_message_id_is_parked_apart(stack):
    first = consumption("P000007", None)
    del first["sequence"]
    start = mes.event("production_started", "P000007", {})
    changed = {**first, "body": {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-001", "quantity": 9.0}]}}
    started_fn.production_started(trigger(start))
    consumed_fn.material_consumed(trigger(first))
    consumed_fn.material_consumed(trigger(changed))  # was: dropped with one INFO line
    consumed_fn.material_consumed(trigger(changed, delivery_count=2))  # its redelivery: no second row
    # The same content written differently (key order, spacing) is the same message: a duplicate.
    consumed_fn.material_consumed(trigger(json.dumps(dict(reversed(list(first.items()))), indent=2).encode()))
    assert len(stack.emulator.app.messages) == 2
    assert stack.ports.ledger.get("USMF", first["message_id"]).state is State.FORWARDED
    [row] = conflicts(stack)
    assert row["message_id"].startswith(first["message_id"] + "|conflict-") and row["production_order"] == "P000007"
    assert row["conflicts_with"]["message_id"] == first["message_id"]
    assert json.loads(row["payload"]) == changed and json.loads(row["conflicts_with"]["payload"]) == first
    # It cannot go to F&O under that id: F&O has the first copy. Resubmitting it is refused with the way out.
    with pytest.raises(operations.OperationError, match="Cancel it"):
        operations.resubmit(stack.ports.ledger, stack.broker, "USMF", row["message_id"])


def test_a_changed_payload_while_the_first_copy_waits_does_not_replace_it(stack):
    first = consumption("P000008", None)
    del first["sequence"]
    changed = {**first, "body": {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-001", "quantity": 9.0}]}}
    send_all(stack, [first])
    with stack.host:
        deadline = time.monotonic() + 20
        while (entry := stack.ports.ledger.get("USMF", first["message_id"])) is None or entry.state is not State.WAITING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        send_all(stack, [changed, mes.event("production_started", "P000008", {})])
        assert stack.host.wait_idle(30)
    assert stack.emulator.wait_idle(10)
    consumed = [m for m in stack.emulator.app.messages if m.message_type == "ProdProductionOrderPickingList"]
    assert len(consumed) == 1 and '"ConsumptionBOMQuantity":1.0' in consumed[0].content
    assert [r["conflicts_with"]["message_id"] for r in conflicts(stack)] == [first["message_id"]]
