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
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient, TableTransactionError, UpdateMode

from shared.tables import safe_key, storage_call

_CHUNK = 60 * 1024  # binary properties hold at most 64 KiB
_MAX_CHUNKS = 14  # an entity holds at most 1 MiB in all
_HISTORY_LIMIT = 40


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


def utcnow() -> datetime:
    return datetime.now(UTC)


def payload_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


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

    @property
    def lease_active(self) -> bool:
        return self.lease_until is not None and self.lease_until > utcnow()


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
        "detail": detail[:500],
        "attempt": str(attempt),
    }


def _to_entity(entry: LedgerEntry) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": safe_key(entry.company),
        "RowKey": safe_key(entry.message_id),
        "Company": entry.company,
        "MessageId": entry.message_id,
        "State": entry.state.value,
        "Flow": entry.flow,
        "Reason": entry.reason,
        "Detail": entry.detail[:30000],
        "Attempts": entry.attempts,
        "ProductionOrder": entry.production_order,
        "CorrelationId": entry.correlation_id,
        "FoMessageType": entry.fo_message_type,
        "PayloadHash": entry.payload_hash,
        "PayloadSize": entry.payload_size,
        "Infolog": entry.infolog[:30000],
        "History": json.dumps(list(entry.history))[:60000],
    }
    if entry.sequence is not None:
        entity["Sequence"] = EntityProperty(entry.sequence, EdmType.INT64)
    for name, value in (("ReceivedAt", entry.received_at), ("UpdatedAt", entry.updated_at), ("LeaseUntil", entry.lease_until)):
        if value is not None:
            entity[name] = value
    entity["Extra"] = json.dumps(dict(entry.extra), default=str)[:30000]
    return entity


def _from_entity(entity: Mapping[str, Any]) -> LedgerEntry:
    sequence = entity.get("Sequence")
    if isinstance(sequence, EntityProperty):
        sequence = int(sequence.value)
    history = tuple(json.loads(entity.get("History") or "[]"))
    return LedgerEntry(
        company=str(entity["Company"]),
        message_id=str(entity["MessageId"]),
        state=State(entity["State"]),
        flow=str(entity.get("Flow", "")),
        reason=str(entity.get("Reason", "")),
        detail=str(entity.get("Detail", "")),
        attempts=int(entity.get("Attempts", 0)),
        production_order=str(entity.get("ProductionOrder", "")),
        sequence=int(sequence) if sequence is not None else None,
        correlation_id=str(entity.get("CorrelationId", "")),
        fo_message_type=str(entity.get("FoMessageType", "")),
        payload_hash=str(entity.get("PayloadHash", "")),
        payload_size=int(entity.get("PayloadSize", 0)),
        received_at=entity.get("ReceivedAt"),
        updated_at=entity.get("UpdatedAt"),
        lease_until=entity.get("LeaseUntil"),
        infolog=str(entity.get("Infolog", "")),
        history=history,
        extra=json.loads(entity.get("Extra") or "{}"),
        etag=str(entity.metadata.get("etag", "")) if hasattr(entity, "metadata") else "",
    )


def _payload_properties(payload: bytes) -> dict[str, Any]:
    chunks = [payload[i : i + _CHUNK] for i in range(0, len(payload), _CHUNK)][:_MAX_CHUNKS]
    properties: dict[str, Any] = {f"Payload{n}": chunk for n, chunk in enumerate(chunks)}
    properties["PayloadChunks"] = len(chunks)
    properties["PayloadTruncated"] = len(payload) > _CHUNK * _MAX_CHUNKS
    return properties


class Ledger:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, company: str, message_id: str) -> LedgerEntry | None:
        with storage_call("ledger read"):
            try:
                entity = self._table.get_entity(safe_key(company), safe_key(message_id))
            except ResourceNotFoundError:
                return None
        return _from_entity(entity)

    def payload(self, company: str, message_id: str) -> bytes | None:
        """The original payload as received (truncated past about 840 KiB, as `PayloadTruncated` says)."""
        with storage_call("ledger payload read"):
            try:
                entity = self._table.get_entity(safe_key(company), safe_key(message_id))
            except ResourceNotFoundError:
                return None
        return b"".join(bytes(entity.get(f"Payload{n}", b"")) for n in range(int(entity.get("PayloadChunks", 0))))

    def create(self, entry: LedgerEntry, payload: bytes | None = None) -> LedgerEntry:
        """Insert the first row for a message; `LostRace` if it already exists."""
        now = utcnow()
        entry = replace(
            entry,
            received_at=entry.received_at or now,
            updated_at=now,
            history=(*entry.history, _history_entry(entry.state, entry.reason, entry.detail, now, entry.attempts)),
        )
        entity = _to_entity(entry)
        if payload is not None:
            entity.update(_payload_properties(payload))
        with storage_call("ledger create"):
            try:
                metadata = self._table.create_entity(entity)
            except ResourceExistsError:
                raise LostRace(entry.message_id) from None
        return replace(entry, etag=str(metadata.get("etag", "")))

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
        history = (*entry.history, _history_entry(state, reason, detail, now, attempt))[-_HISTORY_LIMIT:]
        updated = replace(entry, state=state, reason=reason, detail=detail, updated_at=now, history=history, **changes)
        entity = _to_entity(updated)
        if payload is not None:
            entity.update(_payload_properties(payload))
        guard: dict[str, Any] = {"mode": UpdateMode.MERGE, "etag": entry.etag, "match_condition": MatchConditions.IfNotModified}
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
        return replace(updated, etag=str(metadata.get("etag", "")))

    @property
    def table(self) -> TableClient:
        return self._table

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
            "Detail",
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
            "Infolog",
            "History",
            "Extra",
        ]
        clauses.append("RowKey lt @progress")
        parameters["progress"] = "~"  # progress rows share the partition; their keys start with "~"
        with storage_call("ledger query"):
            if clauses:
                rows = self._table.query_entities(" and ".join(clauses), parameters=parameters, select=select)
            else:
                rows = self._table.list_entities(select=select)
            for entity in rows:
                yield _from_entity(entity)


def lease(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


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


def messages_with_content(ledger: Ledger, company: str, content_hash: str) -> list[str]:
    """MES message ids whose F&O content had this hash, oldest index row first."""
    low, high = f"~content~{content_hash}|", f"~content~{content_hash}}}"
    with storage_call("content index query"):
        rows = ledger.table.query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": safe_key(company), "low": low, "high": high},
            select=["MessageId", "Timestamp"],
        )
        found = [(row.metadata.get("timestamp"), str(row["MessageId"])) for row in rows]
    return [message_id for _, message_id in sorted(found, key=lambda pair: str(pair[0]))]
