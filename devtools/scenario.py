"""A seeded plant shift: what the MES sends, with a real plant's disorder, and what F&O should
look like afterwards (so the demo, the chaos run and the benchmark can check the outcome)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from devtools import mes
from devtools.fo_emulator.plant import Row
from shared.inbound.mapping import movement_journal_number, transfer_journal_number


@dataclass(frozen=True)
class ShiftSpec:
    seed: int = 7
    orders: int = 40
    lines: int = 3  # production lines (the MES's plant resources)
    consumptions_per_order: int = 2
    quality_samples: int = 12
    inventory_moves: int = 10
    inventory_adjustments: int = 3  # stock found or lost, posted against an offset account
    duplicate_rate: float = 0.05  # share of events the MES sends twice
    malformed: int = 4  # broken messages sprinkled in
    sequenced: bool = True


@dataclass
class Expected:
    """F&O's state once every valid event took effect exactly once."""

    consumed: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    reported_good: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    final_status: dict[str, str] = field(default_factory=dict)
    quality_results: set[str] = field(default_factory=set)
    # journal number -> its type and its one line as F&O should hold it (item, batches, warehouses, quantity)
    journals: dict[str, dict[str, Any]] = field(default_factory=dict)
    fo_messages: int = 0
    malformed_ids: list[str] = field(default_factory=list)


@dataclass
class Shift:
    events: list[dict[str, Any] | bytes]  # in the order the MES sends them (bytes = a malformed message)
    orders: list[str]
    expected: Expected
    unique_events: int
    duplicates: int


