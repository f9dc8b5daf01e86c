"""Each production order's progress through the order gate (watermark, start, end, the wait it is in),
one ETag-guarded row per order in the ledger's table and partition, so that "forwarded" and "the
watermark moved" are one entity-group transaction (the ledger row's companion).

`shared/inbound/order_gate.py` decides; this module only reads and writes the rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, UpdateMode

from shared.store.ledger import Companion
from shared.store.table_rest import Table
from shared.store.tables import safe_key, storage_call


@dataclass(frozen=True)
class Progress:
    company: str
    order: str
    watermark: int = 0
    started: bool = False
    ended: bool = False
    waiting_for: int | None = None
    waiting_since: datetime | None = None
    skipped: tuple[dict[str, Any], ...] = ()
    #: Something of the order is parked by the gate (a gap, no start): a forward wakes it (shared/inbound/wakeup.py).
    held: bool = False
    #: The highest sequence number a message of the order waits with: a forward that moves the watermark
    #: below it wakes the next one (the wait of the first waiter alone is `waiting_for`).
    behind: int = 0
    etag: str = ""


class ProgressChanged(Exception):
    """Another worker wrote the order's progress row since it was read (or created it first)."""


def progress_key(order: str) -> str:
    # `safe_key` encodes "~", so no message id can produce a key that starts with one: progress
    # rows share the ledger's partition (the company) without colliding with message rows.
    return "~order~" + safe_key(order)


def _int(value: Any) -> int:
    return int(value.value if isinstance(value, EntityProperty) else value)


def progress_entity(progress: Progress) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": safe_key(progress.company),
        "RowKey": progress_key(progress.order),
        "Company": progress.company,
        "ProductionOrder": progress.order,
        "Watermark": EntityProperty(progress.watermark, EdmType.INT64),
        "Started": progress.started,
        "Ended": progress.ended,
        "WaitingFor": EntityProperty(progress.waiting_for, EdmType.INT64) if progress.waiting_for is not None else None,
        "WaitingSince": progress.waiting_since,
        "Skipped": json.dumps(list(progress.skipped)),
        "Held": progress.held,
        "Behind": EntityProperty(progress.behind, EdmType.INT64),
    }
    return {k: v for k, v in entity.items() if v is not None}


def progress_from_entity(company: str, order: str, row: Any, etag: str) -> Progress:
    waiting_for = row.get("WaitingFor")
    return Progress(
        company=company,
        order=order,
        watermark=_int(row.get("Watermark", 0)),
        started=bool(row.get("Started", False)),
        ended=bool(row.get("Ended", False)),
        waiting_for=_int(waiting_for) if waiting_for is not None else None,
        waiting_since=row.get("WaitingSince"),
        skipped=tuple(json.loads(row.get("Skipped") or "[]")),
        held=bool(row.get("Held", False)),
        behind=_int(row.get("Behind", 0)),
        etag=etag,
    )


def planned_write(progress: Progress, wanted: Progress) -> Companion:
    """`wanted` as an operation for the ledger row's transaction, guarded by `progress` as read."""
    if not progress.etag:
        return ("create", progress_entity(wanted), {})
    return (
        "update",
        progress_entity(wanted),
        {"mode": UpdateMode.REPLACE, "etag": progress.etag, "match_condition": MatchConditions.IfNotModified},
    )


class TableProgressStore:
    """Progress rows in Table Storage (the ledger's table)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def read(self, company: str, order: str) -> Progress:
        with storage_call("order progress read"):
            try:
                row = self._table.get_entity(safe_key(company), progress_key(order))
            except ResourceNotFoundError:
                return Progress(company, order)
        return progress_from_entity(company, order, row, str(row.metadata.get("etag", "")))

    def write(self, progress: Progress) -> Progress:
        """Store `progress` if nobody changed the row since it was read; `ProgressChanged` if somebody did."""
        entity = progress_entity(progress)
        with storage_call("order progress write"):
            try:
                if not progress.etag:
                    metadata = self._table.create_entity(entity)
                else:
                    metadata = self._table.update_entity(
                        entity, mode=UpdateMode.REPLACE, etag=progress.etag, match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                raise ProgressChanged(progress.order) from None
        return replace(progress, etag=str(metadata.get("etag", "")))

    def planned_write(self, progress: Progress, wanted: Progress) -> Companion:
        return planned_write(progress, wanted)
