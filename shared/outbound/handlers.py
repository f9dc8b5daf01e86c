"""F&O -> MES: what the bridge does with each business event.

One path for every Event Grid function: parse (string or object `data`), ignore the activation
test event and events of other kinds with a log line, run the handler. A handler that raises makes
Event Grid retry.

Effect first, then record: a handler reads F&O and publishes to MES before any state moves (the
order's ControlNumber guard, the ledger row), so a failure anywhere is retried in full. Every
message to MES has a MessageId derived from what it is about (kind, company, order, ControlNumber
or MES message id and outcome): the retry of a publish that did reach the topic is dropped by the
topic's duplicate detection (infra/resources.bicep, devtools/local_host/broker.py).

A redelivered EventId is recognised by the row its first delivery wrote, which the handler reads
anyway: the order's guard names the EventId that moved it, a settled ledger row the EventIds that
settled it. So a status change or a release costs two Table operations (the guard's read, then
its write conditional on that read's ETag) and a processed message three (the content index, the
ledger row, its settling write); a redelivery costs the reads only.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from shared.errors import Transient
from shared.fo.production_order import read_released_order
from shared.inbound import aggregate
from shared.inbound.settlement import catch_up
from shared.outbound.envelope import (
    MESSAGE_PROCESSED,
    ORDER_RELEASED,
    ORDER_STATUS_CHANGED,
    BusinessEvent,
    NotABusinessEvent,
    parse,
)
from shared.outbound.mes_publisher import envelope
from shared.outbound.messages import BomLine, MessageOutcome, OrderStatusChanged, RouteOperation, WorkOrder
from shared.reasons import ParkReason
from shared.runtime import Ports
from shared.store.event_log import RELEASE, STATUS, Applied
from shared.store.ledger import LedgerEntry, LostRace, State
from shared.store.tables import cut_text

#: F&O's infolog in a MES message: 32K UTF-16 units (at most 128 KB of UTF-8).
MES_INFOLOG_UNITS = 32 * 1024

#: How long a processed message may go unmatched before the bridge decides it was not its own.
MATCH_GRACE = timedelta(minutes=10)

#: How many settling EventIds a ledger row keeps (Failed, Processed, and a margin for re-processing).
SETTLING_EVENTS = 10

#: The release guard's status when the release was parked rather than published.
PARKED_RELEASE = "Parked"


class Handling(StrEnum):
    """What became of one F&O business event (logged with it as its outcome)."""

    PUBLISHED = "published"  # told MES
    IGNORED = "ignored"  # not for the bridge, or not final yet
    DUPLICATE = "duplicate"  # this event, or its content, was handled before
    STALE = "stale"  # an older release of an order MES has already
    SUPERSEDED = "superseded"  # an older status than the one MES has
    MATCHED = "matched"  # settled the MES message F&O processed
    PARKED = "parked"  # kept in the ledger for an operator


@dataclass(frozen=True)
class Handled:
    outcome: Handling
    detail: str = ""


def mes_message_id(kind: str, company: str, subject: str, version: str | int) -> str:
    """The MessageId of one message to MES: the same F&O fact always gets the same id."""
    return f"{kind}|{company.upper()}|{subject}|{version}"[:128]


Handler = Callable[[BusinessEvent, Ports], Handled]


def _company(event: BusinessEvent, ports: Ports) -> str:
    return (event.text("CompanyId") or event.legal_entity or ports.settings.fo_default_company).upper()


def order_released(event: BusinessEvent, ports: Ports) -> Handled:
    """Re-read the released order over OData and publish one work order to MES."""
    company, order = _company(event, ports), event.text("ProductionOrderNumber")
    if not order:
        return Handled(Handling.IGNORED, "the event names no production order")
    applied = ports.events.applied(RELEASE, company, order)
    if applied is not None and event.control_number <= applied.control_number:
        done = "parked" if applied.status == PARKED_RELEASE else "published"
        if applied.brought_by(event.event_id):
            return Handled(Handling.DUPLICATE, f"this EventId's work order was {done} before")
        return Handled(Handling.STALE, f"a release with ControlNumber {applied.control_number} was {done} for this order already")
    read = read_released_order(ports.fo, company, order)
    header = read.header
    try:
        work_order = WorkOrder(
            company=company,
            production_order=header["ProductionOrderNumber"],
            fo_event_id=event.event_id,
            fo_control_number=event.control_number,
            occurred_at=event.event_time,
            item_number=header["ItemNumber"],
            quantity=header.get("ScheduledQuantity"),
            unit=read.unit,
            site=header.get("ProductionSiteId"),
            warehouse=header.get("ProductionWarehouseId"),
            scheduled_start=header.get("ScheduledStartDate"),
            scheduled_end=header.get("ScheduledEndDate"),
            status=str(header.get("ProductionOrderStatus") or "Released"),
            bom=[
                BomLine(
                    line_number=r.get("LineNumber"),
                    item_number=r.get("ItemNumber"),
                    quantity=r.get("BOMLineQuantity"),
                    unit=r.get("BOMLineUnitSymbol"),
                    warehouse=r.get("ConsumptionWarehouseId") or None,
                    operation_number=r.get("RouteOperationNumber") or None,
                    flushing_principle=r.get("FlushingPrinciple") or None,
                )
                for r in read.bom
            ],
            route=[
                RouteOperation(
                    operation_number=r.get("OperationNumber"),
                    priority=str(r.get("OperationPriority") or "Primary"),
                    operation_id=str(r.get("OperationId") or ""),
                    resource=r.get("CostingOperationResourceId") or None,
                    setup_hours=r.get("SetupTime"),
                    process_hours=r.get("ProcessTime"),
                )
                for r in read.route
            ],
        )
    except ValidationError as exc:
        return _park_work_order(event, ports, company, order, exc, applied)
    message_id = mes_message_id("work-order", company, order, event.control_number)
    ports.publisher.publish(envelope(work_order, message_id, correlation_id=event.event_id))
    ports.events.apply_control_number(
        RELEASE, company, order, event.control_number, "Released", event_id=event.event_id, since=applied
    )
    return Handled(Handling.PUBLISHED, f"work order {order}: {len(read.bom)} BOM lines, {len(read.route)} operations")


def _park_work_order(
    event: BusinessEvent, ports: Ports, company: str, order: str, exc: ValidationError, applied: Applied | None
) -> Handled:
    """A work order MES could not act on (no quantity, no unit, a line without its item) is not
    published: a Parked ledger row keeps it, with what is missing, for an operator to see. The
    release guard moves too (after the row), so a redelivery or an older release costs no OData read;
    a newer release, once the planner has fixed the order, is read and published."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
    detail = f"F&O's production order {order} does not give a valid work order: {problems}"
    entry = LedgerEntry(
        company=company,
        message_id=mes_message_id("work-order", company, order, event.control_number),
        state=State.PARKED,
        flow="order_released",
        reason=ParkReason.INVALID_WORK_ORDER,
        detail=detail,
        production_order=order,
        correlation_id=event.event_id,
        extra={"FoEventId": event.event_id, "FoControlNumber": event.control_number},
    )
    with contextlib.suppress(LostRace):  # parked by an earlier delivery of the same release
        ports.ledger.create(entry)
    ports.events.apply_control_number(
        RELEASE, company, order, event.control_number, PARKED_RELEASE, event_id=event.event_id, since=applied
    )
    return Handled(Handling.PARKED, detail)


