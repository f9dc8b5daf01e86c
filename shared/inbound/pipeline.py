"""The one inbound pipeline: every MES -> F&O flow hands its Service Bus message to `process`.

    decode + validate   bad input is parked with a reason and the original payload
    order gate          early messages wait (rescheduled, delivery count untouched)
    claim in ledger     a message id seen before is a duplicate: no second call to F&O
    send to F&O         token, throttle, retry and timeouts live in the F&O client
    lineage, Forwarded  genealogy edges, then the row, the watermark and the content index at once

Failures are sorted by class, here and nowhere else: invalid input and F&O business rejections
are parked; transient faults are retried later with a growing delay, then parked when the retry
window closes; a send that may have been applied (no answer) is parked as in doubt unless F&O
makes a repeat harmless, and F&O's processed event settles it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, timedelta
from enum import StrEnum
from typing import Any

from shared.clock import utcnow
from shared.errors import AuthError, BridgeError, BusinessRejection, ConfigError, InvalidMessage, NotFound, Transient
from shared.fo.client import InDoubt
from shared.inbound import in_doubt
from shared.inbound.decode import _Identity, _identity, _ParkedAs, _refuse, decode
from shared.inbound.dispatch import execute, indexed
from shared.inbound.mapping import FoCall, MappingOptions
from shared.inbound.messages import MesEvent
from shared.inbound.order_gate import Conflict, Decision, Duplicate, Gap, OrderGate, Progress, Wait
from shared.inbound.servicebus import ATTEMPT, IN_DOUBT_CHECK, ORIGINAL_ID, RESUBMIT, Delivery, Requeue
from shared.inbound.wakeup import wake
from shared.ops.telemetry import log_outcome
from shared.reasons import ParkReason
from shared.runtime import Ports
from shared.store.ledger import (
    FINAL_STATES,
    Companion,
    CompanionConflict,
    LedgerEntry,
    LedgerStore,
    LostRace,
    State,
    lease,
    payload_hash,
)
from shared.store.lineage import Edge, LineageStore
from shared.topology import INBOUND_QUEUES


class Outcome(StrEnum):
    FORWARDED = "forwarded"
    DUPLICATE = "duplicate"
    PARKED = "parked"
    WAITING = "waiting"
    RETRYING = "retrying"


@dataclass(frozen=True)
class Flow:
    """A flow is its message model, its F&O mapping, and what a repeat of its call would do."""

    name: str
    event: type[MesEvent]
    map: Callable[[Any, MappingOptions], FoCall]
    #: True when F&O makes a repeat of the call harmless (a service that dedupes on the MES message
    #: id, a record keyed by it). A SendMessage has no such key: it is never re-sent blindly.
    repeatable: bool
    lineage: Callable[[Any], list[Edge]] = lambda event: []

    @property
    def queue(self) -> str:
        return INBOUND_QUEUES[self.name]


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    company: str
    message_id: str
    reason: str = ""
    detail: str = ""
    order: str = ""
    correlation_id: str = ""
    fo_ms: float = 0.0


# --- the pipeline -------------------------------------------------------------------------------


def process(delivery: Delivery, flow: Flow, ports: Ports) -> Result:
    started = time.monotonic()
    result = _process(delivery, flow, ports)
    log_outcome(
        ports.log,
        flow.name,
        result,
        duration_ms=(time.monotonic() - started) * 1000,
        delivery_count=delivery.delivery_count,
        queue_age_s=_queue_age_s(delivery),
    )
    return result


def _queue_age_s(delivery: Delivery) -> float | None:
    """How long the message sat in its queue; the trigger's enqueued time may come without a zone (UTC)."""
    if delivery.enqueued_at is None:
        return None
    enqueued = delivery.enqueued_at if delivery.enqueued_at.tzinfo else delivery.enqueued_at.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - enqueued).total_seconds())


