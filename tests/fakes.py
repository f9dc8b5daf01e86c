"""In-memory stand-ins for the adapters the handlers take through `Ports`, for unit tests that run in
milliseconds without Azurite or the emulator. Each keeps the semantics of the real adapter it stands
for; the contract tests in tests/integration run the same cases against both, so a fake cannot drift:

    InMemoryLedger, InMemoryProgress    test_ledger_contract.py, test_gate_contract.py (one table, as the real)
    InMemoryEventLog                    test_event_log_contract.py
    InMemoryLineage                     test_lineage_contract.py
    FakeFo                              test_fo_contract.py (the F&O emulator)
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from azure.core import MatchConditions
from azure.data.tables import UpdateMode

from shared.clock import Clock, utcnow
from shared.errors import BridgeError, NotFound
from shared.fo import odata
from shared.fo.client import BatchOperation, BatchResult, CallStats
from shared.inbound.mapping import MappingOptions
from shared.inbound.order_gate import OrderGate
from shared.outbound.mes_publisher import Envelope
from shared.runtime import Ports
from shared.settings import Settings, load_settings
from shared.store.event_log import EVENT_ID_UNITS, STATUS, STATUS_UNITS, Applied
from shared.store.ledger import (
    Companion,
    CompanionConflict,
    LedgerEntry,
    LostRace,
    State,
    _history_entry,
    compact_history,
)
from shared.store.lineage import BatchRef, Direction, Edge, edge_of_row, walk
from shared.store.lineage import rows as lineage_rows
from shared.store.progress import Progress, ProgressChanged, planned_write, progress_from_entity, progress_key
from shared.store.tables import cut_text, safe_key


class InMemoryEventLog:
    """`shared.store.event_log.EventLog` in memory: per kind, company (case-insensitive) and order the
    ControlNumber last applied, which only moves up, with its status and the EventId that moved it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.guards: dict[tuple[str, str, str], Applied] = {}
        self._versions = itertools.count(1)

    def applied(self, kind: str, company: str, order: str) -> Applied | None:
        with self._lock:
            return self.guards.get((kind, company.upper(), order))

    def apply_control_number(
        self,
        kind: str,
        company: str,
        order: str,
        control_number: int,
        status: str,
        *,
        event_id: str = "",
        since: Applied | None = None,
    ) -> bool:
        # `since` only saves the real store a read; whatever it says, the guard as it is decides.
        key = (kind, company.upper(), order)
        with self._lock:
            current = self.guards.get(key)
            if current is not None and control_number <= current.control_number:
                return False
            self.guards[key] = Applied(
                control_number,
                cut_text(status, STATUS_UNITS, "the order's event row"),
                cut_text(event_id.upper(), EVENT_ID_UNITS, "the order's event row"),
                etag=str(next(self._versions)),
            )
            return True

    def applied_status(self, company: str, order: str) -> Applied | None:
        return self.applied(STATUS, company, order)


class InMemoryLineage:
    """`shared.store.lineage.Lineage` in memory: its rows in the ledger's `InMemoryTable` (so the rows
    a forward's transaction carries are the genealogy, as in Table Storage), one edge per (company,
    node, direction, item, batch, message): a redelivery rewrites the same edge; the walk is the real one."""

    def __init__(self, table: InMemoryTable | None = None) -> None:
        self.table = table or InMemoryTable()

    def record(self, edges: Iterable[Edge]) -> None:
        with self.table.lock:
            for row in lineage_rows(edges):
                self.table.apply(row)

    @property
    def edges(self) -> list[Edge]:
        """Every edge recorded, from the rows under the nodes."""
        with self.table.lock:
            found = [row for (_, key), (row, _, _) in self.table.rows.items() if key.startswith("~lineage~node~")]
        return [edge_of_row(r) for r in found]

    def _matching(self, company: str, direction: Direction) -> list[Edge]:
        return [e for e in self.edges if e.company.upper() == company.upper() and e.direction == direction]

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


