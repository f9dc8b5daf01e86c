"""State for F&O business events: per production order and event kind, the last ControlNumber whose
effect reached MES (unordered delivery), and the EventId that brought it (at-least-once delivery).

Written only after the effect (the OData read and the MES publish) succeeded: a failure leaves the
guard where it was, so Event Grid's retry does the work again, and the deterministic MessageId of
what it publishes lets the MES topic's duplicate detection drop a second copy. One guard per kind:
a status change delivered before the release must not make the release stale.

A redelivered EventId needs no row of its own: the guard it moved names it, so its redelivery is
told apart from an older event (`Applied.event_id`) by the same read that orders them. The
message-processed events leave theirs on the ledger row they settle (shared/outbound/handlers.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, UpdateMode

from shared.clock import utcnow
from shared.store.optimistic import update_optimistically
from shared.store.table_rest import Table
from shared.store.tables import cut_text, safe_key, storage_call

#: F&O's status name as the order's event row keeps it, in UTF-16 code units.
STATUS_UNITS = 1000
#: A business event's EventId (a GUID) as the guard keeps it; bounded, whatever an event says.
EVENT_ID_UNITS = 200


@dataclass(frozen=True)
class Applied:
    """What the guard of one order and kind says: the ControlNumber and status last applied, the
    EventId that applied it (upper-cased: F&O's EventIds are GUIDs), and the row's version, which the
    next `apply_control_number` checks so that it needs no read of its own."""

    control_number: int
    status: str
    event_id: str = ""
    etag: str = field(default="", compare=False, repr=False)

    def brought_by(self, event_id: str) -> bool:
        return bool(self.event_id) and self.event_id == _event_key(event_id)


class EventStore(Protocol):
    """What the business-event handlers need from the event log; `EventLog` keeps it in Table
    Storage, tests/fakes.py in memory, and tests/integration/test_event_log_contract.py runs the same
    cases against both."""

    def applied(self, kind: str, company: str, order: str) -> Applied | None: ...

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
    ) -> bool: ...

    def applied_status(self, company: str, order: str) -> Applied | None: ...


class EventLog:
    def __init__(self, table: Table) -> None:
        self._table = table

    def applied(self, kind: str, company: str, order: str) -> Applied | None:
        """The ControlNumber (and status, and EventId) last applied for this kind of event of the order."""
        with storage_call("control number read"):
            try:
                row = self._table.get_entity(*_guard_key(kind, company, order))
            except ResourceNotFoundError:
                return None
        value = row["ControlNumber"]
        return Applied(
            control_number=int(value.value if isinstance(value, EntityProperty) else value),
            status=str(row.get("Status", "")),
            event_id=str(row.get("EventId", "")),
            etag=str(row.metadata.get("etag", "")),
        )

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
        """Move the order's applied ControlNumber for `kind` up; False when a newer event was applied already.

        `since` is the guard as the caller read it (None: there was none): the write is conditional
        on it (created if absent, replaced if its ETag still matches), so the usual case is one
        operation. Should another event have moved the guard meanwhile, it is read again and compared.
        """
        partition, row = _guard_key(kind, company, order)
        stale = False

        def change(current: Applied | None) -> Applied | None:
            nonlocal stale
            stale = current is not None and control_number <= current.control_number
            if stale:
                return current
            # Carries the ETag it replaces: the write is conditional on the guard as read.
            return Applied(control_number, status, _event_key(event_id), etag=current.etag if current is not None else "")

        def write(wanted: Applied | None) -> Applied | None:
            assert wanted is not None  # `change` gives None only for an absent guard it leaves alone
            entity = {
                "PartitionKey": partition,
                "RowKey": row,
                "ControlNumber": EntityProperty(control_number, EdmType.INT64),
                # F&O's status name; bounded, since a property holds 64 KiB whatever an event says.
                "Status": cut_text(status, STATUS_UNITS, "the order's event row"),
                "EventId": wanted.event_id,
                "AppliedAt": utcnow(),
            }
            try:
                with storage_call("control number write"):
                    if not wanted.etag:
                        self._table.create_entity(entity)
                    else:
                        self._table.update_entity(
                            entity, mode=UpdateMode.REPLACE, etag=wanted.etag, match_condition=MatchConditions.IfNotModified
                        )
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                raise ResourceModifiedError("moved (or created, or removed) since it was read") from None
            return wanted

        update_optimistically(
            lambda: self.applied(kind, company, order),
            change,
            write,
            conflict=ResourceModifiedError,
            what=f"control number of {order}",
            start=since,
        )
        return not stale

    def applied_status(self, company: str, order: str) -> Applied | None:
        return self.applied(STATUS, company, order)


#: The guards' kinds: a release and a status change of the same order never make each other stale.
RELEASE, STATUS = "release", "order"


def _event_key(event_id: str) -> str:
    return cut_text(event_id.upper(), EVENT_ID_UNITS, "the order's event row")


def _guard_key(kind: str, company: str, order: str) -> tuple[str, str]:
    """One partition per order: no partition carries a whole company's business events (Table
    Storage serves about 2,000 entities/s per partition), and an order's two guards sit together."""
    return safe_key(f"{company.upper()}|{order}"), kind