def _process(delivery: Delivery, flow: Flow, ports: Ports) -> Result:
    try:
        identity, event = decode(delivery, flow, ports.settings)
    except _ParkedAs as parked:
        return _park_new(delivery, flow, ports, parked.identity, parked.reason, parked.message)
    except InvalidMessage as parked:
        return _park_new(delivery, flow, ports, _identity(None, delivery, ports.settings), parked.reason, parked.message)

    if IN_DOUBT_CHECK in delivery.properties:
        return _check_in_doubt(delivery, flow, ports, event, identity.company)
    existing: LedgerEntry | None = None
    if ATTEMPT in delivery.properties or RESUBMIT in delivery.properties:
        # A copy the bridge scheduled itself: its row exists, so skip the insert that would fail.
        existing = ports.ledger.get(identity.company, event.message_id)
    if existing is None:
        fresh = LedgerEntry(
            company=identity.company,
            message_id=event.message_id,
            state=State.FORWARDING,
            flow=flow.name,
            attempts=1,
            production_order=event.production_order or "",
            sequence=event.sequence,
            correlation_id=identity.correlation_id,
            payload_hash=payload_hash(delivery.body),
            payload_size=len(delivery.body),
            received_at=utcnow(),
        )
        # The gate decides before the row is written, so a row that says Forwarding always
        # means "about to call F&O": a failure before that point leaves nothing in doubt.
        try:
            return _enter(delivery, flow, ports, event, fresh, _decide(flow, ports, event, fresh, delivery.body), new=True)
        except LostRace:
            existing = ports.ledger.get(identity.company, event.message_id)
            if existing is None:  # deleted between the two calls: let the broker try again
                raise Transient("ledger row vanished during the claim") from None
    if _changed_copy(existing, delivery, ports):
        return _park_changed_copy(delivery, flow, ports, existing, identity)
    settled = _settled_or_held(existing, delivery, flow, ports, event)
    if settled is not None:
        return settled
    try:
        return _enter(delivery, flow, ports, event, existing, _decide(flow, ports, event, existing, delivery.body), new=False)
    except LostRace:
        return _result(existing, Outcome.DUPLICATE, "duplicate", "another delivery moved it first")


def _result(entry: LedgerEntry, outcome: Outcome, reason: str = "", detail: str = "", fo_ms: float = 0.0) -> Result:
    return Result(outcome, entry.company, entry.message_id, reason, detail, entry.production_order, entry.correlation_id, fo_ms)


def _resubmits(delivery: Delivery, parked: LedgerEntry) -> bool:
    """True for the operator's resubmission of this parked row; any other copy (a redelivery, the
    MES sending it again) has no token or an old one and must not move it."""
    token = delivery.properties.get(RESUBMIT)
    return token is not None and token == parked.extra.get("ResubmitToken")


def _settled_or_held(existing: LedgerEntry, delivery: Delivery, flow: Flow, ports: Ports, event: MesEvent) -> Result | None:
    """A row exists for this message id: the result when this delivery may not move it forward."""
    settings = ports.settings
    resubmitted = existing.state is State.PARKED and _resubmits(delivery, existing)
    if existing.state in FINAL_STATES or (existing.state is State.PARKED and not resubmitted):
        same = existing.payload_hash == payload_hash(delivery.body)
        return _result(
            existing,
            Outcome.DUPLICATE,
            "duplicate",
            f"already {existing.state.value}" + ("" if same else "; the payload differs"),
        )
    if existing.state is State.FORWARDING and existing.lease_active:
        # Another worker holds it now. Look again after its lease: if it crashed, this copy finishes the job.
        # Look again at the retry cadence, and never later than just after its lease runs out.
        remaining = (existing.lease_until - utcnow()).total_seconds() if existing.lease_until else settings.message_lock_budget_s
        _schedule(delivery, ports, existing, max(0.05, min(remaining + 1.0, settings.retry_first_wait_s)))
        return _result(existing, Outcome.WAITING, "in_flight", "another worker is forwarding this message")
    if existing.state is State.FORWARDING and not flow.repeatable:
        detail = "a previous attempt stopped after calling F&O and before recording the answer; check F&O before resubmitting"
        return _park_in_doubt(delivery, existing, flow, ports, event, flow.map(event, ports.options), detail)
    return None


