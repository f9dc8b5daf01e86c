"""In-memory stand-ins for the adapters the handlers take through `Ports`, for unit tests that run in
milliseconds without Azurite or the emulator. Each keeps the semantics of the real adapter it stands
for; the contract tests in tests/integration run the same cases against both, so a fake cannot drift.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from shared.outbound.mes_publisher import Envelope
from shared.runtime import Ports
from shared.store.event_log import STATUS, STATUS_UNITS
from shared.store.lineage import BatchRef, Direction, Edge, merged, walk
from shared.store.tables import cut_text, safe_key


class InMemoryEventLog:
    """`shared.store.event_log.EventLog` in memory: EventIds per consumer (case-insensitive, as the
    real row key is upper-cased), and per kind, company and order the ControlNumber last applied,
    which only moves up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handled: dict[tuple[str, str], tuple[str, str]] = {}
        self.guards: dict[tuple[str, str, str], tuple[int, str]] = {}

    def seen(self, consumer: str, event_id: str) -> bool:
        with self._lock:
            return (consumer, event_id.upper()) in self.handled

    def remember(self, consumer: str, event_id: str, business_event_id: str, outcome: str) -> None:
        with self._lock:
            self.handled[(consumer, event_id.upper())] = (business_event_id, str(outcome))

    def applied(self, kind: str, company: str, order: str) -> tuple[int, str] | None:
        with self._lock:
            return self.guards.get((kind, company.upper(), order))

    def apply_control_number(self, kind: str, company: str, order: str, control_number: int, status: str) -> bool:
        key = (kind, company.upper(), order)
        with self._lock:
            current = self.guards.get(key)
            if current is not None and control_number <= current[0]:
                return False
            self.guards[key] = (control_number, cut_text(status, STATUS_UNITS, "the order's event row"))
            return True

    def applied_status(self, company: str, order: str) -> tuple[int, str] | None:
        return self.applied(STATUS, company, order)


class InMemoryLineage:
    """`shared.store.lineage.Lineage` in memory: one edge per (company, node, direction, item, batch,
    message), so a redelivery rewrites the same edge as the real upserts do; the walk is the real one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.edges: dict[tuple[str, ...], Edge] = {}

    def record(self, edges: Iterable[Edge]) -> None:
        with self._lock:
            for edge in merged(edges):
                key = (edge.company.upper(), edge.kind, edge.order, edge.direction, edge.item, edge.batch, edge.message_id)
                self.edges[key] = edge

    def _matching(self, company: str, direction: Direction) -> list[Edge]:
        with self._lock:
            return [e for e in self.edges.values() if e.company.upper() == company.upper() and e.direction == direction]

    def _nodes_of_batch(self, company: str, ref: BatchRef, direction: Direction) -> set[tuple[str, str]]:
        return {(e.kind, e.order) for e in self._matching(company, direction) if (e.item, e.batch) == (ref.item, ref.batch)}

    def _batches_of_node(self, company: str, kind: str, node: str, direction: Direction) -> dict[BatchRef, tuple[float, str]]:
        # In the real table's row order (the row key), so the warehouse the last row names wins there and here.
        rows = sorted(
            (e for e in self._matching(company, direction) if (e.kind, e.order) == (kind, node)),
            key=lambda e: safe_key(f"{e.direction}|{e.item}|{e.batch}|{e.message_id}"),
        )
        totals: dict[BatchRef, tuple[float, str]] = {}
        for e in rows:
            ref = BatchRef(e.item, e.batch)
            totals[ref] = (totals.get(ref, (0.0, ""))[0] + float(e.quantity), e.warehouse)
        return totals

    def orders_of_batch(self, company: str, item: str, batch: str, direction: Direction) -> set[str]:
        return {n for kind, n in self._nodes_of_batch(company, BatchRef(item, batch), direction) if kind == "production"}

    def batches_of_order(self, company: str, order: str, direction: Direction) -> dict[BatchRef, float]:
        return {ref: q for ref, (q, _) in self._batches_of_node(company, "production", order, direction).items()}

    def upstream(self, company: str, item: str, batch: str, depth: int = 5) -> dict[str, object]:
        return walk(self._nodes_of_batch, self._batches_of_node, company, BatchRef(item, batch), depth, "produced", "consumed")

    def downstream(self, company: str, item: str, batch: str, depth: int = 5) -> dict[str, object]:
        return walk(self._nodes_of_batch, self._batches_of_node, company, BatchRef(item, batch), depth, "consumed", "produced")


@dataclass
class RecordingPublisher:
    """The MES topic as a list; `refuse` makes the next sends fail as a refused send would."""

    sent: list[Envelope] = field(default_factory=list)
    refuse: int = 0

    def publish(self, message: Envelope) -> None:
        if self.refuse:
            self.refuse -= 1
            raise RuntimeError("the MES topic refused the send")
        self.sent.append(message)


class Untouchable:
    """A port the code under test must not use: any attribute read fails the test, naming the port."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        raise AssertionError(f"the code under test used ports.{self._name}.{attribute}")


def ports(**given: Any) -> Ports:
    """Ports with the given fakes; every other port is `Untouchable`."""
    names = ("settings", "fo", "ledger", "gate", "lineage", "requeue", "options", "events", "publisher", "dead_letters")
    return Ports(**{name: given.get(name, cast(Any, Untouchable(name))) for name in names})
