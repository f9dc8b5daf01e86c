"""Hostile input against the order: sequences out of range, conflicting copies, times the plant cannot have seen."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from devtools import mes
from functions import inventory_moved as inventory_fn
from functions import material_consumed as consumed_fn
from functions import production_started as started_fn
from shared import operations
from shared.ledger import State
from shared.messages import MAX_SEQUENCE
from tests.e2e.conftest import FAST
from tests.e2e.test_inbound_flows import trigger
from tests.e2e.test_order_gate import send_all

pytestmark = pytest.mark.e2e


def consumption(order: str, sequence: object, **fields: object) -> dict[str, object]:
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
    from shared.messages import MaterialConsumed

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
        assert len(resubmitted) == 2
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
        (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),  # beyond the default 300 s window
    ],
)
def test_a_time_the_plant_has_not_reached_is_parked_clock_skew(stack, occurred_at):
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