class FakeClock:
    """A `shared.clock.Clock` that stands still until a test moves it."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class InMemoryTable:
    """The ledger table's rows other than messages (an order's progress, the content index), by
    partition and row key, each with an ETag; the ledger's transaction applies its companions here
    all or nothing, as an entity-group transaction does."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.rows: dict[tuple[str, str], tuple[dict[str, Any], str, int]] = {}  # entity, ETag, write order
        self._version = itertools.count(1)

    def stamp(self) -> tuple[str, int]:
        n = next(self._version)
        return f'W/"{n}"', n

    def refused(self, companion: Companion) -> bool:
        """True when Table Storage would refuse this operation (the row exists, changed or is gone)."""
        operation, entity, options = companion
        stored = self.rows.get((entity["PartitionKey"], entity["RowKey"]))
        if operation == "create":
            return stored is not None
        if operation == "update":
            guarded = options.get("match_condition") == MatchConditions.IfNotModified
            return stored is None or (guarded and stored[1] != options.get("etag"))
        if operation == "upsert":
            return False
        raise ValueError(f"no {operation} in a ledger transaction")

    def apply(self, companion: Companion) -> str:
        operation, entity, options = companion
        key = (entity["PartitionKey"], entity["RowKey"])
        stored = self.rows.get(key)
        merge = options.get("mode", UpdateMode.MERGE if operation == "update" else UpdateMode.REPLACE) == UpdateMode.MERGE
        row = {**(stored[0] if stored and merge else {}), **entity}
        etag, order = self.stamp()
        self.rows[key] = (row, etag, order)
        return etag