def order_status_changed(event: BusinessEvent, ports: Ports) -> Handled:
    company, order = _company(event, ports), event.text("ProductionOrderNumber")
    status = event.text("ProductionOrderStatus")
    if not order or not status:
        return Handled(Handling.IGNORED, "the event names no production order or status")
    applied = ports.events.applied(STATUS, company, order)
    if applied is not None and event.control_number <= applied.control_number:
        if applied.brought_by(event.event_id):
            return Handled(Handling.DUPLICATE, "this EventId's status was published before")
        return _superseded(event, status, applied)
    message = OrderStatusChanged(
        company=company,
        production_order=order,
        status=status,
        previous_status=event.text("PreviousProductionOrderStatus") or None,
        fo_event_id=event.event_id,
        fo_control_number=event.control_number,
        occurred_at=event.event_time,
    )
    message_id = mes_message_id("status", company, order, event.control_number)
    ports.publisher.publish(envelope(message, message_id, correlation_id=event.event_id))
    if not ports.events.apply_control_number(
        STATUS, company, order, event.control_number, status, event_id=event.event_id, since=applied
    ):
        # A newer status was applied while this one was being published: MES has both, and
        # `fo_control_number` tells it which is current.
        newer = ports.events.applied(STATUS, company, order)
        return Handled(
            Handling.PUBLISHED,
            f"{order} is {status}; a newer status ({newer.status if newer else '?'}) was published meanwhile",
        )
    return Handled(Handling.PUBLISHED, f"{order} is {status}")


