"""What an inbound event costs in Table operations on the steady path (issue 15: at most 2), counted
against the real stores on Azurite: the claim (the ledger row with the order's progress as the gate
read it, one transaction) and the forward (Forwarded, the watermark, the content index and the
batch genealogy, one transaction), whatever number of batches the event names."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools.schemas import example
from shared.fo.production_order import HEADERS
from shared.inbound.attempt import Outcome, Result
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.mapping import MappingOptions
from shared.inbound.order_gate import OrderGate
from shared.inbound.pipeline import process
from shared.inbound.servicebus import Delivery
from shared.runtime import Ports
from shared.store import tables
from shared.store.ledger import Ledger, State
from shared.store.lineage import BatchRef, Lineage
from shared.store.progress import TableProgressStore
from shared.store.tables import LEDGER_TABLE, table
from shared.topology import INBOUND_QUEUES
from tests.fakes import FakeFo, RecordingRequeue, ports, unit_settings

pytestmark = pytest.mark.integration

ORDER = "P000123"


@pytest.fixture
def stack(table_service, table_prefix) -> Ports:
    settings = unit_settings()
    rows = table(table_service, table_prefix + LEDGER_TABLE)
    fo = FakeFo({HEADERS: [{"dataAreaId": "usmf", "ProductionOrderNumber": ORDER, "ProductionOrderStatus": "Released"}]})
    return ports(
        settings=settings,
        fo=fo,
        ledger=Ledger(rows),
        gate=OrderGate(TableProgressStore(rows), gap_timeout_s=settings.gate_gap_timeout_s, require_start=True),
        lineage=Lineage(rows),
        requeue=RecordingRequeue(),
        options=MappingOptions.from_settings(settings),
    )


def deliver(port: Ports, kind: str, sequence: int, **body: Any) -> tuple[Result, int]:
    document = example(kind)
    document.update(message_id=f"{kind}-{sequence}", sequence=sequence, production_order=ORDER)
    document["body"].update(body)
    delivery = Delivery(json.dumps(document).encode(), document["message_id"], INBOUND_QUEUES[kind], ORDER)
    before = tables.TABLE_OPS.count
    result = process(delivery, INBOUND_FLOWS[kind], port)
    return result, tables.TABLE_OPS.count - before


def test_a_consumption_with_its_genealogy_costs_two_table_operations(stack):
    started, _ = deliver(stack, "production_started", 1)
    assert started.outcome is Outcome.FORWARDED
    lines = [
        {"item_number": "RM-0001", "batch_number": "B0001-002", "quantity": 2.5, "unit": "kg"},
        {"item_number": "RM-0007", "batch_number": "B0007-004", "quantity": 1.25, "unit": "kg"},
        {"item_number": "RM-0009", "batch_number": "B0009-001", "quantity": 4.0, "unit": "kg"},
    ]
    consumed, cost = deliver(stack, "material_consumed", 2, lines=lines)
    assert consumed.outcome is Outcome.FORWARDED
    assert cost == 2  # the claim, and the forward with the genealogy of three batches
    entry = stack.ledger.get("USMF", "material_consumed-2")
    assert entry is not None and entry.state is State.FORWARDED
    # The genealogy went with the forward: both sides answer, from the same rows.
    assert stack.lineage.batches_of_order("USMF", ORDER, "consumed") == {
        BatchRef("RM-0001", "B0001-002"): 2.5,
        BatchRef("RM-0007", "B0007-004"): 1.25,
        BatchRef("RM-0009", "B0009-001"): 4.0,
    }
    assert stack.lineage.orders_of_batch("USMF", "RM-0007", "B0007-004", "consumed") == {ORDER}
    # Ledger queries do not mistake genealogy rows for messages.
    assert {e.message_id for e in stack.ledger.query(company="USMF")} == {"production_started-1", "material_consumed-2"}


def test_a_genealogy_beyond_one_transaction_is_written_apart_first_and_whole(stack):
    deliver(stack, "production_started", 1)
    lines = [{"item_number": f"RM-{n:04d}", "batch_number": f"B{n:04d}-001", "quantity": 1.0, "unit": "kg"} for n in range(60)]
    consumed, cost = deliver(stack, "material_consumed", 2, lines=lines)
    assert consumed.outcome is Outcome.FORWARDED
    # 120 genealogy rows do not fit beside the forward's 3 in one transaction of 100: the claim, the
    # genealogy in two transactions, then the forward.
    assert cost == 4
    consumed_batches = stack.lineage.batches_of_order("USMF", ORDER, "consumed")
    assert len(consumed_batches) == 60 and consumed_batches[BatchRef("RM-0059", "B0059-001")] == 1.0
    assert stack.lineage.orders_of_batch("USMF", "RM-0000", "B0000-001", "consumed") == {ORDER}
