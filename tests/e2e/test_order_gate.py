"""The order gate keeps each production order's MES order across the flows' queues."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from typing import Any

import pytest

from devtools import mes
from shared import operations
from shared.flows import INBOUND_FLOWS
from shared.ledger import State
from shared.mapping import FoCall, SendMessage
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
        assert sorted(r.entry.message_id for r in resubmitted) == sorted(e.message_id for e in parked)
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


def test_concurrent_watermark_updates_from_several_workers_stay_consistent(stack):
    gate = stack.ports.gate
    import threading

    barrier = threading.Barrier(8)

    def advance(n: int) -> None:
        barrier.wait()
        gate.advance("USMF", "P000204", "operation_reported", n)

    threads = [threading.Thread(target=advance, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gate.read("USMF", "P000204").watermark == 8
