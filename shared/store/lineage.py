"""Batch genealogy: which batches a production order consumed and which it produced, and where a
batch was transferred to (warehouse, location or batch).

Two rows per edge, written with upserts keyed by the MES message id (a redelivery rewrites the
same rows): one under the node (a production order, or a transfer journal), one under the batch.
Both are in the ledger table, in the company's partition, so the forward that states them writes
them in its Forwarded transaction (one Table operation, not one per partition); upstream and
downstream questions read one key range per hop.

A transfer is a node like an order: it "consumes" the batch it takes from (with the warehouse it
left) and "produces" the batch it puts (with the warehouse it went to, and a new batch number when
the MES re-batched). So a downstream walk from a batch shows where it went, and continues from the
new batch; an upstream walk from the new batch reaches the orders that made the old one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.store.ledger import Companion
from shared.store.table_rest import Table
from shared.store.tables import key_range, safe_key, storage_call

Direction = Literal["consumed", "produced"]
NodeKind = Literal["production", "transfer"]


@dataclass(frozen=True)
class Edge:
    company: str
    order: str
    direction: Direction
    item: str
    batch: str
    quantity: float
    message_id: str
    kind: NodeKind = "production"  # `order` is a production order, or a transfer journal number
    warehouse: str = ""  # for a transfer: the warehouse the batch left (consumed) or reached (produced)


@dataclass(frozen=True)
class BatchRef:
    item: str
    batch: str


#: Lineage rows live in the ledger table, in the company's partition (the ledger row's), so that a
#: forward writes its genealogy in the same transaction as its Forwarded row. Their keys start with
#: "~", which no message's key does (`safe_key` encodes it), so ledger queries leave them out.
_NODE = "~lineage~node~"
_BATCH = "~lineage~batch~"


def _partition(company: str) -> str:
    return safe_key(company.upper())


def _node_prefix(kind: str, node: str) -> str:
    return safe_key(f"{kind}|{node}|")


def _batch_prefix(item: str, batch: str) -> str:
    return safe_key(f"{item}|{batch}|")


def merged(edges: Iterable[Edge]) -> list[Edge]:
    """One edge per (order, direction, item, batch, message), quantities summed: a message that names
    the same batch on two lines is one fact of genealogy, and a transaction may hold a row only once."""
    totals: dict[tuple[str, ...], Edge] = {}
    for edge in edges:
        key = (edge.company.upper(), edge.kind, edge.order, edge.direction, edge.item, edge.batch, edge.message_id)
        known = totals.get(key)
        totals[key] = edge if known is None else replace(known, quantity=known.quantity + edge.quantity)
    return list(totals.values())


def _kind(row: Mapping[str, Any]) -> str:
    return str(row.get("Kind") or "production")  # rows written before transfers carry no kind


class LineageStore(Protocol):
    """What the pipeline and the operations need from the genealogy; `Lineage` keeps it in Table
    Storage, tests/fakes.py in memory, and tests/integration/test_lineage_contract.py holds both to
    the same answers."""

    def record(self, edges: Iterable[Edge]) -> None: ...

    def orders_of_batch(self, company: str, item: str, batch: str, direction: Direction) -> set[str]: ...

    def batches_of_order(self, company: str, order: str, direction: Direction) -> dict[BatchRef, float]: ...

    def upstream(self, company: str, item: str, batch: str, depth: int = 5) -> dict[str, object]: ...

    def downstream(self, company: str, item: str, batch: str, depth: int = 5) -> dict[str, object]: ...


#: (kind, node) of the nodes that consumed or produced a batch; and a node's batches with quantity and warehouse.
NodesOfBatch = Callable[[str, BatchRef, Direction], set[tuple[str, str]]]
BatchesOfNode = Callable[[str, str, str, Direction], dict[BatchRef, tuple[float, str]]]


def rows(edges: Iterable[Edge]) -> list[Companion]:
    """The genealogy's rows for `edges`, as upserts keyed by the MES message id (a redelivery rewrites
    the same rows), for the ledger's transaction: one under the node (the order or the transfer),
    one under the batch, both in the company's partition."""
    written: list[Companion] = []
    for edge in merged(edges):
        common = {
            "PartitionKey": _partition(edge.company),
            "Company": edge.company.upper(),
            "ProductionOrder": edge.order,
            "Direction": edge.direction,
            "ItemNumber": edge.item,
            "BatchNumber": edge.batch,
            "Quantity": float(edge.quantity),
            "MessageId": edge.message_id,
            "Kind": edge.kind,
            "Warehouse": edge.warehouse,
        }
        tail = f"{edge.direction}|{edge.message_id}"
        node_key = _NODE + safe_key(f"{edge.kind}|{edge.order}|{edge.direction}|{edge.item}|{edge.batch}|{edge.message_id}")
        batch_key = _BATCH + safe_key(f"{edge.item}|{edge.batch}|{edge.kind}|{edge.order}|{tail}")
        for key in (node_key, batch_key):
            written.append(("upsert", {**common, "RowKey": key}, {"mode": UpdateMode.REPLACE}))
    return written


