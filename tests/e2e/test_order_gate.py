"""The order gate keeps each production order's MES order across the flows' queues."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from typing import Any

import pytest

from devtools import mes
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.mapping import FoCall, SendMessage
from shared.ops import operations
from shared.store.ledger import State
from tests.conftest import small_plant
from tests.e2e.conftest import (
    FAST,
    failures_other_than_storage_hiccups,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def emulator_config():
    from devtools.fo_emulator import EmulatorConfig

    return EmulatorConfig(plant=small_plant(orders=220))


@pytest.fixture
def stack_env():
    return {**FAST, "GATE_MAX_WAIT_S": "0.4", "GATE_GAP_TIMEOUT_S": "2"}


def lifecycle(order: dict[str, Any], sequenced: bool = True) -> list[dict[str, Any]]:
    number, item, quantity = order["ProductionOrderNumber"], order["ItemNumber"], order["ScheduledQuantity"]
    steps = [
        ("production_started", {}),
        ("material_consumed", {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-001", "quantity": 1.5}]}),
        ("operation_reported", {"lines": [{"operation_number": 10, "hours": 0.5, "good_quantity": quantity}]}),
        ("material_consumed", {"lines": [{"item_number": "RM-0002", "batch_number": "B0002-001", "quantity": 0.25}]}),
        ("output_reported", {"item_number": item, "batch_number": f"F{number}", "good_quantity": quantity, "end_job": True}),
        ("production_ended", {}),
    ]
    return [mes.event(kind, number, body, sequence=n if sequenced else None) for n, (kind, body) in enumerate(steps, start=1)]


def shuffled_across_flows(documents: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Any interleaving across queues, but each (order, flow) keeps its MES order, as one queue would."""
    order = documents[:]
    rng.shuffle(order)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for document in documents:
        groups[(document["production_order"], document["type"])].append(document)
    cursor: dict[tuple[str, str], int] = defaultdict(int)
    result = []
    for document in order:
        key = (document["production_order"], document["type"])
        result.append(groups[key][cursor[key]])
        cursor[key] += 1
    return result


def send_all(stack, documents):
    for document in documents:
        flow = INBOUND_FLOWS[document["type"]]
        stack.broker.send(flow.queue, mes.encode(document), session_id=document.get("production_order") or "no-order")


def _content(call: FoCall) -> dict[str, Any]:
    assert isinstance(call, SendMessage), "the gated flows send MES messages"
    return call.content


def received_by_order(emulator) -> dict[str, list[str]]:
    by_order: dict[str, list[str]] = defaultdict(list)
    for message in emulator.app.messages:
        by_order[message.order].append(message.content)
    return by_order


@pytest.mark.parametrize("stack_env", [{**FAST, "GATE_MAX_WAIT_S": "0.4", "GATE_GAP_TIMEOUT_S": "600"}])
def test_shuffled_cross_flow_deliveries_reach_fo_in_mes_sequence(stack):
    rng = random.Random(20261122)
    orders = stack.emulator.app.tables["ProductionOrderHeaders"][:200]
    documents = [d for order in orders if order["dataAreaId"] == "usmf" for d in lifecycle(order)]
    send_all(stack, shuffled_across_flows(documents, rng))
    with stack.host:
        assert stack.host.wait_idle(240), f"{stack.broker.pending()} messages still queued"
    assert stack.emulator.wait_idle(30)
    assert failures_other_than_storage_hiccups(stack.host) == []

    received = received_by_order(stack.emulator)
    expected: dict[str, list[int]] = defaultdict(list)
    for document in documents:
        expected[document["production_order"]].append(document["sequence"])
    assert len(stack.emulator.app.messages) == len(documents)
    for order in expected:
        wanted = [d for d in documents if d["production_order"] == order]
        mapped = [
            json.dumps(
                _content(INBOUND_FLOWS[w["type"]].map(INBOUND_FLOWS[w["type"]].event.model_validate(w), stack.ports.options)),
                separators=(",", ":"),
                ensure_ascii=False,
            )
            for w in wanted
        ]
        assert received[order] == mapped, f"{order} reached F&O out of MES order"
    assert all(m.state == "Processed" for m in stack.emulator.app.messages), "an order was blocked in F&O"
    waited = [e for e in stack.ports.ledger.query(state=State.FORWARDED) if any(h["state"] == "Waiting" for h in e.history)]
    assert waited, "the shuffle should have made some messages wait"