def _superseded(event: BusinessEvent, status: str, applied: Applied) -> Handled:
    return Handled(
        Handling.SUPERSEDED,
        f"status {status} (ControlNumber {event.control_number}) is older than {applied.status} "
        f"(ControlNumber {applied.control_number}), which MES has already",
    )


def message_processed(event: BusinessEvent, ports: Ports) -> Handled:
    """Close the loop: find the MES message F&O processed, mark it Processed or Failed, tell MES."""
    company = _company(event, ports)
    content = event.text("MessageContent")
    state = event.text("MessageState")
    if state not in ("Processed", "Failed"):
        return Handled(Handling.IGNORED, f"message state {state or 'missing'} is not final")
    digest = hashlib.sha256(content.encode()).hexdigest()
    candidates = [
        e for e in (ports.ledger.get(company, m) for m in ports.ledger.messages_with_content(company, digest)) if e is not None
    ]
    # Two MES messages may have the same content: the redelivery of the event that settled the first
    # must not settle the second, so the EventId is looked for on the rows before any is chosen.
    settled_by_it = [e for e in candidates if event.event_id.upper() in settling_events(e)]
    open_entries = [
        e
        for e in candidates
        if e.state in (State.FORWARDED, State.FORWARDING) or (e.state is State.PARKED and e.reason == ParkReason.IN_DOUBT)
    ]
    if not open_entries and state == "Processed":
        # F&O's message processor lets an operator re-process a Failed message (Failed -> Queued
        # -> Processed): the later state wins, and MES hears that the rejection is withdrawn.
        open_entries = [e for e in candidates if e.state is State.FAILED]
    if settled_by_it:
        # One F&O message may carry several MES messages (shared/inbound/aggregate.py): a redelivery
        # of its event finishes the ones a stopped worker left open, and settles nothing else.
        head = aggregate.head_of(settled_by_it[0])
        rest = [e for e in open_entries if aggregate.head_of(e) == head and e not in settled_by_it]
        if not rest:
            return Handled(Handling.DUPLICATE, f"this EventId settled {settled_by_it[0].message_id} already")
        finished = [_settle(member, event, state, ports, company) for member in rest]
        return Handled(Handling.MATCHED, "; ".join(h.detail for h in finished))
    if not open_entries:
        if candidates:
            return Handled(Handling.DUPLICATE, "every MES message with this content was settled already")
        age = datetime.now(UTC) - (event.event_time or datetime.now(UTC))
        if age > MATCH_GRACE:
            return Handled(Handling.IGNORED, "no MES message sent by the bridge has this content")
        raise Transient("no ledger row matches the processed message yet; Event Grid will retry")
    entry = open_entries[0]
    # One F&O message may carry several MES messages (shared/inbound/aggregate.py): its event settles
    # every one of them, each with its own outcome to MES. A retry finds the ones left open.
    group = [e for e in open_entries if aggregate.head_of(e) == aggregate.head_of(entry)]
    settled = [_settle(member, event, state, ports, company) for member in group]
    return settled[0] if len(settled) == 1 else Handled(Handling.MATCHED, "; ".join(h.detail for h in settled))