class InMemoryLedger:
    """`shared.store.ledger.Ledger` in memory: ETag-guarded rows per company and message id, the history
    each change appends, the payload as kept (cut past 600 KiB), companions in the same transaction,
    and the content index. As the real row is merged, a time left empty (`None`) keeps what it held."""

    PAYLOAD_KEPT = 600 * 1024

    def __init__(self, table: InMemoryTable | None = None, clock: Clock = utcnow) -> None:
        self.table = table or InMemoryTable()
        self._clock = clock
        self.entries: dict[tuple[str, str], tuple[LedgerEntry, bytes]] = {}

    def get(self, company: str, message_id: str) -> LedgerEntry | None:
        with self.table.lock:
            stored = self.entries.get((company, message_id))
        return stored[0] if stored else None

    def payload(self, company: str, message_id: str) -> bytes | None:
        with self.table.lock:
            stored = self.entries.get((company, message_id))
        return stored[1] if stored else None

    def create(
        self, entry: LedgerEntry, payload: bytes | None = None, *, companions: list[Companion] | None = None
    ) -> LedgerEntry:
        now = self._clock()
        with self.table.lock:
            if (entry.company, entry.message_id) in self.entries:
                raise LostRace(entry.message_id)
            if any(self.table.refused(c) for c in companions or ()):
                raise CompanionConflict(f"a row written with {entry.message_id} had changed")
            etags = tuple(self.table.apply(companion) for companion in companions or ())
            created = replace(
                entry,
                received_at=entry.received_at or now,
                updated_at=now,
                history=compact_history(
                    (*entry.history, _history_entry(entry.state, entry.reason, entry.detail, now, entry.attempts))
                ),
                etag=self.table.stamp()[0],
            )
            self.entries[(entry.company, entry.message_id)] = (created, (payload or b"")[: self.PAYLOAD_KEPT])
        return replace(created, companion_etags=etags)

    def transition(
        self,
        entry: LedgerEntry,
        state: State,
        *,
        reason: str = "",
        detail: str = "",
        payload: bytes | None = None,
        companions: list[Companion] | None = None,
        **changes: Any,
    ) -> LedgerEntry:
        now = self._clock()
        with self.table.lock:
            stored = self.entries.get((entry.company, entry.message_id))
            if stored is None or stored[0].etag != entry.etag:
                raise LostRace(entry.message_id)
            if any(self.table.refused(c) for c in companions or ()):
                raise CompanionConflict(f"a row written with {entry.message_id} had changed")
            etags = tuple(self.table.apply(companion) for companion in companions or ())
            attempt = int(changes.get("attempts", entry.attempts))
            history = compact_history((*entry.history, _history_entry(state, reason, detail, now, attempt)))
            updated = replace(entry, state=state, reason=reason, detail=detail, updated_at=now, history=history, **changes)
            updated = replace(updated, etag=self.table.stamp()[0])
            old = stored[0]
            kept = replace(  # the row is merged: a time or sequence left empty keeps what the row held
                updated,
                received_at=updated.received_at or old.received_at,
                lease_until=updated.lease_until or old.lease_until,
                sequence=updated.sequence if updated.sequence is not None else old.sequence,
            )
            self.entries[(entry.company, entry.message_id)] = (
                kept,
                stored[1] if payload is None else payload[: self.PAYLOAD_KEPT],
            )
        return replace(updated, companion_etags=etags)

    def transition_together(
        self, moves: list[tuple[LedgerEntry, State, dict[str, Any]]], companions: list[Companion] | None = None
    ) -> list[LedgerEntry]:
        with self.table.lock:
            for index, (entry, _, _) in enumerate(moves):
                stored = self.entries.get((entry.company, entry.message_id))
                if stored is None or stored[0].etag != entry.etag:
                    raise LostRace(entry.message_id, index)
            if any(self.table.refused(c) for c in companions or ()):
                raise CompanionConflict("a row written with the group had changed")
            moved = []
            for index, (entry, state, changes) in enumerate(moves):
                rest = dict(changes)
                reason, detail = str(rest.pop("reason", "")), str(rest.pop("detail", ""))
                # One transaction: the companions go with the first row.
                together = companions if index == 0 else None
                moved.append(self.transition(entry, state, reason=reason, detail=detail, companions=together, **rest))
            return moved

    def write(self, companion: Companion) -> None:
        if companion[0] != "upsert":
            raise ValueError(f"only upserts are written alone, not {companion[0]}")
        with self.table.lock:
            self.table.apply(companion)

    def query(
        self,
        *,
        company: str | None = None,
        state: State | None = None,
        flow: str | None = None,
        production_order: str | None = None,
        updated_since: datetime | None = None,
    ) -> Iterator[LedgerEntry]:
        with self.table.lock:
            rows = [e for e, _ in self.entries.values()]
        rows.sort(key=lambda e: (safe_key(e.company), safe_key(e.message_id)))  # the table's order
        for e in rows:
            if (
                (company is None or e.company == company)
                and (state is None or e.state is state)
                and (flow is None or e.flow == flow)
                and (production_order is None or e.production_order == production_order)
                and (updated_since is None or (e.updated_at is not None and e.updated_at >= updated_since))
            ):
                yield e

    def waiting_or_parked(self, company: str, order: str) -> list[tuple[LedgerEntry, bytes]]:
        return self.read_held(company, self.held_rows(company, order))

    def held_rows(self, company: str, order: str) -> list[LedgerEntry]:
        with self.table.lock:
            return [
                e
                for e, _ in self.entries.values()
                if e.company == company and e.production_order == order and e.state in (State.WAITING, State.PARKED)
            ]

    def read_held(self, company: str, chosen: list[LedgerEntry]) -> list[tuple[LedgerEntry, bytes]]:
        found: list[tuple[LedgerEntry, bytes]] = []
        with self.table.lock:
            for described in chosen:
                now = self.entries.get((company, described.message_id))
                held = now is not None and now[0].state in (State.WAITING, State.PARKED)
                if now is not None and held and now[0].production_order == described.production_order:
                    found.append(now)
        return found

    def messages_with_content(self, company: str, content_hash: str) -> list[str]:
        low, high = f"~content~{content_hash}|", f"~content~{content_hash}}}"
        with self.table.lock:
            found = [
                (order, str(row["MessageId"]))
                for (pk, rk), (row, _, order) in self.table.rows.items()
                if pk == safe_key(company) and low <= rk < high
            ]
        return [message_id for _, message_id in sorted(found)]