def test_a_missing_sequence_parks_after_the_timeout_and_releases_on_command(stack):
    order = stack.emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000201")
    documents = lifecycle(order)
    missing = documents.pop(2)  # sequence 3 never comes
    send_all(stack, documents)
    with stack.host:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            parked = list(stack.ports.ledger.query(state=State.PARKED, production_order="P000201"))
            if len(parked) == 3:
                break
            time.sleep(0.1)
        # Every message waiting on the gap is parked with the number it waits for.
        assert sorted((e.sequence, e.reason, e.extra.get("Missing")) for e in parked) == [
            (4, "gap", 3),
            (5, "gap", 3),
            (6, "gap", 3),
        ]
        assert all("sequence 3 never arrived" in e.detail for e in parked)
        assert [m.order for m in stack.emulator.app.messages] == ["P000201", "P000201"]

        progress, resubmitted = operations.release_gap(
            stack.ports.gate,
            stack.ports.ledger,
            stack.broker,
            "USMF",
            "P000201",
            3,
            "the MES lost it; the operation was reported on paper",
        )
        assert progress.watermark == 3 and progress.skipped[0]["sequence"] == 3
        # The next in sequence resumes at once; each forward wakes the one after it, without an operator.
        assert [r.entry.sequence for r in resubmitted] == [4]
        assert stack.host.wait_idle(30)
    assert stack.emulator.wait_idle(10)
    states = {e.sequence: e.state for e in stack.ports.ledger.query(production_order="P000201")}
    assert states == {1: State.FORWARDED, 2: State.FORWARDED, 4: State.FORWARDED, 5: State.FORWARDED, 6: State.FORWARDED}
    assert len(stack.emulator.app.messages) == 5 and missing["message_id"] not in str(stack.emulator.app.messages)


def test_a_message_below_the_watermark_never_reaches_fo(stack):
    order = stack.emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000202")
    documents = lifecycle(order)[:2]
    send_all(stack, documents)
    resent = {**documents[0], "message_id": "resent-with-a-new-id"}
    with stack.host:
        assert stack.host.wait_idle(30)
        send_all(stack, [resent])
        assert stack.host.wait_idle(30)
    assert len(stack.emulator.app.messages) == 2
    entry = stack.ports.ledger.get("USMF", "resent-with-a-new-id")
    assert entry.state is State.DUPLICATE and entry.reason == "below_watermark"


def test_without_sequence_nothing_overtakes_the_start_and_the_end_overtakes_nothing(stack):
    order = stack.emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000203")
    start, consume, _operation, _consume2, output, end = lifecycle(order, sequenced=False)
    send_all(stack, [consume, end, output])
    with stack.host:
        time.sleep(1.0)
        assert stack.emulator.app.messages == []  # all wait for the start
        send_all(stack, [start])
        assert stack.host.wait_idle(30)
    assert stack.emulator.wait_idle(10)
    types = [m.message_type for m in stack.emulator.app.messages]
    assert types[0] == "ProdProductionOrderStart" and types[-1] == "ProdProductionOrderEnd"
    assert sorted(types[1:-1]) == ["ProdProductionOrderPickingList", "ProdProductionOrderReportFinished"]
    assert all(m.state == "Processed" for m in stack.emulator.app.messages)


# --- gap wake-up ----------------------------------------------------------------------------------


