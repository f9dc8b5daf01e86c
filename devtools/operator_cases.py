"""What a night shift finds in the console: a finished order with its genealogy, a movement F&O
rejected, a message the MES got wrong, an order waiting on a sequence gap, a consumption in doubt
and a dead letter. Each one is made the way it happens, through the real functions (local host,
F&O emulator, Azurite); only the broker's giving up is done by hand, as it would after ten
deliveries. Used by `make console` and the browser tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from devtools import mes
from devtools.fo_emulator import FoEmulator
from devtools.local_host import InMemoryBroker, LocalHost
from shared.inbound.flows import INBOUND_FLOWS
from shared.runtime import Ports
from shared.store.ledger import State


@dataclass(frozen=True)
class Cases:
    finished_order: str
    finished_item: str
    finished_batch: str
    rejected_move: dict[str, Any]
    invalid: dict[str, Any]
    gap_order: str
    gap_message: dict[str, Any]
    in_doubt: dict[str, Any]
    in_doubt_others: list[dict[str, Any]]
    dead_lettered: dict[str, Any]


def send(broker: InMemoryBroker, document: dict[str, Any] | bytes, flow: str | None = None) -> None:
    kind = flow or (document["type"] if isinstance(document, dict) else "material_consumed")
    session = (document.get("production_order") if isinstance(document, dict) else None) or kind
    broker.send(INBOUND_FLOWS[kind].queue, mes.encode(document) if isinstance(document, dict) else document, session_id=session)


def wait_for(ports: Ports, company: str, message_id: str, states: set[State], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = ports.ledger.get(company, message_id)
        if entry is not None and entry.state in states:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{message_id} did not become {' or '.join(sorted(states))}: {entry}")


def rejected_move() -> dict[str, Any]:
    """A move F&O refuses with an infolog: warehouse 99 is not one of the plant's (parked `rejected`)."""
    return mes.event(
        "inventory_moved",
        None,
        {
            "item_number": "RM-0004",
            "quantity": 3.0,
            "from_site": "1",
            "from_warehouse": "99",
            "to_site": "1",
            "to_warehouse": "12",
        },
    )


def seed(
    broker: InMemoryBroker,
    host: LocalHost,
    emulator: FoEmulator,
    ports: Ports,
    orders: tuple[str, ...] = (),
    *,
    applied: bool = True,
) -> Cases:
    """Make every case; the host must be running. `orders`: three released orders (default
    P000011-13); `applied`: whether F&O has the in-doubt consumption (see below)."""
    finished, gap, doubtful = orders or ("P000011", "P000012", "P000013")
    header = emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber=finished)
    if header is None:
        raise LookupError(f"the emulator's plant has no production order {finished}")
    item, quantity = header["ItemNumber"], header["ScheduledQuantity"]
    batch = f"FG-{finished}"
    lifecycle = [
        mes.event("production_started", finished, {"started_quantity": quantity}, sequence=1),
        mes.event(
            "material_consumed",
            finished,
            {
                "lines": [
                    {"item_number": "RM-0001", "batch_number": "B0001-002", "quantity": 2.5},
                    {"item_number": "RM-0002", "batch_number": "B0002-001", "quantity": 1.0},
                ]
            },
            sequence=2,
        ),
        mes.event(
            "output_reported",
            finished,
            {"item_number": item, "batch_number": batch, "good_quantity": quantity, "end_job": True},
            sequence=3,
        ),
        mes.event("production_ended", finished, {}, sequence=4),
    ]
    for document in lifecycle:
        send(broker, document)
    rejected = rejected_move()
    send(broker, rejected)
    invalid = mes.event("material_consumed", doubtful, {"lines": [{"item_number": "RM-0003", "quantity": -4}]}, sequence=9)
    send(broker, invalid)
    gap_start = mes.event("production_started", gap, {}, sequence=1)
    gap_consume = mes.event(
        "material_consumed",
        gap,
        {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-003", "quantity": 1.5}]},
        sequence=3,
    )
    start = mes.event("production_started", doubtful, {}, sequence=1)
    for document in (gap_start, gap_consume, start):
        send(broker, document)
    done = {State.FORWARDED, State.PROCESSED}
    for document in [*lifecycle, gap_start, start]:
        wait_for(ports, "USMF", document["message_id"], done)
    for document in (rejected, invalid):
        wait_for(ports, "USMF", document["message_id"], {State.PARKED})
    wait_for(ports, "USMF", gap_consume["message_id"], {State.WAITING, State.PARKED})

    # F&O closes every connection without an answer while a consumption is sent: no one can tell
    # whether it was applied, so it is parked in doubt. The emulator drops half of them before
    # and half after doing the work; `applied` picks one F&O has (what an operator confirms)
    # or one it has not (what an operator resubmits). F&O's processed event settles an applied
    # one by itself when the business event is active.
    in_doubt: dict[str, Any] = {}
    others: list[dict[str, Any]] = []
    emulator.set_faults(drop_rate=1.0)
    try:
        for n in range(1, 13):
            candidate = mes.event(
                "material_consumed",
                doubtful,
                {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-004", "quantity": float(n)}]},
            )
            sent_before = emulator.app.send_message_calls
            send(broker, candidate)
            wait_for(ports, "USMF", candidate["message_id"], {State.PARKED})
            if (emulator.app.send_message_calls > sent_before) == applied:
                in_doubt = candidate
                break
            others.append(candidate)
    finally:
        emulator.set_faults(drop_rate=0.0)
    if not in_doubt:
        raise RuntimeError("no in-doubt consumption of the wanted kind in 12 sends")

    # A message whose function crashes on every delivery: after ten the broker dead-letters it.
    dead = mes.event(
        "quality_result",
        None,
        {
            "item_number": "RM-0003",
            "batch_number": "B0003-001",
            "test_group": "CHEM",
            "outcome": "pass",
            "tests": [{"test_id": "PH", "value": 7.0, "outcome": "pass"}],
        },
    )
    marker = dead["message_id"].encode()
    previous = host.before_invoke

    def crash(function: Any, lease: Any) -> None:
        if marker in lease.message.body:
            raise RuntimeError("worker crashed (simulated) while handling this message")
        if previous is not None:
            previous(function, lease)

    host.before_invoke = crash
    try:
        send(broker, dead)
        deadline = time.monotonic() + 30
        while not broker.dead_letters(INBOUND_FLOWS["quality_result"].queue) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        host.before_invoke = previous
    return Cases(finished, item, batch, rejected, invalid, gap, gap_consume, in_doubt, others, dead)