class InMemoryProgress:
    """`shared.store.progress.TableProgressStore` in memory: the rows live in the ledger's
    `InMemoryTable`, stored as the real entities, so the ledger's transaction can move them."""

    def __init__(self, table: InMemoryTable | None = None) -> None:
        self.table = table or InMemoryTable()

    def read(self, company: str, order: str) -> Progress:
        with self.table.lock:
            stored = self.table.rows.get((safe_key(company), progress_key(order)))
        if stored is None:
            return Progress(company, order)
        return progress_from_entity(company, order, stored[0], stored[1])

    def write(self, progress: Progress) -> Progress:
        companion = planned_write(progress, progress)
        with self.table.lock:
            if self.table.refused(companion):
                raise ProgressChanged(progress.order)
            etag = self.table.apply(companion)
        return replace(progress, etag=etag)

    def planned_write(self, progress: Progress, wanted: Progress) -> Companion:
        return planned_write(progress, wanted)


def ledger_and_gate(
    *, gap_timeout_s: float = 600, require_start: bool = True, clock: Clock = utcnow
) -> tuple[InMemoryLedger, OrderGate]:
    """The in-memory ledger and the real gate over in-memory progress rows, sharing one table."""
    table = InMemoryTable()
    gate = OrderGate(InMemoryProgress(table), gap_timeout_s=gap_timeout_s, require_start=require_start, clock=clock)
    return InMemoryLedger(table, clock), gate


_LITERAL = re.compile(r"(\w+) eq ('(?:[^']|'')*'|[^\s)]+)")


def _odata_value(text: str) -> object:
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return float(text)


def _matches(where: odata.Filter, row: Mapping[str, Any]) -> bool:
    """`where` on one row: the conjunction of `eq`s that `shared.fo.odata` writes (nothing else is built)."""
    return all(row.get(name) == _odata_value(value) for name, value in _LITERAL.findall(where.text)) and where.matches(row)


@dataclass
class FoCall:
    kind: str  # "send", "service", "batch"
    what: str  # the message type, the service path, the entity sets
    body: Any


