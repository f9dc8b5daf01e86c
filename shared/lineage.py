"""Batch genealogy: which batches a production order consumed and which it produced.

Two rows per edge, written with upserts keyed by the MES message id (a redelivery rewrites the
same rows): one in the order's partition, one in the batch's partition. Upstream and downstream
questions then read one partition per hop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from azure.data.tables import TableClient, UpdateMode

from shared.tables import safe_key, storage_call

Direction = Literal["consumed", "produced"]


@dataclass(frozen=True)
class Edge:
    company: str
    order: str
    direction: Direction
    item: str
    batch: str
    quantity: float
    message_id: str


@dataclass(frozen=True)
class BatchRef:
    item: str
    batch: str


def _batch_partition(company: str, item: str, batch: str) -> str:
    return safe_key(f"batch|{company.upper()}|{item}|{batch}")


def _order_partition(company: str, order: str) -> str:
    return safe_key(f"order|{company.upper()}|{order}")


def merged(edges: Iterable[Edge]) -> list[Edge]:
    """One edge per (order, direction, item, batch, message), quantities summed: a message that names
    the same batch on two lines is one fact of genealogy, and a transaction may hold a row only once."""
    totals: dict[tuple[str, str, str, str, str, str], Edge] = {}
    for edge in edges:
        key = (edge.company.upper(), edge.order, edge.direction, edge.item, edge.batch, edge.message_id)
        known = totals.get(key)
        totals[key] = edge if known is None else replace(known, quantity=known.quantity + edge.quantity)
    return list(totals.values())


class Lineage:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def record(self, edges: Iterable[Edge]) -> None:
        by_partition: dict[str, list[dict[str, object]]] = {}
        for edge in merged(edges):
            common = {
                "Company": edge.company.upper(),
                "ProductionOrder": edge.order,
                "Direction": edge.direction,
                "ItemNumber": edge.item,
                "BatchNumber": edge.batch,
                "Quantity": float(edge.quantity),
                "MessageId": edge.message_id,
            }
            order_row = {
                "PartitionKey": _order_partition(edge.company, edge.order),
                "RowKey": safe_key(f"{edge.direction}|{edge.item}|{edge.batch}|{edge.message_id}"),
                **common,
            }
            batch_row = {
                "PartitionKey": _batch_partition(edge.company, edge.item, edge.batch),
                "RowKey": safe_key(f"{edge.direction}|{edge.order}|{edge.message_id}"),
                **common,
            }
            for row in (order_row, batch_row):
                by_partition.setdefault(str(row["PartitionKey"]), []).append(row)
        for rows in by_partition.values():
            for start in range(0, len(rows), 100):
                chunk = rows[start : start + 100]
                with storage_call("lineage write"):
                    self._table.submit_transaction([("upsert", row, {"mode": UpdateMode.REPLACE}) for row in chunk])

    def _rows(self, partition: str, direction: Direction) -> list[dict[str, object]]:
        with storage_call("lineage read"):
            return [
                dict(row)
                for row in self._table.query_entities(
                    "PartitionKey eq @pk and Direction eq @direction", parameters={"pk": partition, "direction": direction}
                )
            ]

    def orders_of_batch(self, company: str, item: str, batch: str, direction: Direction) -> set[str]:
        return {str(r["ProductionOrder"]) for r in self._rows(_batch_partition(company, item, batch), direction)}

    def batches_of_order(self, company: str, order: str, direction: Direction) -> dict[BatchRef, float]:
        totals: dict[BatchRef, float] = {}
        for row in self._rows(_order_partition(company, order), direction):
            ref = BatchRef(str(row["ItemNumber"]), str(row["BatchNumber"]))
            totals[ref] = totals.get(ref, 0.0) + float(str(row["Quantity"]))
        return totals

    def upstream(self, company: str, item: str, batch: str, depth: int = 5) -> dict[str, object]:
        """The tree of what went into `item/batch`: orders that produced it and what they consumed."""
        return self._walk(company, BatchRef(item, batch), depth, "produced", "consumed", set())

    def downstream(self, company: str, item: str, batch: str, depth: int = 5) -> dict[str, object]:
        """The tree of where `item/batch` went: orders that consumed it and what they produced."""
        return self._walk(company, BatchRef(item, batch), depth, "consumed", "produced", set())

    def _walk(
        self, company: str, ref: BatchRef, depth: int, link: Direction, follow: Direction, seen: set[BatchRef]
    ) -> dict[str, object]:
        node: dict[str, object] = {"item": ref.item, "batch": ref.batch, "orders": []}
        if depth <= 0 or ref in seen:
            node["truncated"] = depth <= 0
            return node
        seen = seen | {ref}
        orders = []
        for order in sorted(self.orders_of_batch(company, ref.item, ref.batch, link)):
            batches = self.batches_of_order(company, order, follow)
            orders.append(
                {
                    "order": order,
                    follow: [
                        {**self._walk(company, child, depth - 1, link, follow, seen), "quantity": quantity}
                        for child, quantity in sorted(batches.items(), key=lambda kv: (kv[0].item, kv[0].batch))
                    ],
                }
            )
        node["orders"] = orders
        return node
