"""The ledger: one row per MES message, its idempotency record and the trace operators read.

Every change of state is guarded by the row's ETag, so of two workers holding the same message
exactly one moves it forward. States:

- Waiting     the order gate holds it until its predecessor is forwarded
- Forwarding  a worker holds it and is calling F&O (until `LeaseUntil`)
- Forwarded   F&O accepted the call
- Processed / Failed   F&O's message processor finished it (business event)
- Parked      kept with a reason for an operator: invalid, rejected, in doubt, gap
- Cancelled   an operator decided it must never be sent
- Duplicate   a new message id for something already forwarded (its sequence is below the watermark)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode

from shared.clock import utcnow
from shared.store.table_rest import Table
from shared.store.tables import (
    ENTITY_BYTES,
    cut_text,
    entity_size,
    get_text,
    json_size,
    key_range,
    put_text,
    safe_key,
    storage_call,
    text_parts,
    text_properties,
    utf16_prefix,
    utf16_units,
    wire_size,
)

_CHUNK = 60 * 1024  # binary properties hold at most 64 KiB
_MAX_CHUNKS = 10  # the payload keeps 600 KiB of the entity's 1 MiB; the rest is for the texts below
_HISTORY_LIMIT = 40
_HISTORY_UNITS = 16_000  # History's JSON, in UTF-16 code units: one string property, a bounded share
_HISTORY_DETAIL_UNITS = 500
_TEXTS = ("Detail", "Infolog", "History", "Extra", "HistoryUnreadable", "ExtraUnreadable")
_MARGIN = 4096  # bytes kept free for the properties a transaction's merge adds (Timestamp, odata)


class State(StrEnum):
    WAITING = "Waiting"
    FORWARDING = "Forwarding"
    FORWARDED = "Forwarded"
    PROCESSED = "Processed"
    FAILED = "Failed"
    PARKED = "Parked"
    CANCELLED = "Cancelled"
    DUPLICATE = "Duplicate"


FINAL_STATES = frozenset({State.FORWARDED, State.PROCESSED, State.FAILED, State.CANCELLED, State.DUPLICATE})


def payload_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class Unreadable:
    """A stored text that does not parse: which property, why, and the text itself."""

    name: str
    error: str
    raw: str = field(repr=False, default="")


@dataclass(frozen=True)
class LedgerEntry:
    company: str
    message_id: str
    state: State
    flow: str = ""
    reason: str = ""
    detail: str = ""
    attempts: int = 0
    production_order: str = ""
    sequence: int | None = None
    correlation_id: str = ""
    fo_message_type: str = ""
    payload_hash: str = ""
    payload_size: int = 0
    received_at: datetime | None = None
    updated_at: datetime | None = None
    lease_until: datetime | None = None
    infolog: str = ""
    history: tuple[Mapping[str, str], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    etag: str = ""
    #: Stored texts this process could not parse (a row written by an older version, or damaged):
    #: the row is still listed and shown, with these named, and the raw text is kept on every rewrite.
    unreadable: tuple[Unreadable, ...] = ()
    #: How many string properties each stored text occupies now (a shorter rewrite blanks the rest).
    stored_parts: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    #: The ETags the companions of the write that returned this entry got, in their order (the order's
    #: progress row moved with it: the gate keeps it without reading it back).
    companion_etags: tuple[str, ...] = field(default=(), compare=False, repr=False)


class LostRace(Exception):
    """Another worker changed the row first (ETag mismatch or the row already existed)."""


class CompanionConflict(Exception):
    """A row written in the same transaction (not the ledger row) had changed; nothing was written."""


#: An extra operation for the ledger row's transaction: same table, same partition (the company).
Companion = tuple[str, dict[str, Any], dict[str, Any]]


def _history_entry(state: State, reason: str, detail: str, at: datetime, attempt: int) -> dict[str, str]:
    return {
        "at": at.isoformat(timespec="milliseconds"),
        "state": state.value,
        "reason": reason,
        "detail": utf16_prefix(detail, _HISTORY_DETAIL_UNITS),
        "attempt": str(attempt),
    }


def compact_history(history: tuple[Mapping[str, str], ...]) -> tuple[Mapping[str, str], ...]:
    """History within `_HISTORY_LIMIT` entries and `_HISTORY_UNITS`: the first entry and the newest
    are kept, what lies between becomes one "compacted" entry counting them (a long outage of retries
    must not outgrow the row)."""

    def size(entries: tuple[Mapping[str, str], ...]) -> int:
        return utf16_units(json.dumps(list(entries)))

    if len(history) <= _HISTORY_LIMIT and size(history) <= _HISTORY_UNITS:
        return history
    first, rest = history[0], list(history[1:])
    dropped = 0
    if rest and rest[0].get("reason") == "compacted":
        dropped = int(str(rest[0].get("detail", "0")).split(" ", 1)[0] or 0)
        rest = rest[1:]
    while rest:
        marker = {"at": str(rest[0].get("at", "")), "state": "", "reason": "compacted", "detail": f"{dropped} entries"}
        candidate = (first, marker, *rest)
        if len(candidate) <= _HISTORY_LIMIT and size(candidate) <= _HISTORY_UNITS:
            return candidate
        rest = rest[1:]
        dropped += 1
    return (first,)


def _payload_reserve(size: int) -> int:
    """Bytes the payload's properties take in the entity (they stay as written when a merge updates the row)."""
    chunks = max(1, min(_MAX_CHUNKS, -(-size // _CHUNK)))
    names = sum(8 + 2 * len(f"Payload{n}") + 4 for n in range(chunks))
    return names + min(size, _CHUNK * _MAX_CHUNKS) + (8 + 2 * len("PayloadChunks") + 4) + (8 + 2 * len("PayloadTruncated") + 1)


def _surely_fits(entity: Mapping[str, Any], texts: tuple[str, ...], room: int) -> bool:
    """True when the entity with `texts` is within `room` by both measures, from lengths alone: a
    code point is at most 4 bytes as Azure counts (two UTF-16 units) and 12 in the JSON (an escaped
    surrogate pair); a value that is not a string, and a property's own overhead, at most 64 more."""
    points = sum(len(t) for t in texts)
    for name, value in entity.items():
        points += len(name) + (len(value) if isinstance(value, str) else 24)
    return 12 * points + 64 * (len(entity) + len(texts)) < room


def _fit(texts: tuple[str, str], azure_bytes: int, wire_bytes: int) -> tuple[str, str]:
    """The texts whole when both fit, else each cut to a share (the shorter first, its unused share to
    the other), with a note saying how long it was."""
    costs = [(2 * utf16_units(t), json_size(t)) for t in texts]
    if sum(a for a, _ in costs) <= azure_bytes and sum(w for _, w in costs) <= wire_bytes:
        return texts
    fitted = list(texts)
    order = sorted(range(len(texts)), key=lambda i: costs[i][1])
    for left, i in zip(range(len(texts), 0, -1), order, strict=True):
        azure_share, wire_share = max(0, azure_bytes // left), max(0, wire_bytes // left)
        fitted[i] = _cut(texts[i], azure_share // 2, wire_share)
        azure_bytes -= 2 * utf16_units(fitted[i])
        wire_bytes -= json_size(fitted[i])
    return fitted[0], fitted[1]


def _cut(text: str, units: int, wire: int) -> str:
    """The longest prefix of `text` within `units` UTF-16 units and `wire` JSON bytes, and a note."""
    if utf16_units(text) <= units and json_size(text) <= wire:
        return text
    note = f" [... cut: {utf16_units(text)} UTF-16 units did not fit in the ledger row's 1 MiB]"
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits both measures with the note
        middle = (low + high + 1) // 2
        prefix = text[:middle]
        if utf16_units(prefix) + len(note) <= units and json_size(prefix) + len(note) <= wire:
            low = middle
        else:
            high = middle - 1
    return text[:low] + note if units > len(note) and wire > len(note) else ""


def ledger_partition(company: str) -> str:
    """The partition of a company's ledger rows (and of the rows written in their transactions)."""
    return safe_key(company)


def _to_entity(entry: LedgerEntry, payload: bytes | None = None) -> dict[str, Any]:
    """The row as stored. Structured data (Extra, History) is stored whole, in as many string
    properties as it needs; the free texts (Detail, F&O's Infolog) too, unless the row would pass
    Azure's 1 MiB: then they share what is left, each cut with a note saying so."""
    entity: dict[str, Any] = {
        "PartitionKey": ledger_partition(entry.company),
        "RowKey": safe_key(entry.message_id),
        "Company": entry.company,
        "MessageId": entry.message_id,
        "State": entry.state.value,
        "Flow": entry.flow,
        "Reason": entry.reason,
        "Attempts": entry.attempts,
        "ProductionOrder": entry.production_order,
        "CorrelationId": entry.correlation_id,
        "FoMessageType": entry.fo_message_type,
        "PayloadHash": entry.payload_hash,
        "PayloadSize": entry.payload_size,
    }
    if entry.sequence is not None:
        entity["Sequence"] = EntityProperty(entry.sequence, EdmType.INT64)
    for name, value in (("ReceivedAt", entry.received_at), ("UpdatedAt", entry.updated_at), ("LeaseUntil", entry.lease_until)):
        if value is not None:
            entity[name] = value
    parts = entry.stored_parts

    def put(name: str, text: str) -> None:
        put_text(entity, name, text, stored_parts=parts.get(name, 1))

    put("Extra", json.dumps(dict(entry.extra), default=str))
    put("History", json.dumps(list(compact_history(entry.history))))
    for kept in entry.unreadable:
        if kept.raw and kept.name in ("History", "Extra"):  # kept as evidence, beside the fresh value
            put(f"{kept.name}Unreadable", kept.raw)
    # Two measures, both within 1 MiB: the entity as Azure counts it (the payload written at creation
    # stays in it) and the request's JSON as Azurite counts it (non-ASCII escaped: up to 6 bytes a unit).
    stored = max(entry.payload_size, len(payload) if payload is not None else 0)
    payload_wire = 4 * -(-min(len(payload), _CHUNK * _MAX_CHUNKS) // 3) if payload else 0
    texts = (entry.detail, entry.infolog)
    if _surely_fits(entity, texts, ENTITY_BYTES - _MARGIN - 400 - max(_payload_reserve(stored), payload_wire)):
        detail, infolog = texts  # nearly every row: far below both measures, so neither is taken
    else:
        azure_free = ENTITY_BYTES - _MARGIN - _payload_reserve(stored) - entity_size(entity)
        wire_free = ENTITY_BYTES - _MARGIN - wire_size(entity) - payload_wire
        detail, infolog = _fit(texts, azure_free - 400, wire_free - 400)  # 400: the parts' names
    put("Detail", detail)
    put("Infolog", infolog)
    return entity


def _json_text(entity: Mapping[str, Any], name: str, default: Any, kind: type) -> tuple[Any, Unreadable | None]:
    raw = get_text(entity, name)
    if not raw:
        return default, None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return default, Unreadable(name, f"{name} is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})", raw)
    if not isinstance(value, kind):
        return default, Unreadable(name, f"{name} is not a JSON {kind.__name__}", raw)
    return value, None


def _from_entity(entity: Mapping[str, Any]) -> LedgerEntry:
    """A stored row; never raises for what a row holds: what cannot be read is named in `unreadable`."""
    problems: list[Unreadable] = []
    history, problem = _json_text(entity, "History", [], list)
    problems += [problem] if problem else []
    extra, problem = _json_text(entity, "Extra", {}, dict)
    problems += [problem] if problem else []
    for name in ("History", "Extra"):
        kept = get_text(entity, f"{name}Unreadable")
        if kept and not any(p.name == name for p in problems):
            problems.append(Unreadable(name, f"an earlier {name} could not be read; its text is kept", kept))
    try:
        state = State(str(entity.get("State")))
    except ValueError:
        state = State.PARKED  # parked: nothing acts on it but an operator
        problems.append(Unreadable("State", f"State {str(entity.get('State'))[:40]!r} is not a ledger state"))

    def number(name: str) -> int | None:
        value = entity.get(name)
        if isinstance(value, EntityProperty):
            value = value.value
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            problems.append(Unreadable(name, f"{name} {str(value)[:40]!r} is not a number"))
            return None

    def when(name: str) -> datetime | None:
        value = entity.get(name)
        return value if isinstance(value, datetime) else None

    return LedgerEntry(
        company=str(entity.get("Company", "")),
        message_id=str(entity.get("MessageId", "")),
        state=state,
        flow=str(entity.get("Flow", "")),
        reason=str(entity.get("Reason", "")),
        detail=get_text(entity, "Detail"),
        attempts=number("Attempts") or 0,
        production_order=str(entity.get("ProductionOrder", "")),
        sequence=number("Sequence"),
        correlation_id=str(entity.get("CorrelationId", "")),
        fo_message_type=str(entity.get("FoMessageType", "")),
        payload_hash=str(entity.get("PayloadHash", "")),
        payload_size=number("PayloadSize") or 0,
        received_at=when("ReceivedAt"),
        updated_at=when("UpdatedAt"),
        lease_until=when("LeaseUntil"),
        infolog=get_text(entity, "Infolog"),
        history=tuple(h for h in history if isinstance(h, dict)),
        extra=extra,
        etag=str(entity.metadata.get("etag", "")) if hasattr(entity, "metadata") else "",
        unreadable=tuple(problems),
        stored_parts={name: text_parts(entity, name) for name in _TEXTS},
    )


def _payload_properties(payload: bytes) -> dict[str, Any]:
    chunks = [payload[i : i + _CHUNK] for i in range(0, len(payload), _CHUNK)][:_MAX_CHUNKS]
    properties: dict[str, Any] = {f"Payload{n}": chunk for n, chunk in enumerate(chunks)}
    properties["PayloadChunks"] = len(chunks)
    properties["PayloadTruncated"] = len(payload) > _CHUNK * _MAX_CHUNKS
    return properties


class LedgerStore(Protocol):
    """What the pipeline, the wake-up, the business-event handlers and the operations need from the
    ledger: `Ledger` keeps it in Table Storage, `InMemoryLedger` (tests/fakes.py) in memory, and
    tests/integration/test_ledger_contract.py runs the same cases against both."""

    def get(self, company: str, message_id: str) -> LedgerEntry | None: ...

    def payload(self, company: str, message_id: str) -> bytes | None: ...

    def create(
        self, entry: LedgerEntry, payload: bytes | None = None, *, companions: list[Companion] | None = None
    ) -> LedgerEntry:
        """Insert the first row for a message (`LostRace` if it already exists), with its companions in
        the same transaction (`CompanionConflict`, and nothing written, if one of them had changed)."""
        ...

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
        """Move the row if it is still as `entry` was read (`LostRace` if not), with its companions
        in the same transaction (`CompanionConflict`, and nothing written, if one of them had changed)."""
        ...

    def transition_together(
        self, moves: list[tuple[LedgerEntry, State, dict[str, Any]]], companions: list[Companion] | None = None
    ) -> list[LedgerEntry]:
        """Move several rows of one company at once, with `companions`: all or nothing. `LostRace`
        names the first row that changed (its index in `args[1]`); `CompanionConflict` otherwise.
        The first row returned carries the companions' new ETags (`companion_etags`)."""
        ...

    def write(self, companion: Companion) -> None:
        """Write a companion row (an upsert) on its own."""
        ...

    def query(
        self,
        *,
        company: str | None = None,
        state: State | None = None,
        flow: str | None = None,
        production_order: str | None = None,
        updated_since: datetime | None = None,
    ) -> Iterator[LedgerEntry]: ...

    def messages_with_content(self, company: str, content_hash: str) -> list[str]:
        """MES message ids whose F&O content had this hash (`content_index_row`), oldest first."""
        ...

    def waiting_or_parked(self, company: str, order: str) -> list[tuple[LedgerEntry, bytes]]:
        """The order's messages that wait or are parked, each with its payload (what the gate's wake-up
        may put back on its queue), in one query."""
        ...

    def held_rows(self, company: str, order: str) -> list[LedgerEntry]:
        """The order's waiting and parked messages as the held index describes them, in one query:
        state, reason, flow, sequence and the `INDEXED_EXTRA` of each, nothing else (no ETag, no
        payload); enough to choose which of them to read with `read_held`."""
        ...

    def read_held(self, company: str, chosen: list[LedgerEntry]) -> list[tuple[LedgerEntry, bytes]]:
        """The rows of `chosen` (from `held_rows`) as they are now, each with its payload; those no
        longer waiting or parked are left out."""
        ...


class Ledger:
    def __init__(self, table: Table) -> None:
        self._table = table

    def get(self, company: str, message_id: str) -> LedgerEntry | None:
        with storage_call("ledger read"):
            try:
                entity = self._table.get_entity(safe_key(company), safe_key(message_id))
            except ResourceNotFoundError:
                return None
        return _from_entity(entity)

    def payload(self, company: str, message_id: str) -> bytes | None:
        """The original payload as received (truncated past 600 KiB, as `PayloadTruncated` says)."""
        with storage_call("ledger payload read"):
            try:
                entity = self._table.get_entity(safe_key(company), safe_key(message_id))
            except ResourceNotFoundError:
                return None
        return _payload_of(entity)

    def create(
        self, entry: LedgerEntry, payload: bytes | None = None, *, companions: list[Companion] | None = None
    ) -> LedgerEntry:
        """Insert the first row for a message; `LostRace` if it already exists. `companions` are
        written in the same transaction (`CompanionConflict`, and nothing written, if one had changed):
        the claim and the order's progress as the gate decided on it are one operation."""
        now = utcnow()
        entry = replace(
            entry,
            received_at=entry.received_at or now,
            updated_at=now,
            history=compact_history(
                (*entry.history, _history_entry(entry.state, entry.reason, entry.detail, now, entry.attempts))
            ),
        )
        entity = _to_entity(entry, payload)
        if payload is not None:
            entity.update(_payload_properties(payload))
        given = len(companions or ())
        companions = _with_held(None, entry, companions)
        with storage_call("ledger create"):
            try:
                if companions:
                    results = self._table.submit_transaction([("create", entity), *companions])
                    metadata = results[0]
                else:
                    metadata = self._table.create_entity(entity)
            except TableTransactionError as exc:
                if exc.index == 0:
                    raise LostRace(entry.message_id) from None
                raise CompanionConflict(str(exc.message)) from None
            except ResourceExistsError:
                raise LostRace(entry.message_id) from None
        return replace(
            entry,
            etag=str(metadata.get("etag", "")),
            stored_parts=_parts_of(entity),
            companion_etags=_etags(results[1 : 1 + given]) if companions else (),
        )

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
        """Move a row to `state` if nobody changed it since `entry` was read; `LostRace` otherwise.

        `companions` are written atomically with it (one entity-group transaction), e.g. the
        order's progress row: either both change or neither does.
        """
        now = utcnow()
        attempt = int(changes.get("attempts", entry.attempts))
        history = compact_history((*entry.history, _history_entry(state, reason, detail, now, attempt)))
        updated = replace(entry, state=state, reason=reason, detail=detail, updated_at=now, history=history, **changes)
        entity = _to_entity(updated, payload)
        if payload is not None:
            entity.update(_payload_properties(payload))
        guard: dict[str, Any] = {"mode": UpdateMode.MERGE, "etag": entry.etag, "match_condition": MatchConditions.IfNotModified}
        given = len(companions or ())
        companions = _with_held(entry.state, updated, companions)
        with storage_call("ledger update"):
            try:
                if companions:
                    results = self._table.submit_transaction([("update", entity, guard), *companions])
                    metadata = results[0]
                else:
                    metadata = self._table.update_entity(entity, **guard)
            except TableTransactionError as exc:
                if exc.index == 0:
                    raise LostRace(entry.message_id) from None
                raise CompanionConflict(str(exc.message)) from None
            except (ResourceModifiedError, ResourceNotFoundError):
                raise LostRace(entry.message_id) from None
        return replace(
            updated,
            etag=str(metadata.get("etag", "")),
            stored_parts=_parts_of(entity),
            companion_etags=_etags(results[1 : 1 + given]) if companions else (),
        )

    def transition_together(
        self, moves: list[tuple[LedgerEntry, State, dict[str, Any]]], companions: list[Companion] | None = None
    ) -> list[LedgerEntry]:
        """Move several rows of one partition at once (one F&O message carrying several MES messages):
        all of them and `companions`, or none. `LostRace` names the first row that changed since it was
        read (`LostRace.args[1]` is its index in `moves`); `CompanionConflict` when a companion had."""
        now = utcnow()
        updated: list[LedgerEntry] = []
        operations: list[Companion] = []
        entities: list[dict[str, Any]] = []
        for entry, state, changes in moves:
            reason, detail = str(changes.pop("reason", "")), str(changes.pop("detail", ""))
            attempt = int(changes.get("attempts", entry.attempts))
            history = compact_history((*entry.history, _history_entry(state, reason, detail, now, attempt)))
            moved = replace(entry, state=state, reason=reason, detail=detail, updated_at=now, history=history, **changes)
            entity = _to_entity(moved)
            guard: dict[str, Any] = {
                "mode": UpdateMode.MERGE,
                "etag": entry.etag,
                "match_condition": MatchConditions.IfNotModified,
            }
            operations.append(("update", entity, guard))
            entities.append(entity)
            updated.append(moved)
        held = [
            row for (entry, _, _), moved in zip(moves, updated, strict=True) for row in _with_held(entry.state, moved, None) or []
        ]
        with storage_call("ledger update together"):
            try:
                results = self._table.submit_transaction([*operations, *(companions or []), *held])
            except TableTransactionError as exc:
                if exc.index is not None and exc.index < len(moves):
                    raise LostRace(moves[exc.index][0].message_id, exc.index) from None
                raise CompanionConflict(str(exc.message)) from None
        together = [
            replace(moved, etag=str(metadata.get("etag", "")), stored_parts=_parts_of(entity))
            for moved, metadata, entity in zip(updated, results, entities, strict=False)
        ]
        # As `transition` does, the first row tells the companions' new ETags (the order's row, so the
        # gate keeps it as written instead of reading it again).
        given = results[len(moves) : len(moves) + len(companions or ())]
        return [replace(together[0], companion_etags=_etags(given)), *together[1:]] if together and given else together

    def messages_with_content(self, company: str, content_hash: str) -> list[str]:
        """MES message ids whose F&O content had this hash, oldest index row first."""
        low, high = key_range(f"~content~{content_hash}|")
        with storage_call("content index query"):
            rows = self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                parameters={"pk": safe_key(company), "low": low, "high": high},
                select=["MessageId", "Timestamp"],
            )
            found = [(row.metadata.get("timestamp"), str(row["MessageId"])) for row in rows]
        return [message_id for _, message_id in sorted(found, key=lambda pair: str(pair[0]))]

    def waiting_or_parked(self, company: str, order: str) -> list[tuple[LedgerEntry, bytes]]:
        """The order's messages that wait or are parked, each with its payload: the held index's key
        range under the order, then each row it names (the row decides: an index row is written in
        the row's own transaction, so both say the same)."""
        return self.read_held(company, self.held_rows(company, order))

    def held_rows(self, company: str, order: str) -> list[LedgerEntry]:
        low, high = key_range(_held_prefix(order))
        with storage_call("held index query"):
            rows = [
                r
                for r in self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                    parameters={"pk": ledger_partition(company), "low": low, "high": high},
                    select=["MessageId", "ProductionOrder", "Held", *_INDEXED],
                )
                if r.get("Held") is True and r.get("ProductionOrder") == order
            ]
        described: list[LedgerEntry] = []
        for row in rows:
            entry = _from_held_index(company, row)
            if entry is None:  # an index row of an earlier version says only that the row is held
                with storage_call("ledger read"):
                    try:
                        entry = _from_entity(self._table.get_entity(ledger_partition(company), safe_key(str(row["MessageId"]))))
                    except ResourceNotFoundError:
                        continue
            if entry.state in HELD_STATES and entry.production_order == order:
                described.append(entry)
        return described

    def read_held(self, company: str, chosen: list[LedgerEntry]) -> list[tuple[LedgerEntry, bytes]]:
        found: list[tuple[LedgerEntry, bytes]] = []
        for described in chosen:
            with storage_call("ledger read"):
                try:
                    entity = self._table.get_entity(ledger_partition(company), safe_key(described.message_id))
                except ResourceNotFoundError:
                    continue
            entry = _from_entity(entity)
            if entry.state in HELD_STATES and entry.production_order == described.production_order:
                found.append((entry, _payload_of(entity)))
        return found

    def held_without_index(self, company: str | None = None) -> Iterator[LedgerEntry]:
        """Waiting or parked rows (of an earlier version) whose held index row may be missing: a
        partition scan, for `python -m shared.ops.cli upgrade` only."""
        for state in HELD_STATES:
            yield from (e for e in self.query(company=company, state=state) if e.production_order)

    def index_held(self, entry: LedgerEntry) -> None:
        """Write a held row's index row (what `upgrade` does for rows of an earlier version)."""
        self.write(held_index_row(entry))

    def write(self, companion: Companion) -> None:
        """Write a companion row on its own (when its transaction could not be used)."""
        operation, entity, options = companion
        with storage_call("ledger companion write"):
            if operation == "upsert":
                self._table.upsert_entity(entity, **options)
            else:
                raise ValueError(f"only upserts are written alone, not {operation}")

    def query(
        self,
        *,
        company: str | None = None,
        state: State | None = None,
        flow: str | None = None,
        production_order: str | None = None,
        updated_since: datetime | None = None,
    ) -> Iterator[LedgerEntry]:
        """Rows matching every given condition (parameterised: no value can change the query)."""
        clauses: list[str] = []
        parameters: dict[str, Any] = {}
        if updated_since is not None:
            clauses.append("UpdatedAt ge @since")
            parameters["since"] = updated_since
        for name, prop, value in (
            ("pk", "PartitionKey", safe_key(company) if company else None),
            ("state", "State", state.value if state else None),
            ("flow", "Flow", flow),
            ("order", "ProductionOrder", production_order),
        ):
            if value is not None:
                clauses.append(f"{prop} eq @{name}")
                parameters[name] = value
        select = [
            "PartitionKey",
            "RowKey",
            "Company",
            "MessageId",
            "State",
            "Flow",
            "Reason",
            "Attempts",
            "ProductionOrder",
            "Sequence",
            "CorrelationId",
            "FoMessageType",
            "PayloadHash",
            "PayloadSize",
            "ReceivedAt",
            "UpdatedAt",
            "LeaseUntil",
            *(name for text in _TEXTS for name in text_properties(text)),
        ]
        # Progress and index rows share the partition; their keys start with "~". A message's key
        # never does (`safe_key` encodes "~" and U+007F-U+009F), but may start above it ("ö", "😀").
        clauses.append("(RowKey lt @progress or RowKey ge @beyond )")  # the SDK needs the space
        parameters.update(progress="~", beyond="\u00a0")
        with storage_call("ledger query"):
            if clauses:
                rows = self._table.query_entities(" and ".join(clauses), parameters=parameters, select=select)
            else:
                rows = self._table.list_entities(select=select)
            for entity in rows:
                yield _from_entity(entity)


def _payload_of(entity: Mapping[str, Any]) -> bytes:
    return b"".join(bytes(entity.get(f"Payload{n}", b"")) for n in range(int(entity.get("PayloadChunks", 0))))


def _etags(results: Any) -> tuple[str, ...]:
    return tuple(str(metadata.get("etag", "")) for metadata in results)


def _parts_of(entity: Mapping[str, Any]) -> dict[str, int]:
    return {name: text_parts(entity, name) for name in _TEXTS if name in entity}


def lease(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


HELD_STATES = frozenset({State.WAITING, State.PARKED})
_HELD = "~held~"


def _held_prefix(order: str) -> str:
    return _HELD + safe_key(f"{order}|")


#: What of a held row's `extra` its index row repeats: what the gate's wake-up (`Missing`, the number
#: a `gap` row waits for) and the per-order aggregation (`MergeRefused`) choose rows by.
INDEXED_EXTRA = ("Missing", "MergeRefused")
_INDEXED = ["State", "Reason", "Flow", "Sequence", *INDEXED_EXTRA]


def held_index_row(entry: LedgerEntry) -> Companion:
    """The row under the order that says whether this message waits or is parked, written in the
    transaction that moves it: the wake-up reads an order's held messages from one key range instead
    of filtering the company's whole partition (a partition scan: every row of it, 1,000 a page).
    It also says what the row's state, reason, flow, sequence and `INDEXED_EXTRA` are (being written
    with the row, it says what the row says), so that the wake-up and the aggregation read only the
    rows they put back or take along."""
    entity: dict[str, Any] = {
        "PartitionKey": ledger_partition(entry.company),
        # One key for both (`safe_key` keeps it within 1 KiB, the order's part first): the range stays.
        "RowKey": _HELD + safe_key(f"{entry.production_order}|{entry.message_id}"),
        "ProductionOrder": entry.production_order,
        "MessageId": entry.message_id,
        "Held": entry.state in HELD_STATES,
        "State": entry.state.value,
        "Reason": entry.reason,
        "Flow": entry.flow,
    }
    if entry.sequence is not None:
        entity["Sequence"] = EntityProperty(entry.sequence, EdmType.INT64)
    for name in INDEXED_EXTRA:
        value = entry.extra.get(name)
        if value not in (None, ""):
            entity[name] = cut_text(str(value), 200, f"the held index's {name}")
    return ("upsert", entity, {"mode": UpdateMode.REPLACE})


def _from_held_index(company: str, row: Mapping[str, Any]) -> LedgerEntry | None:
    """The held row as its index row describes it; None for an index row without the description."""
    state = row.get("State")
    if not isinstance(state, str) or state not in State._value2member_map_:
        return None
    sequence = row.get("Sequence")
    if isinstance(sequence, EntityProperty):
        sequence = sequence.value
    return LedgerEntry(
        company=company,
        message_id=str(row["MessageId"]),
        state=State(state),
        flow=str(row.get("Flow") or ""),
        reason=str(row.get("Reason") or ""),
        production_order=str(row.get("ProductionOrder") or ""),
        sequence=int(sequence) if isinstance(sequence, int) else None,
        extra={name: row[name] for name in INDEXED_EXTRA if row.get(name) not in (None, "")},
    )


def _with_held(before: State | None, after: LedgerEntry, companions: list[Companion] | None) -> list[Companion] | None:
    """`companions` and, when the row enters, leaves or stays in a held state, its held index row."""
    if not after.production_order or (before not in HELD_STATES and after.state not in HELD_STATES):
        return companions
    return [*(companions or []), held_index_row(after)]


def content_index_row(company: str, content_hash: str, message_id: str, fo_message_type: str) -> Companion:
    """The row that finds a MES message from the `_messageContent` F&O echoes in its processed event."""
    entity = {
        "PartitionKey": safe_key(company),
        "RowKey": f"~content~{content_hash}|{safe_key(message_id)}",
        "MessageId": message_id,
        "ContentHash": content_hash,
        "FoMessageType": fo_message_type,
    }
    return ("upsert", entity, {"mode": UpdateMode.REPLACE})