class FakeFo:
    """F&O as the bridge sees it through `FoApi`: entity sets as lists of rows (queries filter by
    company, `eq` and `$select` as OData does), and the answers to the calls that change F&O scripted
    by the test: `answer(error)` makes the next such call raise it (`InDoubt`: sent, no answer),
    `fail_reads(error)` the next read. Every call that reached F&O is in `calls`; the accepted ones in `applied`."""

    def __init__(self, rows: Mapping[str, list[dict[str, Any]]] | None = None) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {name: list(r) for name, r in (rows or {}).items()}
        self.stats = CallStats()
        self.calls: list[FoCall] = []
        self.applied: list[FoCall] = []
        self.answers: deque[BaseException | None] = deque()
        self.read_failures: deque[BaseException] = deque()
        self.service_answers: deque[Any] = deque()
        self.token_error: BridgeError | None = None
        #: What `budget_wait_s` answers: a test sets it to play F&O's budget spent for a while.
        self.budget_wait = 0.0

    def budget_wait_s(self) -> float:
        return self.budget_wait

    def answer(self, *outcomes: BaseException | None) -> None:
        """The next changing calls' outcomes, in order: an error to raise, or None to accept."""
        self.answers.extend(outcomes)

    def fail_reads(self, *errors: BaseException) -> None:
        self.read_failures.extend(errors)

    def _change(self, call: FoCall) -> None:
        self.stats.add(requests=1)
        if self.token_error is not None:
            raise self.token_error
        self.calls.append(call)
        outcome = self.answers.popleft() if self.answers else None
        if outcome is not None:
            raise outcome
        self.applied.append(call)

    def _read(self) -> None:
        self.stats.add(requests=1)
        if self.token_error is not None:
            raise self.token_error
        if self.read_failures:
            raise self.read_failures.popleft()

    def token_check(self) -> None:
        if self.token_error is not None:
            raise self.token_error

    def send_message(self, company: str, message_type: str, content: Mapping[str, Any]) -> None:
        self._change(FoCall("send", message_type, {"company": company, "content": dict(content)}))

    def call_service(self, service_path: str, payload: Mapping[str, Any], *, idempotent: bool = False) -> Any:
        self._change(FoCall("service", service_path, dict(payload)))
        return self.service_answers.popleft() if self.service_answers else None

    def batch(self, changeset: Sequence[BatchOperation]) -> list[BatchResult]:
        self._change(FoCall("batch", ",".join(op.path for op in changeset), list(changeset)))
        return [BatchResult(201, dict(op.body or {}), str(n)) for n, op in enumerate(changeset, start=1)]

    def query(
        self,
        entity_set: str,
        *,
        company: str,
        where: odata.Filter | None = None,
        select: Sequence[str] = (),
        top: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        self._read()
        condition = (
            odata.eq("dataAreaId", company.lower()) & where if where is not None else odata.eq("dataAreaId", company.lower())
        )
        found = [row for row in self.rows.get(entity_set, []) if _matches(condition, row)][:top]
        for row in found:
            yield {k: v for k, v in row.items() if k in select} if select else dict(row)

    def get(self, entity_set: str, keys: Mapping[str, odata.Scalar]) -> dict[str, Any]:
        self._read()
        for row in self.rows.get(entity_set, []):
            if all(row.get(k) == v for k, v in keys.items()):
                return dict(row)
        raise NotFound(f"F&O has no GET /data/{entity_set}{odata.key_segment(keys)}", status=404)


@dataclass(frozen=True)
class Scheduled:
    queue: str
    body: bytes
    message_id: str
    session_id: str | None
    delay_s: float
    correlation_id: str | None
    properties: dict[str, Any]


@dataclass
class RecordingRequeue:
    """The inbound queues' scheduled messages, as a list (`shared.inbound.servicebus.Requeue`)."""

    scheduled: list[Scheduled] = field(default_factory=list)

    def schedule(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        session_id: str | None,
        delay_s: float,
        correlation_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        self.scheduled.append(Scheduled(queue, body, message_id, session_id, delay_s, correlation_id, dict(properties or {})))


def unit_settings(**overrides: str) -> Settings:
    """Settings for unit tests, as app settings (`RETRY_FIRST_WAIT_S="1"`): no endpoint is ever called."""
    return load_settings(
        {
            "FO_BASE_URL": "https://contoso.operations.dynamics.com/",
            "FO_TENANT_ID": "tenant",
            "FO_CLIENT_ID": "client",
            "FO_CLIENT_SECRET": "s3cret-value",
            "TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true",
            "FO_COMPANIES": "USMF,DEMF",
            **overrides,
        }
    )


@dataclass
class FakeBridge:
    """Every port the inbound pipeline and the business-event handlers use, in memory, and the fakes
    themselves for the test to arrange and inspect."""

    ports: Ports
    ledger: InMemoryLedger
    gate: OrderGate
    fo: FakeFo
    requeue: RecordingRequeue
    lineage: InMemoryLineage
    events: InMemoryEventLog
    publisher: RecordingPublisher
    clock: FakeClock


def fake_bridge(*, fo_rows: Mapping[str, list[dict[str, Any]]] | None = None, **settings: str) -> FakeBridge:
    """The fakes wired as `Ports`, with one `FakeClock` (set to now) for the pipeline, the ledger's stamps
    and the gate; dead letters are untouchable."""
    loaded = unit_settings(**settings)
    clock = FakeClock(utcnow())
    table = InMemoryTable()
    ledger = InMemoryLedger(table, clock)
    gate = OrderGate(
        InMemoryProgress(table),
        gap_timeout_s=loaded.gate_gap_timeout_s,
        require_start=loaded.gate_require_start,
        clock=clock,
    )
    fo, requeue, lineage, events, publisher = (
        FakeFo(fo_rows),
        RecordingRequeue(),
        InMemoryLineage(table),
        InMemoryEventLog(),
        RecordingPublisher(),
    )
    wired = ports(
        settings=loaded,
        fo=fo,
        ledger=ledger,
        gate=gate,
        lineage=lineage,
        requeue=requeue,
        options=MappingOptions.from_settings(loaded),
        events=events,
        publisher=publisher,
        clock=clock,
    )
    return FakeBridge(wired, ledger, gate, fo, requeue, lineage, events, publisher, clock)


def ports(**given: Any) -> Ports:
    """Ports with the given fakes; every other port is `Untouchable`."""
    names = ("settings", "fo", "ledger", "gate", "lineage", "requeue", "options", "events", "publisher", "dead_letters")
    optional = {name: given[name] for name in ("log", "clock") if name in given}
    return Ports(**{name: given.get(name, cast(Any, Untouchable(name))) for name in names}, **optional)
