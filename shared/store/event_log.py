"""State for F&O business events: which EventIds each consumer handled (at-least-once delivery),
and, per production order and event kind, the last ControlNumber whose effect reached MES
(unordered delivery).

Both are written only after the effect (the OData read and the MES publish) succeeded: a failure
leaves them where they were, so Event Grid's retry does the work again, and the deterministic
MessageId of what it publishes lets the MES topic's duplicate detection drop a second copy.
One guard per kind: a status change delivered before the release must not make the release stale.
"""

from __future__ import annotations

from typing import Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode

from shared.clock import utcnow
from shared.store.tables import cut_text, safe_key, storage_call

#: F&O's status name as the order's event row keeps it, in UTF-16 code units.
STATUS_UNITS = 1000


class EventStore(Protocol):
    """What the business-event handlers need from the event log; `EventLog` keeps it in Table
    Storage, tests/fakes.py in memory, and tests/integration/test_event_log_contract.py runs the same
    cases against both."""

    def seen(self, consumer: str, event_id: str) -> bool: ...

    def remember(self, consumer: str, event_id: str, business_event_id: str, outcome: str) -> None: ...

    def applied(self, kind: str, company: str, order: str) -> tuple[int, str] | None: ...

    def apply_control_number(self, kind: str, company: str, order: str, control_number: int, status: str) -> bool: ...

    def applied_status(self, company: str, order: str) -> tuple[int, str] | None: ...


class EventLog:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def seen(self, consumer: str, event_id: str) -> bool:
        with storage_call("event log read"):
            try:
                self._table.get_entity(safe_key(f"handled|{consumer}"), safe_key(event_id.upper()))
            except ResourceNotFoundError:
                return False
        return True

    def remember(self, consumer: str, event_id: str, business_event_id: str, outcome: str) -> None:
        entity = {
            "PartitionKey": safe_key(f"handled|{consumer}"),
            "RowKey": safe_key(event_id.upper()),
            "BusinessEventId": business_event_id,
            "Outcome": outcome,
            "HandledAt": utcnow(),
        }
        with storage_call("event log write"):
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def applied(self, kind: str, company: str, order: str) -> tuple[int, str] | None:
        """The ControlNumber (and status) last applied for this kind of event of the order."""
        with storage_call("control number read"):
            try:
                row = self._table.get_entity(*_guard_key(kind, company, order))
            except ResourceNotFoundError:
                return None
        value = row["ControlNumber"]
        return int(value.value if isinstance(value, EntityProperty) else value), str(row.get("Status", ""))

    def apply_control_number(self, kind: str, company: str, order: str, control_number: int, status: str) -> bool:
        """Move the order's applied ControlNumber for `kind` up; False when a newer event was applied already."""
        partition, row = _guard_key(kind, company, order)
        for _ in range(20):
            with storage_call("control number read"):
                try:
                    current = self._table.get_entity(partition, row)
                except ResourceNotFoundError:
                    current = None
            applied = current.get("ControlNumber") if current else None
            applied_value = (
                int(applied.value if isinstance(applied, EntityProperty) else applied) if applied is not None else None
            )
            if applied_value is not None and control_number <= applied_value:
                return False
            entity = {
                "PartitionKey": partition,
                "RowKey": row,
                "ControlNumber": EntityProperty(control_number, EdmType.INT64),
                # F&O's status name; bounded, since a property holds 64 KiB whatever an event says.
                "Status": cut_text(status, STATUS_UNITS, "the order's event row"),
                "AppliedAt": utcnow(),
            }
            with storage_call("control number write"):
                try:
                    if current is None:
                        self._table.create_entity(entity)
                    else:
                        self._table.update_entity(
                            entity,
                            mode=UpdateMode.REPLACE,
                            etag=current.metadata["etag"],
                            match_condition=MatchConditions.IfNotModified,
                        )
                    return True
                except (ResourceExistsError, ResourceModifiedError):
                    continue
        raise ResourceModifiedError(f"control number of {order} kept changing")

    def applied_status(self, company: str, order: str) -> tuple[int, str] | None:
        return self.applied(STATUS, company, order)


#: The guards' kinds: a release and a status change of the same order never make each other stale.
RELEASE, STATUS = "release", "order"


def _guard_key(kind: str, company: str, order: str) -> tuple[str, str]:
    # The status guard keeps its historic partition ("order|"), so a deployed table keeps its state.
    return safe_key(f"{kind}|{company.upper()}"), safe_key(order)
