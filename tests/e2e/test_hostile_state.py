"""Hostile input against the stored state (issue 16): what an adversarial probe broke, end to end
through the decorated functions, Azurite and the F&O emulator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage

from devtools import mes
from functions import material_consumed as consumed_fn
from functions import production_started as started_fn
from shared import operations
from shared.ledger import State
from shared.lineage import BatchRef

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
        ports.ledger, ports.gate, ports.lineage, "USMF", consume["message_id"], "seen in Message processor messages"
    )
    assert confirmed["state"] == "Forwarded"
    assert ports.lineage.batches_of_order("USMF", "P000025", "consumed") == {BatchRef("RM-0002", "B0002-001"): 3.0}