def fingerprint(body: bytes) -> str:
    """What a message says, apart from its own id and how its JSON happens to be written (key order,
    spacing): two copies with one fingerprint are the same message sent twice."""
    try:
        raw = json.loads(body, parse_constant=_refuse)
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k not in ("message_id", "correlation_id")}
        return payload_hash(json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    except (ValueError, RecursionError):
        return payload_hash(body)


def _changed_copy(existing: LedgerEntry, delivery: Delivery, ports: Ports) -> bool:
    """True for a copy from the MES (not one the bridge scheduled or resubmitted itself) that says
    something else than what its message id said first."""
    if ATTEMPT in delivery.properties or RESUBMIT in delivery.properties:
        return False
    if existing.payload_hash == payload_hash(delivery.body):
        return False
    stored = ports.ledger.payload(existing.company, existing.message_id)
    return stored is None or fingerprint(stored) != fingerprint(delivery.body)


def _park_changed_copy(delivery: Delivery, flow: Flow, ports: Ports, existing: LedgerEntry, identity: _Identity) -> Result:
    """Keep a changed copy apart, on a row of its own that names the first: neither replaces the other.
    Its id derives from its content, so a redelivery of the same copy finds that row."""
    digest = payload_hash(delivery.body)
    detail = (
        f"message id {existing.message_id} arrived before with other content (that copy is {existing.state.value}); "
        "this copy was kept apart and not sent to F&O"
    )
    entry = LedgerEntry(
        company=existing.company,
        message_id=f"{existing.message_id}|conflict-{digest[:16]}",
        state=State.PARKED,
        flow=flow.name,
        reason=ParkReason.CONFLICT,
        detail=detail,
        production_order=identity.order,
        sequence=identity.sequence,
        correlation_id=identity.correlation_id,
        payload_hash=digest,
        payload_size=len(delivery.body),
        extra={"Conflict": "message_id", "ConflictsWith": existing.message_id},
    )
    try:
        created = ports.ledger.create(entry, payload=delivery.body)
    except LostRace:
        kept = ports.ledger.get(entry.company, entry.message_id)
        return _result(kept or entry, Outcome.DUPLICATE, "duplicate", "this conflicting copy was recorded before")
    return _result(created, Outcome.PARKED, ParkReason.CONFLICT, detail)


def _same_sequence(ports: Ports, entry: LedgerEntry, event: MesEvent, body: bytes, duplicate: Duplicate) -> Decision:
    """Below the watermark, a message is a duplicate only when the message holding its sequence said
    the same; other content under a sequence already used is a conflict for an operator."""
    sequence, order = event.sequence, event.production_order or ""
    holders = [
        e
        for e in ports.ledger.query(company=entry.company, production_order=order)
        if e.sequence == sequence and e.message_id != entry.message_id and e.reason != ParkReason.CONFLICT
    ]
    mine = fingerprint(body)
    for holder in holders:
        stored = ports.ledger.payload(holder.company, holder.message_id)
        if stored is not None and fingerprint(stored) == mine:
            return Duplicate(f"{duplicate.detail}; the same content as {holder.message_id}")
    if not holders:
        return Conflict(
            f"sequence {sequence} is below the watermark of {order} and no message of the order holds it; not sent to F&O"
        )
    held = next((h for h in holders if h.state in (State.FORWARDED, State.PROCESSED, State.FAILED)), holders[0])
    return Conflict(
        f"sequence {sequence} of {order} is held by message {held.message_id} ({held.state.value}) with other content; "
        "this message was not sent to F&O",
        held.message_id,
    )


def _decide(flow: Flow, ports: Ports, event: MesEvent, entry: LedgerEntry, body: bytes) -> Decision | None:
    """The order gate's decision; None for a message outside any production order (no gate)."""
    order = event.production_order
    if not order:
        return None
    waiting = _earlier_in_flight(ports, entry, order) if _end_without_sequence(flow, event) else 0
    decision = ports.gate.decide(entry.company, order, flow.name, event.sequence, later_waiting=waiting)
    if isinstance(decision, Duplicate) and event.sequence is not None:
        return _same_sequence(ports, entry, event, body, decision)
    return decision


def _end_without_sequence(flow: Flow, event: MesEvent) -> bool:
    return flow.name == "production_ended" and event.sequence is None and bool(event.production_order)


def _earlier_in_flight(ports: Ports, entry: LedgerEntry, order: str) -> int:
    """How many other messages of the order wait or are being forwarded: an end without sequence overtakes none."""
    return sum(
        1
        for e in ports.ledger.query(company=entry.company, production_order=order)
        if e.message_id != entry.message_id and e.state in (State.WAITING, State.FORWARDING)
    )


def _enter(
    delivery: Delivery, flow: Flow, ports: Ports, event: MesEvent, entry: LedgerEntry, decision: Decision | None, *, new: bool
) -> Result:
    """Write the row into the state the gate decided (insert when `new`, else an ETag-guarded move) and act on it."""

    def write(state: State, **changes: Any) -> LedgerEntry:
        if new:
            return ports.ledger.create(replace(entry, state=state, **changes), payload=delivery.body)
        return ports.ledger.transition(entry, state, **changes)

    if isinstance(decision, Duplicate):
        row = write(State.DUPLICATE, reason="below_watermark", detail=decision.detail, lease_until=None)
        return _result(row, Outcome.DUPLICATE, "below_watermark", decision.detail)
    if isinstance(decision, Conflict):
        extra = {**entry.extra, "Conflict": "sequence", "ConflictsWith": decision.other}
        row = write(State.PARKED, reason=ParkReason.CONFLICT, detail=decision.detail, lease_until=None, extra=extra)
        return _result(row, Outcome.PARKED, ParkReason.CONFLICT, decision.detail)
    if isinstance(decision, Gap):
        # Noted before the park, so that the watermark move that ends the gap looks for this row.
        ports.gate.note_held(entry.company, event.production_order or "")
        extra = {**entry.extra, "Missing": decision.missing if decision.missing is not None else ""}
        row = write(State.PARKED, reason=decision.reason, detail=decision.detail, lease_until=None, extra=extra)
        return _result(row, Outcome.PARKED, decision.reason, decision.detail)
    resubmitted = entry.state is State.PARKED
    if isinstance(decision, Wait):
        unchanged = not new and entry.state is State.WAITING and entry.reason == "ordering" and entry.detail == decision.detail
        # A resubmission counts as an attempt: its scheduled copies then get fresh broker ids.
        attempts = entry.attempts + 1 if resubmitted else entry.attempts
        waiting = (
            entry
            if unchanged
            else write(State.WAITING, reason="ordering", detail=decision.detail, lease_until=None, attempts=attempts)
        )
        return _wait(delivery, ports, waiting, decision.detail)
    claimed = write(
        State.FORWARDING,
        reason="",
        detail="" if new else "resubmitted" if resubmitted else f"attempt {entry.attempts + 1}",
        attempts=entry.attempts if new else entry.attempts + 1,
        lease_until=lease(ports.settings.message_lock_budget_s),
    )
    if _end_without_sequence(flow, event):
        # Asked again now that the end's own row is written: a message of another flow whose row was
        # written while the gate decided (rows follow decisions) was taken in first and goes to F&O first.
        earlier = _earlier_in_flight(ports, claimed, event.production_order or "")
        if earlier:
            detail = f"waiting for {earlier} earlier message(s) of {event.production_order}"
            held = ports.ledger.transition(claimed, State.WAITING, reason="ordering", detail=detail, lease_until=None)
            return _wait(delivery, ports, held, detail)
    return _send(delivery, flow, ports, event, claimed, decision.progress if decision is not None else None)


def _send(
    delivery: Delivery, flow: Flow, ports: Ports, event: MesEvent, claimed: LedgerEntry, progress: Progress | None
) -> Result:
    call = flow.map(event, ports.options)
    call_type, hashed, index_row = indexed(claimed, call)
    started = time.monotonic()
    try:
        reference = execute(ports.fo, call)
    except InDoubt as exc:
        if not flow.repeatable:
            detail = f"{exc.message}; check F&O before resubmitting"
            return _park_in_doubt(delivery, claimed, flow, ports, event, call, detail, _ms(started))
        return _retry_later(delivery, ports, claimed, exc)
    except (BusinessRejection, NotFound) as exc:
        infolog = exc.infolog if isinstance(exc, BusinessRejection) else ""
        return _park(
            claimed, ports, ParkReason.REJECTED, exc.message, infolog=infolog, fo_ms=_ms(started), fo_message_type=call_type
        )
    except (Transient, AuthError, ConfigError) as exc:
        return _retry_later(delivery, ports, claimed, exc)
    fo_ms = _ms(started)
    # Genealogy first: should the worker stop before Forwarded is recorded, the message is in
    # doubt and its settlement writes the same (idempotent) edges again; never the other way round.
    edges = flow.lineage(event)
    if edges:
        _record(lambda: ports.lineage.record(edges))
    extra = {**claimed.extra, "ContentHash": hashed, "FoReference": reference, "FoMs": round(fo_ms, 1)}
    planned = ports.gate.plan_advance(progress, flow.name, event.sequence) if progress is not None else None
    companions = [*([planned] if planned is not None else []), *index_row]

    def forward(together: bool) -> LedgerEntry:
        return ports.ledger.transition(
            claimed,
            State.FORWARDED,
            reason="",
            detail=call_type,
            fo_message_type=call_type,
            lease_until=None,
            extra=extra,
            companions=companions if together else None,
        )

    try:
        forwarded: LedgerEntry = _record(lambda: forward(True))
    except CompanionConflict:
        # Another flow touched the order's progress since the gate read it: record the rows apart.
        forwarded = _record(lambda: forward(False))
        _record(lambda: ports.gate.advance(forwarded.company, event.production_order or "", flow.name, event.sequence))
        if index_row:
            _record(lambda: ports.ledger.write(index_row[0]))
    if progress is not None and (progress.held or progress.waiting_for is not None):
        # Somebody waited for this one or is parked behind it: the next in sequence resumes now.
        _wake(ports, forwarded, f"{forwarded.message_id} was forwarded")
    return _result(forwarded, Outcome.FORWARDED, fo_ms=fo_ms)


def _wake(ports: Ports, entry: LedgerEntry, why: str) -> None:
    """Wake what the gate holds behind `entry`. The message itself is done: a failure here is logged,
    and the order's `held` flag makes its next watermark move look again."""
    try:
        _record(lambda: wake(ports.ledger, ports.gate, ports.requeue, entry.company, entry.production_order, why))
    except BridgeError as exc:
        ports.log.warning("could not wake the successors of %s: %s", entry.message_id, exc.message)


def _park_in_doubt(
    delivery: Delivery,
    entry: LedgerEntry,
    flow: Flow,
    ports: Ports,
    event: MesEvent,
    call: FoCall,
    detail: str,
    fo_ms: float = 0.0,
) -> Result:
    """Park a send that may have been applied. Indexed by its content, so that F&O's processed event
    settles it without an operator; the bookkeeping a forward does waits in the row until then.
    Where a read of F&O can tell, the bridge checks by itself after the window (shared/inbound/in_doubt.py)."""
    call_type, hashed, index_row = indexed(entry, call)
    extra = {**entry.extra, "ContentHash": hashed, "Lineage": [asdict(edge) for edge in flow.lineage(event)]}
    parked = _park(
        entry, ports, ParkReason.IN_DOUBT, detail, fo_ms=fo_ms, extra=extra, companions=index_row, fo_message_type=call_type
    )
    if in_doubt.decidable(flow.name) and event.production_order:
        check = replace(delivery, properties={**delivery.properties, IN_DOUBT_CHECK: "1"})
        _schedule(check, ports, entry, ports.settings.in_doubt_check_after_s)
    return parked


def _check_in_doubt(delivery: Delivery, flow: Flow, ports: Ports, event: MesEvent, company: str) -> Result:
    """The bridge's own check of an in-doubt message, once F&O's processed event had its window."""
    entry = ports.ledger.get(company, event.message_id)
    if entry is None or entry.state is not State.PARKED or entry.reason != ParkReason.IN_DOUBT:
        settled = entry or LedgerEntry(company=company, message_id=event.message_id, state=State.DUPLICATE)
        return _result(settled, Outcome.DUPLICATE, "duplicate", "settled before the bridge's check")
    order = event.production_order or ""
    try:
        reading = in_doubt.read(ports.fo, company, flow.name, order)
    except (Transient, AuthError, ConfigError, NotFound) as exc:
        _schedule(delivery, ports, entry, ports.settings.retry_first_wait_s)
        return _result(entry, Outcome.RETRYING, exc.reason, f"checking F&O: {exc.message}")
    if reading.applied:
        catch_up(ports.ledger, ports.gate, ports.lineage, ports.requeue, entry, f"the bridge found {entry.message_id} in F&O")
        try:
            confirmed = ports.ledger.transition(
                entry, State.FORWARDED, reason="", detail=f"confirmed by the bridge: {reading.checked}", lease_until=None
            )
        except LostRace:
            return _result(entry, Outcome.DUPLICATE, "duplicate", "settled during the bridge's check")
        return _result(confirmed, Outcome.FORWARDED, detail=f"in doubt, confirmed: {reading.checked}")
    detail = (
        f"{entry.detail}; the bridge read F&O after {ports.settings.in_doubt_check_after_s:g} s without a processed event: "
        f"{reading.checked}, which cannot tell whether F&O still holds the message; check Message processor messages"
    )
    try:
        kept = ports.ledger.transition(
            entry, State.PARKED, reason=ParkReason.IN_DOUBT, detail=detail, extra={**entry.extra, "Checked": reading.checked}
        )
    except LostRace:
        return _result(entry, Outcome.DUPLICATE, "duplicate", "settled during the bridge's check")
    return _result(kept, Outcome.PARKED, ParkReason.IN_DOUBT, detail)


def catch_up(ledger: LedgerStore, gate: OrderGate, lineage: LineageStore, requeue: Requeue, entry: LedgerEntry, why: str) -> None:
    """What a forward records after F&O accepted, for a message F&O applied while the bridge was in
    doubt (its processed event, a read of F&O, or an operator who checked): the order's watermark,
    the genealogy, and the wake-up of what the gate held behind it."""
    if entry.production_order:
        gate.advance(entry.company, entry.production_order, entry.flow, entry.sequence)
    edges = [Edge(**edge) for edge in entry.extra.get("Lineage", [])]
    if edges:
        lineage.record(edges)
    if entry.production_order:
        wake(ledger, gate, requeue, entry.company, entry.production_order, why)


def _record(write: Callable[[], Any]) -> Any:
    """Bookkeeping after F&O accepted: a storage hiccup (or a restart) is retried for a few seconds
    before giving up to the broker, since a redelivery then finds the message in doubt."""
    for attempt in range(6):
        try:
            return write()
        except Transient:
            if attempt == 5:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _park_new(delivery: Delivery, flow: Flow, ports: Ports, identity: _Identity, reason: ParkReason, detail: str) -> Result:
    entry = LedgerEntry(
        company=identity.company,
        message_id=identity.message_id,
        state=State.PARKED,
        flow=flow.name,
        reason=reason,
        detail=detail,
        production_order=identity.order,
        sequence=identity.sequence,
        correlation_id=identity.correlation_id,
        payload_hash=payload_hash(delivery.body),
        payload_size=len(delivery.body),
    )
    try:
        created = ports.ledger.create(entry, payload=delivery.body)
    except LostRace:
        existing = ports.ledger.get(identity.company, identity.message_id)
        resubmitted = existing is not None and _resubmits(delivery, existing)
        if existing is not None and not resubmitted and _changed_copy(existing, delivery, ports):
            return _park_changed_copy(delivery, flow, ports, existing, identity)
        if existing is None or not resubmitted:
            return _result(existing or entry, Outcome.DUPLICATE, "duplicate", "this message was recorded before")
        created = ports.ledger.transition(existing, State.PARKED, reason=reason, detail=detail, payload=delivery.body)
    return _result(created, Outcome.PARKED, reason, detail)


def _park(
    entry: LedgerEntry,
    ports: Ports,
    reason: ParkReason,
    detail: str,
    *,
    infolog: str = "",
    fo_ms: float = 0.0,
    extra: dict[str, Any] | None = None,
    companions: list[Companion] | None = None,
    **changes: Any,
) -> Result:
    parked = _record(
        lambda: ports.ledger.transition(
            entry,
            State.PARKED,
            reason=reason,
            detail=detail,
            infolog=infolog,
            lease_until=None,
            extra=extra if extra is not None else entry.extra,
            companions=companions or None,
            **changes,
        )
    )
    return _result(parked, Outcome.PARKED, reason, detail, fo_ms)


def _wait(delivery: Delivery, ports: Ports, waiting: LedgerEntry, detail: str) -> Result:
    # The number of waits travels on the message (its attempt count): waiting again costs no ledger write.
    waits = int(delivery.properties.get(ATTEMPT, 0)) + 1
    delay = min(ports.settings.gate_max_wait_s, ports.settings.gate_first_wait_s * 2 ** min(waits - 1, 16))
    _schedule(delivery, ports, waiting, delay)
    return _result(waiting, Outcome.WAITING, "ordering", detail)


def _retry_later(delivery: Delivery, ports: Ports, entry: LedgerEntry, error: BridgeError) -> Result:
    settings = ports.settings
    received = entry.received_at or utcnow()
    if utcnow() - received > timedelta(seconds=settings.retry_give_up_after_s):
        return _park(
            entry,
            ports,
            ParkReason.RETRIES_EXHAUSTED,
            f"still failing after {settings.retry_give_up_after_s:g} s: {error.message}",
        )
    retries = int(entry.extra.get("Retries", 0)) + 1
    delay = min(settings.retry_max_wait_s, settings.retry_first_wait_s * 2 ** min(retries - 1, 20))
    if isinstance(error, (AuthError, ConfigError)):
        ports.log.error("F&O refused the bridge's credentials: %s", error.message, extra={"flow": entry.flow, "outcome": "auth"})
        delay = settings.retry_max_wait_s
    waiting = _record(
        lambda: ports.ledger.transition(
            entry,
            State.WAITING,
            reason=error.reason,
            detail=error.message,
            lease_until=None,
            extra={**entry.extra, "Retries": retries},
        )
    )
    _schedule(delivery, ports, waiting, delay)
    return _result(waiting, Outcome.RETRYING, error.reason, error.message)


def _schedule(delivery: Delivery, ports: Ports, entry: LedgerEntry, delay_s: float) -> None:
    attempt = int(delivery.properties.get(ATTEMPT, 0)) + 1
    properties = {k: v for k, v in delivery.properties.items() if k not in (ATTEMPT, ORIGINAL_ID)}
    properties.update({ATTEMPT: attempt, ORIGINAL_ID: delivery.properties.get(ORIGINAL_ID, delivery.message_id)})
    ports.requeue.schedule(
        delivery.queue,
        delivery.body,
        # A fresh broker id per attempt (duplicate detection would drop a copy with the old one),
        # the same one if this step is repeated after a crash (so the repeat is dropped instead).
        message_id=f"{entry.message_id}|{entry.attempts}.{attempt}"[:128],
        session_id=delivery.session_id,
        delay_s=delay_s,
        correlation_id=entry.correlation_id or None,
        properties=properties,
    )