def _until(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_what_parked_behind_an_in_doubt_message_resumes_in_sequence_once_it_is_confirmed(stack):
    order = stack.emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000204")
    documents = lifecycle(order)
    ports = stack.ports
    with stack.host:
        send_all(stack, documents[:2])
        assert stack.host.wait_idle(30)
        stack.emulator.set_faults(drop_rate=1.0)  # F&O applies sequence 3, its answer never comes
        send_all(stack, documents[2:3])
        assert _until(lambda: getattr(ports.ledger.get("USMF", documents[2]["message_id"]), "reason", "") == "in_doubt")
        stack.emulator.set_faults(drop_rate=0.0)
        send_all(stack, documents[3:])

        def parked_behind() -> list[Any]:
            return [e for e in ports.ledger.query(state=State.PARKED, production_order="P000204") if e.reason == "gap"]

        assert _until(lambda: len(parked_behind()) == 3), "4, 5 and 6 park behind the message in doubt"
        assert ports.gate.read("USMF", "P000204").held
        operations.confirm_applied(
            ports.ledger, ports.gate, ports.lineage, stack.broker, "USMF", documents[2]["message_id"], "in F&O"
        )
        assert stack.host.wait_idle(30)
    rows = {e.sequence: ports.ledger.get("USMF", e.message_id) for e in ports.ledger.query(production_order="P000204")}
    assert {n: r.state for n, r in rows.items()} == dict.fromkeys(range(1, 7), State.FORWARDED)
    # Nobody resubmitted 4, 5 and 6: the bridge did, each after its predecessor reached F&O.
    for n in (4, 5, 6):
        resumed = [h["detail"] for h in rows[n].history if h["detail"].startswith("resumed by the bridge")]
        assert len(resumed) == 1, rows[n].history
    assert "confirmed" in resumed_first(rows[4]) and "was forwarded" in resumed_first(rows[5])
    forwarded_at = [rows[n].updated_at for n in (4, 5, 6)]
    assert forwarded_at == sorted(forwarded_at)
    sent = [json.loads(m.content) for m in stack.emulator.app.messages if m.order == "P000204"]
    behind = [
        _content(INBOUND_FLOWS[d["type"]].map(INBOUND_FLOWS[d["type"]].event.model_validate(d), ports.options))
        for d in documents[3:]
    ]
    assert sent[-3:] == behind, "4, 5 and 6 reached F&O once each, in MES order"
    assert not ports.gate.read("USMF", "P000204").held, "nothing parked is left: forwards stop looking"


def resumed_first(row: Any) -> str:
    return str(next(h["detail"] for h in row.history if h["detail"].startswith("resumed by the bridge")))


@pytest.mark.parametrize("stack_env", [{**FAST, "GATE_FIRST_WAIT_S": "60", "GATE_MAX_WAIT_S": "60", "GATE_GAP_TIMEOUT_S": "300"}])
def test_a_waiting_message_is_woken_by_its_predecessor_rather_than_by_its_next_poll(stack):
    order = stack.emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000205")
    first, second = lifecycle(order)[:2]
    ports = stack.ports

    def state_of(document: dict[str, Any]) -> State | None:
        row = ports.ledger.get("USMF", document["message_id"])
        return row.state if row is not None else None

    with stack.host:
        send_all(stack, [second])
        assert _until(lambda: state_of(second) is State.WAITING)  # its next look is a minute away
        send_all(stack, [first])
        # Well before that minute: only the wake-up of its predecessor's forward can have let it through.
        assert _until(lambda: state_of(second) is State.FORWARDED, timeout=30)
    assert [m.order for m in stack.emulator.app.messages] == ["P000205", "P000205"]


# --- in doubt, checked by the bridge ----------------------------------------------------------------


def _in_doubt_start(stack: Any, order: str, *, applied: bool) -> dict[str, Any]:
    """A production start F&O got no answer for: the emulator drops half before and half after doing
    the work; keep sending starts of fresh orders until one of the wanted kind."""
    stack.emulator.set_faults(drop_rate=1.0)
    try:
        for n in range(12):
            number = f"P{int(order[1:]) + n:06d}"
            start = mes.event("production_started", number, {}, sequence=1)
            before = stack.emulator.app.send_message_calls
            send_all(stack, [start])
            assert _until(lambda m=start["message_id"]: getattr(stack.ports.ledger.get("USMF", m), "reason", "") == "in_doubt")
            if (stack.emulator.app.send_message_calls > before) == applied:
                return start
    finally:
        stack.emulator.set_faults(drop_rate=0.0)
    raise AssertionError("no in-doubt start of the wanted kind in 12 sends")


@pytest.mark.parametrize("stack_env", [{**FAST, "GATE_GAP_TIMEOUT_S": "120", "IN_DOUBT_CHECK_AFTER_S": "1"}])
def test_an_in_doubt_start_f_and_o_applied_is_confirmed_by_the_bridge_reading_the_order_status(stack):
    ports = stack.ports
    with stack.host:
        start = _in_doubt_start(stack, "P000150", applied=True)
        order = start["production_order"]
        consume = mes.event(
            "material_consumed",
            order,
            {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-001", "quantity": 1.0}]},
            sequence=2,
        )
        send_all(stack, [consume])
        assert _until(lambda: ports.ledger.get("USMF", start["message_id"]).state is State.FORWARDED)
        assert _until(lambda: getattr(ports.ledger.get("USMF", consume["message_id"]), "state", None) is State.FORWARDED)
    row = ports.ledger.get("USMF", start["message_id"])
    assert row.detail.startswith("confirmed by the bridge: ProductionOrderHeaders(") and "StartedUp" in row.detail
    assert ports.gate.read("USMF", order).watermark == 2
    starts = [m for m in stack.emulator.app.messages if m.order == order and m.message_type == "ProdProductionOrderStart"]
    assert len(starts) == 1, "the bridge confirmed, it did not send the start again"


@pytest.mark.parametrize("stack_env", [{**FAST, "IN_DOUBT_CHECK_AFTER_S": "1"}])
def test_an_in_doubt_start_f_and_o_never_got_stays_for_an_operator_with_what_the_bridge_read(stack):
    ports = stack.ports
    with stack.host:
        start = _in_doubt_start(stack, "P000170", applied=False)
        assert _until(lambda: "Checked" in ports.ledger.get("USMF", start["message_id"]).extra)
    row = ports.ledger.get("USMF", start["message_id"])
    assert row.state is State.PARKED and row.reason == "in_doubt"
    assert row.extra["Checked"].endswith("ProductionOrderStatus = Released")
    assert "cannot tell whether F&O still holds the message" in row.detail
    assert not [m for m in stack.emulator.app.messages if m.order == start["production_order"]]