def build_shift(spec: ShiftSpec, production_orders: list[Row], batches: list[Row], pick_batch: bool = True) -> Shift:
    rng = random.Random(spec.seed)
    orders = [o for o in production_orders if o["dataAreaId"] == "usmf"][: spec.orders]
    raw_batches: dict[str, list[str]] = defaultdict(list)
    for batch in batches:
        if batch["dataAreaId"] == "usmf" and batch["ItemNumber"].startswith("RM"):
            raw_batches[batch["ItemNumber"]].append(batch["BatchNumber"])
    expected = Expected()
    per_order: list[list[dict[str, Any]]] = []
    # Yesterday's shifts: every event lies in the past, as a MES's do (a later one is parked clock_skew).
    shift_start = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), time(6, 0), tzinfo=UTC)
    produced: list[tuple[str, str]] = []
    for index, order in enumerate(orders):
        number, item, quantity = order["ProductionOrderNumber"], order["ItemNumber"], float(order["ScheduledQuantity"])
        clock = shift_start + timedelta(minutes=index * 3 % 480)
        steps: list[tuple[str, dict[str, Any]]] = [("production_started", {"started_quantity": quantity})]
        for _ in range(spec.consumptions_per_order):
            component = rng.choice(sorted(raw_batches))
            lot = rng.choice(raw_batches[component])
            amount = round(rng.uniform(0.5, 5.0), 2)
            steps.append(("material_consumed", {"lines": [{"item_number": component, "batch_number": lot, "quantity": amount}]}))
            expected.consumed[number][f"{component}/{lot if pick_batch else ''}"] += amount
        for operation in (10, 20):
            steps.append(
                (
                    "operation_reported",
                    {
                        "lines": [
                            {
                                "operation_number": operation,
                                "hours": round(rng.uniform(0.2, 2), 2),
                                "good_quantity": quantity,
                                "resource": f"LINE-{index % spec.lines + 1}",
                            }
                        ]
                    },
                )
            )
        finished_batch = f"F{number[1:]}-{index % spec.lines + 1}"
        steps.append(
            ("output_reported", {"item_number": item, "batch_number": finished_batch, "good_quantity": quantity, "end_job": True})
        )
        expected.reported_good[number][f"{item}/{finished_batch}"] += quantity
        steps.append(("production_ended", {}))
        expected.final_status[number] = "Completed"
        produced.append((item, finished_batch))
        documents = []
        for sequence, (kind, body) in enumerate(steps, start=1):
            clock += timedelta(minutes=rng.randint(1, 20))
            documents.append(
                mes.event(
                    kind,
                    number,
                    body,
                    sequence=sequence if spec.sequenced else None,
                    occurred_at=clock,
                    message_id=f"{number}-{sequence:02d}-{kind}",
                    correlation_id=f"shift-{spec.seed}",
                )
            )
        per_order.append(documents)
        expected.fo_messages += len(documents)
    extras: list[dict[str, Any]] = []
    for n in range(min(spec.quality_samples, len(produced))):
        # The lab tests a finished batch after it was reported: the result follows its order's end.
        index = rng.randrange(len(produced))
        item, finished = produced[index]
        outcome = "pass" if rng.random() > 0.15 else "fail"
        document = mes.event(
            "quality_result",
            None,
            {
                "item_number": item,
                "batch_number": finished,
                "test_group": "FINAL",
                "outcome": outcome,
                "tests": [{"test_id": "WEIGHT", "value": round(rng.uniform(9, 11), 3), "outcome": outcome}],
            },
            message_id=f"QA-{spec.seed}-{n:04d}",
            occurred_at=shift_start + timedelta(hours=7),
        )
        document["production_order"] = per_order[index][0]["production_order"]
        if spec.sequenced:
            document["sequence"] = len(per_order[index]) + 1
        per_order[index].append(document)
        expected.quality_results.add(document["message_id"])
    for n in range(spec.inventory_moves):
        component = rng.choice(sorted(raw_batches))
        document = mes.event(
            "inventory_moved",
            None,
            {
                "item_number": component,
                "batch_number": rng.choice(raw_batches[component]),
                "quantity": float(rng.randint(1, 50)),
                "from_site": "1",
                "from_warehouse": "11",
                "to_site": "1",
                "to_warehouse": rng.choice(["12", "13"]),
            },
            message_id=f"MOVE-{spec.seed}-{n:04d}",
            occurred_at=shift_start + timedelta(minutes=30 * n % 960),
        )
        extras.append(document)
        body = document["body"]
        expected.journals[transfer_journal_number("USMF", document["message_id"])] = {
            "JournalType": "Transfer",
            "ItemNumber": body["item_number"],
            "SourceItemBatchNumber": body["batch_number"],
            "DestinationItemBatchNumber": body["batch_number"],
            "SourceWarehouseId": body["from_warehouse"],
            "DestinationWarehouseId": body["to_warehouse"],
            "InventoryQuantity": body["quantity"],
        }
    counts = random.Random(spec.seed * 31 + 5)  # its own stream: the rest of the shift stays as it was
    for n in range(spec.inventory_adjustments):
        counted = counts.choice(sorted(raw_batches))
        lot = counts.choice(raw_batches[counted])
        quantity = float(counts.choice([-3, -1, 2]))  # a count difference: mostly lost, sometimes found
        document = mes.event(
            "inventory_adjusted",
            None,
            {
                "item_number": counted,
                "batch_number": lot,
                "quantity": quantity,
                "site": "1",
                "warehouse": "11",
                "offset_account": "600140",
                "reason": "cycle count",
            },
            message_id=f"ADJUST-{spec.seed}-{n:04d}",
            occurred_at=shift_start + timedelta(minutes=45 * n % 960),
        )
        extras.append(document)
        expected.journals[movement_journal_number("USMF", document["message_id"])] = {
            "JournalType": "Movement",
            "ItemNumber": counted,
            "ItemBatchNumber": lot,
            "InventoryWarehouseId": "11",
            "InventoryQuantity": quantity,
            "OffsetMainAccountIdDisplayValue": "600140",
        }

    # The MES sends orders interleaved as the lines run them; one order's events stay in order.
    stream: list[dict[str, Any] | bytes] = []
    cursors = [0] * len(per_order)
    live = list(range(len(per_order)))
    while live:
        pick = rng.choice(live[: spec.lines * 2])
        stream.append(per_order[pick][cursors[pick]])
        cursors[pick] += 1
        if cursors[pick] == len(per_order[pick]):
            live.remove(pick)
    for document in extras:
        stream.insert(rng.randrange(len(stream) + 1), document)
    unique = len(stream)
    duplicates = 0
    for position in sorted(rng.sample(range(len(stream)), int(len(stream) * spec.duplicate_rate)), reverse=True):
        original = stream[position]
        stream.insert(min(len(stream), position + rng.randint(1, 30)), original)  # the MES resends it a little later
        duplicates += 1
    broken = [
        b"{ truncated",
        b'{"type": "material_consumed", "message_id": "BROKEN-1", "company": "USMF"}',
        b"\x00\x01binary noise",
        b'{"message_id": "BROKEN-2", "type": "material_consumed", "company": "USMF", "plant": "1", '
        b'"production_order": "P000001", "occurred_at": "2026-11-23T08:00:00+00:00", "body": {"lines": [{"item_number": "RM-0001", "quantity": -3}]}}',
    ]
    for n in range(spec.malformed):
        stream.insert(rng.randrange(len(stream) + 1), broken[n % len(broken)])
    return Shift(stream, [o["ProductionOrderNumber"] for o in orders], expected, unique, duplicates)