def _settle(entry: LedgerEntry, event: BusinessEvent, state: str, ports: Ports, company: str) -> Handled:
    infolog = event.text("MessageInfolog")
    new_state = State.PROCESSED if state == "Processed" else State.FAILED
    reprocessed = entry.state is State.FAILED
    detail = f"F&O message processor: {state}" + (
        " (this settles the doubt: it had been applied)"
        if entry.state is State.PARKED
        else " (re-processed after it had failed; the rejection sent to MES is withdrawn)"
        if reprocessed
        else ""
    )
    if entry.state not in (State.FORWARDED, State.FAILED):
        # The bridge lost track of this send (in doubt): F&O has it, so do what the forward would
        # have recorded. Idempotent, and before the row moves, so a retry of this event repeats it.
        catch_up(ports.ledger, ports.gate, ports.lineage, ports.requeue, entry, f"F&O processed {entry.message_id}")
    outcome = MessageOutcome(
        company=company,
        production_order=entry.production_order or None,
        fo_event_id=event.event_id,
        fo_control_number=event.control_number,
        occurred_at=event.event_time,
        mes_message_id=entry.message_id,
        outcome="accepted" if new_state is State.PROCESSED else "rejected",
        supersedes="rejected" if reprocessed else None,
        fo_message_type=event.text("MessageType") or entry.fo_message_type,
        # The ledger keeps it whole; a MES message stays well inside Service Bus's 256 KB.
        infolog=cut_text(infolog, MES_INFOLOG_UNITS, "the MES message (the ledger row holds it whole)"),
        correlation_id=entry.correlation_id or None,
    )
    # Publish before the row moves: should the publish fail, the row is still open and Event
    # Grid's retry finds it; should the worker stop after it, the retry's copy has the same id.
    message_id = mes_message_id("outcome", company, entry.message_id, outcome.outcome)
    ports.publisher.publish(envelope(outcome, message_id, correlation_id=entry.correlation_id or None))
    try:
        ports.ledger.transition(
            entry,
            new_state,
            reason="" if new_state is State.PROCESSED else ParkReason.FO_FAILED,
            detail=detail,
            infolog=infolog,
            extra={
                **entry.extra,
                "FoEventId": event.event_id,
                # Every event that settled the row (Failed, then Processed after a re-process), so
                # that each one's redelivery is recognised; bounded, as a row settles a few times.
                "FoEventIds": [*settling_events(entry), event.event_id.upper()][-SETTLING_EVENTS:],
                "FoMessagePage": event.text("MessageProcessorMessagePageUrl"),
            },
        )
    except LostRace:
        raise Transient("the ledger row changed while settling it; Event Grid will retry") from None
    return Handled(Handling.MATCHED, f"{entry.message_id} {new_state.value}")


def settling_events(entry: LedgerEntry) -> list[str]:
    """The EventIds (upper-cased) of the processed events that settled this ledger row."""
    ids = entry.extra.get("FoEventIds")
    kept = [str(i) for i in ids] if isinstance(ids, list) else []
    first = entry.extra.get("FoEventId")  # a row settled before FoEventIds was kept
    if first and str(first).upper() not in kept:
        kept.insert(0, str(first).upper())
    return kept


HANDLERS: dict[str, tuple[str, Handler]] = {
    "order_released": (ORDER_RELEASED, order_released),
    "order_status_changed": (ORDER_STATUS_CHANGED, order_status_changed),
    "message_processed": (MESSAGE_PROCESSED, message_processed),
}


def receive(consumer: str, event_grid_id: str, data: Any, ports: Ports) -> Handled:
    business_event_id, handler = HANDLERS[consumer]
    log_extra = {"flow": consumer, "event_grid_id": event_grid_id}
    try:
        event = parse(data)
    except NotABusinessEvent as exc:
        ports.log.info(
            "%s ignored Event Grid event %s: %s", consumer, event_grid_id, exc, extra={**log_extra, "outcome": "ignored"}
        )
        return Handled(Handling.IGNORED, str(exc))
    log_extra.update(
        {
            "fo_event_id": event.event_id,
            "business_event_id": event.business_event_id,
            "control_number": str(event.control_number),
            "production_order": event.text("ProductionOrderNumber"),
        }
    )
    if event.business_event_id != business_event_id:
        ports.log.info(
            "%s ignored business event %s (%s)",
            consumer,
            event.event_id,
            event.business_event_id,
            extra={**log_extra, "outcome": "ignored"},
        )
        return Handled(Handling.IGNORED, f"{event.business_event_id} is not {business_event_id}")
    handled = handler(event, ports)
    ports.log.info(
        "%s event %s %s: %s",
        consumer,
        event.event_id,
        handled.outcome,
        handled.detail,
        extra={**log_extra, "outcome": handled.outcome},
    )
    return handled