def partition_of(company: str) -> str:
    """The partition a company's genealogy rows are in: its ledger partition."""
    return _partition(company)


class Lineage:
    """The genealogy in the ledger table (see `rows`)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def record(self, edges: Iterable[Edge]) -> None:
        """The rows of `edges` on their own (when they could not go with a ledger transaction)."""
        by_partition: dict[str, list[Companion]] = {}
        for row in rows(edges):
            by_partition.setdefault(str(row[1]["PartitionKey"]), []).append(row)
        for written in by_partition.values():
            for start in range(0, len(written), 100):
                with storage_call("lineage write"):
                    self._table.submit_transaction(written[start : start + 100])

    def _rows(self, company: str, prefix: str) -> list[dict[str, object]]:
        low, high = key_range(prefix)
        with storage_call("lineage read"):
            return [
                dict(row)
                for row in self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                    parameters={"pk": _partition(company), "low": low, "high": high},
                )
            ]

    def orders_of_batch(self, company: str, item: str, batch: str, direction: Direction) -> set[str]:
        """The production orders that consumed or produced `item/batch` (transfers left out)."""
        return {n for kind, n in self._nodes_of_batch(company, BatchRef(item, batch), direction) if kind == "production"}

    def batches_of_order(self, company: str, order: str, direction: Direction) -> dict[BatchRef, float]:
        return {ref: quantity for ref, (quantity, _) in self._batches_of_node(company, "production", order, direction).items()}

    def _nodes_of_batch(self, company: str, ref: BatchRef, direction: Direction) -> set[tuple[str, str]]:
        found = self._rows(company, _BATCH + _batch_prefix(ref.item, ref.batch))
        # The key's prefix can match another batch whose item or number holds "|": the fields decide.
        return {
            (_kind(r), str(r["ProductionOrder"]))
            for r in found
            if r.get("Direction") == direction and (r.get("ItemNumber"), r.get("BatchNumber")) == (ref.item, ref.batch)
        }

    def _batches_of_node(self, company: str, kind: str, node: str, direction: Direction) -> dict[BatchRef, tuple[float, str]]:
        totals: dict[BatchRef, tuple[float, str]] = {}
        for row in self._rows(company, _NODE + _node_prefix(kind, node)):
            if row.get("Direction") != direction or (_kind(row), row.get("ProductionOrder")) != (kind, node):
                continue
            ref = BatchRef(str(row["ItemNumber"]), str(row["BatchNumber"]))
            quantity = totals.get(ref, (0.0, ""))[0] + float(str(row["Quantity"]))
            totals[ref] = (quantity, str(row.get("Warehouse") or ""))
        return totals

    def upstream(self, company: str, item: str, batch: str, depth: int = 5) -> dict[str, object]:
        """The tree of what went into `item/batch`: orders that produced it and what they consumed,
        and transfers that brought it (with the batch and warehouse it came from)."""
        return walk(self._nodes_of_batch, self._batches_of_node, company, BatchRef(item, batch), depth, "produced", "consumed")

    def downstream(self, company: str, item: str, batch: str, depth: int = 5) -> dict[str, object]:
        """The tree of where `item/batch` went: orders that consumed it and what they produced, and
        transfers that moved it (with the warehouse and batch it went to)."""
        return walk(self._nodes_of_batch, self._batches_of_node, company, BatchRef(item, batch), depth, "consumed", "produced")


def edge_of_row(row: Mapping[str, Any]) -> Edge:
    """The edge a genealogy row states (either side's row, of this version or an earlier one)."""
    direction: Direction = "produced" if row.get("Direction") == "produced" else "consumed"
    kind: NodeKind = "transfer" if _kind(row) == "transfer" else "production"
    return Edge(
        company=str(row["Company"]),
        order=str(row["ProductionOrder"]),
        direction=direction,
        item=str(row["ItemNumber"]),
        batch=str(row["BatchNumber"]),
        quantity=float(row["Quantity"]),
        message_id=str(row["MessageId"]),
        kind=kind,
        warehouse=str(row.get("Warehouse") or ""),
    )


def move_legacy(source: Table, lineage: LineageStore, chunk: int = 1000) -> int:
    """The genealogy an earlier version kept in a table of its own (`LEGACY_LINEAGE_TABLE`), written
    again where it is kept now; idempotent (the rows are upserts). Reads the rows under the nodes,
    which hold every edge once; the old table is left for its owner to delete. Answers the edges moved."""
    moved = 0
    batch: list[Edge] = []
    try:
        for row in source.list_entities():
            if str(row["PartitionKey"]).startswith("batch|"):
                continue
            batch.append(edge_of_row(row))
            if len(batch) >= chunk:
                lineage.record(batch)
                moved, batch = moved + len(batch), []
    except ResourceNotFoundError:
        return moved  # no table of an earlier version: nothing to move
    lineage.record(batch)
    return moved + len(batch)


def walk(
    nodes_of_batch: NodesOfBatch,
    batches_of_node: BatchesOfNode,
    company: str,
    ref: BatchRef,
    depth: int,
    link: Direction,
    follow: Direction,
    seen: frozenset[BatchRef] = frozenset(),
) -> dict[str, object]:
    """The tree from `ref` along `link` to nodes and back along `follow` to their batches: the one
    walk of the genealogy, over the store's two lookups."""
    node: dict[str, object] = {"item": ref.item, "batch": ref.batch, "orders": []}
    if depth <= 0 or ref in seen:
        node["truncated"] = depth <= 0
        return node
    seen = seen | {ref}
    orders = []
    transfers = []
    for kind, name in sorted(nodes_of_batch(company, ref, link)):
        found = batches_of_node(company, kind, name, follow)
        children = []
        for child, (quantity, warehouse) in sorted(found.items(), key=lambda kv: (kv[0].item, kv[0].batch)):
            # The same batch in another warehouse is shown, not walked again (its orders are this node's).
            walked = walk(nodes_of_batch, batches_of_node, company, child, depth - 1, link, follow, seen)
            children.append({**walked, "quantity": quantity, **({"warehouse": warehouse} if warehouse else {})})
        if kind == "production":
            orders.append({"order": name, follow: children})
            continue
        sides = {follow: found, link: batches_of_node(company, kind, name, link)}
        transfers.append(
            {
                "transfer": name,
                "from_warehouse": ",".join(sorted({w for _, w in sides["consumed"].values()})),
                "to_warehouse": ",".join(sorted({w for _, w in sides["produced"].values()})),
                follow: children,
            }
        )
    node["orders"] = orders
    if transfers:
        node["transfers"] = transfers
    return node
