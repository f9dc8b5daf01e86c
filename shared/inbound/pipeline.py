"""The one inbound pipeline: every MES -> F&O flow hands its Service Bus message to `process`.

    decode + validate   bad input is parked with a reason and the original payload
    order gate          early messages wait (rescheduled, delivery count untouched)
    claim in ledger     a message id seen before is a duplicate: no second call to F&O
    send to F&O         token, throttle, retry and timeouts live in the F&O client
    Forwarded, lineage  the row, the watermark, the content index and the genealogy edges at once

This module tells that story and makes its decisions; each delivery becomes one `Attempt`
(shared/inbound/attempt.py) handed to the steps: decode (decode.py), the F&O call (dispatch.py),
and how the attempt ends in the ledger (settlement.py).

Failures are sorted by class, here (`_send`) and in the bridge's own in-doubt check (settlement.py):
invalid input and F&O business rejections are parked; transient faults are retried later with a
growing delay, then parked when the retry window closes; a send that may have been applied (no
answer) is parked as in doubt unless F&O makes a repeat harmless, and F&O's processed event settles it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import AuthError, BusinessRejection, ConfigError, InDoubt, NotFound, Transient
from shared.inbound import aggregate, settlement
from shared.inbound.attempt import Arrival, Attempt, Outcome, Result, token_spent
from shared.inbound.decode import Refused, decode, fingerprint
from shared.inbound.dispatch import execute, message_type
from shared.inbound.flows import Flow
from shared.inbound.mapping import SendMessage
from shared.inbound.order_gate import Conflict, Decision, Duplicate, Gap, Plan, Progress, Step, Wait
from shared.inbound.servicebus import ATTEMPT, IN_DOUBT_CHECK, RESUBMIT, Delivery
from shared.inbound.wakeup import HeldLook
from shared.ops.telemetry import log_outcome
from shared.reasons import NotParked, ParkReason
from shared.runtime import Ports
from shared.store.ledger import FINAL_STATES, CompanionConflict, LedgerEntry, LostRace, State
from shared.store.progress import ProgressChanged
from shared.store.tables import timing_storage


def process(delivery: Delivery, flow: Flow, ports: Ports) -> Result:
    started = time.monotonic()
    with timing_storage() as storage:
        try:
            result = _process(delivery, flow, ports)
        except Transient as exc:
            # What escapes is Table Storage failing (or a race that kept changing the row): nothing of
            # this delivery could be recorded, so it comes back later (settlement.storage_unavailable).
            result = settlement.storage_unavailable(_arrival(delivery, flow, ports), exc)
    log_outcome(
        ports.log,
        flow.name,
        result,
        duration_ms=(time.monotonic() - started) * 1000,
        storage_ms=storage.ms,
        delivery_count=delivery.delivery_count,
        queue_age_s=queue_age_s(delivery, ports.clock()),
    )
    return result


def _arrival(delivery: Delivery, flow: Flow, ports: Ports) -> Arrival:
    try:
        identity, _ = decode(delivery, flow, ports.settings)
    except Refused as refused:
        identity = refused.identity
    return Arrival(delivery, flow, ports, identity)


def queue_age_s(delivery: Delivery, now: datetime) -> float | None:
    """How long the message sat in its queue; the trigger's enqueued time may come without a zone (UTC)."""
    if delivery.enqueued_at is None:
        return None
    enqueued = delivery.enqueued_at if delivery.enqueued_at.tzinfo else delivery.enqueued_at.replace(tzinfo=UTC)
    return max(0.0, (now - enqueued).total_seconds())


def _process(delivery: Delivery, flow: Flow, ports: Ports) -> Result:
    try:
        identity, event = decode(delivery, flow, ports.settings)
    except Refused as refused:
        return settlement.park_refused(Arrival(delivery, flow, ports, refused.identity), refused.reason, refused.message)
    attempt = Attempt(delivery, flow, ports, identity, event)
    with ports.handoff.handling(identity.company, attempt.order, event.sequence):
        return _admit(attempt)


def _admit(attempt: Attempt) -> Result:
    delivery, flow, ports, identity, event = attempt.delivery, attempt.flow, attempt.ports, attempt.identity, attempt.event
    if IN_DOUBT_CHECK in delivery.properties:
        return settlement.check_in_doubt(attempt)
    existing: LedgerEntry | None = None
    look_again = ATTEMPT in delivery.properties and RESUBMIT not in delivery.properties
    finished = ports.recent.final_state(identity.company, event.message_id) if look_again else None
    if finished is not None:
        # A look-again or retry of a message this process finished: what the ledger would answer.
        done = LedgerEntry(identity.company, event.message_id, finished, production_order=attempt.order)
        done = replace(done, correlation_id=identity.correlation_id)
        return attempt.result(done, Outcome.DUPLICATE, NotParked.DUPLICATE, f"already {finished.value}")
    remembered = False
    if attempt.scheduled_by_bridge:
        # A copy the bridge scheduled itself: its row exists, so skip the insert that would fail.
        # A woken copy starts from the row the wake-up read (a row changed since is read again below).
        existing = ports.recent.take_woken(identity.company, event.message_id) if look_again else None
        remembered = existing is not None
        if existing is None:
            existing = ports.ledger.get(identity.company, event.message_id)
    if existing is None:
        fresh = LedgerEntry(
            company=identity.company,
            message_id=event.message_id,
            state=State.FORWARDING,
            flow=flow.name,
            attempts=1,
            production_order=attempt.order,
            sequence=event.sequence,
            correlation_id=identity.correlation_id,
            payload_hash=attempt.payload_hash,
            payload_size=len(delivery.body),
            received_at=ports.clock(),
        )
        # The gate decides before the row is written, so a row that says Forwarding always
        # means "about to call F&O": a failure before that point leaves nothing in doubt.
        try:
            return _decide_and_enter(attempt, fresh, new=True)
        except LostRace:
            existing = ports.ledger.get(identity.company, event.message_id)
            if existing is None:  # deleted between the two calls: let the broker try again
                raise Transient("ledger row vanished during the claim") from None
    if attempt.changed_copy(existing):
        return settlement.park_changed_copy(attempt, existing)
    try:
        return _move_on(attempt, existing)
    except LostRace:
        if remembered:  # the row moved since the wake-up read it: this copy looks at it as it is now
            now = ports.ledger.get(identity.company, event.message_id)
            if now is not None:
                try:
                    return _move_on(attempt, now)
                except LostRace:
                    existing = now
        return attempt.result(existing, Outcome.DUPLICATE, NotParked.DUPLICATE, "another delivery moved it first")


def _move_on(attempt: Attempt, existing: LedgerEntry) -> Result:
    """A delivery of a message whose row exists: `LostRace` if the row moved since `existing` was read."""
    settled = _settled_or_held(attempt, existing)
    if settled is not None:
        return settled
    return _decide_and_enter(attempt, existing, new=False)


def _settled_or_held(attempt: Attempt, existing: LedgerEntry) -> Result | None:
    """A row exists for this message id: the result when this delivery may not move it forward."""
    resubmitted = existing.state is State.PARKED and attempt.resubmits(existing)
    if existing.state in FINAL_STATES or (existing.state is State.PARKED and not resubmitted):
        same = existing.payload_hash == attempt.payload_hash
        return attempt.result(
            existing,
            Outcome.DUPLICATE,
            NotParked.DUPLICATE,
            f"already {existing.state.value}" + ("" if same else "; the payload differs"),
        )
    leased = existing.lease_until is not None and existing.lease_until > attempt.ports.clock()
    if existing.state is State.FORWARDING and leased:
        return settlement.still_in_flight(attempt, existing)
    if existing.state is State.FORWARDING and not attempt.flow.repeatable:
        detail = "a previous attempt stopped after calling F&O and before recording the answer; check F&O before resubmitting"
        return settlement.park_in_doubt(attempt, existing, attempt.call(), detail)
    return None


# --- the order gate -----------------------------------------------------------------------------


def _decide(attempt: Attempt, entry: LedgerEntry) -> Plan | None:
    """The order gate's decision and what it needs of the order's row (None for a message outside
    any production order: no gate)."""
    order, event = attempt.event.production_order, attempt.event
    if not order:
        return None
    waiting = _earlier_in_flight(attempt, entry) if _end_without_sequence(attempt) else 0
    plan = attempt.ports.gate.plan(entry.company, order, attempt.flow.step, event.sequence, later_waiting=waiting)
    if isinstance(plan.decision, Duplicate) and event.sequence is not None:
        return Plan(_same_sequence(attempt, entry, plan.decision))
    return plan


def _same_sequence(attempt: Attempt, entry: LedgerEntry, duplicate: Duplicate) -> Decision:
    """Below the watermark, a message is a duplicate only when the message holding its sequence said
    the same; other content under a sequence already used is a conflict for an operator."""
    ledger, sequence, order = attempt.ports.ledger, attempt.event.sequence, attempt.order
    holders = [
        e
        for e in ledger.query(company=entry.company, production_order=order)
        if e.sequence == sequence and e.message_id != entry.message_id and e.reason != ParkReason.CONFLICT
    ]
    mine = fingerprint(attempt.delivery.body)
    for holder in holders:
        stored = ledger.payload(holder.company, holder.message_id)
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


def _end_without_sequence(attempt: Attempt) -> bool:
    event = attempt.event
    return attempt.flow.step is Step.END and event.sequence is None and bool(event.production_order)


def _earlier_in_flight(attempt: Attempt, entry: LedgerEntry) -> int:
    """How many other messages of the order wait or are being forwarded: an end without sequence overtakes none."""
    return sum(
        1
        for e in attempt.ports.ledger.query(company=entry.company, production_order=attempt.order)
        if e.message_id != entry.message_id and e.state in (State.WAITING, State.FORWARDING)
    )


# --- the decided state --------------------------------------------------------------------------


class _GateMoved(Exception):
    """The order's progress row changed between the gate's decision and the write: nothing was written."""


def _decide_and_enter(attempt: Attempt, entry: LedgerEntry, *, new: bool) -> Result:
    handoff_until = time.monotonic() + attempt.ports.settings.gate_handoff_wait_s
    moved = 0
    while True:
        plan = _decide(attempt, entry)
        if plan is not None and isinstance(plan.decision, Wait) and _handed_off(attempt, handoff_until):
            continue  # its predecessor's delivery in this process has ended: the gate decides again
        try:
            return _enter(attempt, entry, plan, new=new)
        except _GateMoved:
            # Another worker wrote the order's row since the gate read it: decide again on the row as it is now.
            moved += 1
            if moved == 5:
                raise Transient(f"the progress of order {attempt.order} kept changing during the claim") from None


def _handed_off(attempt: Attempt, until: float) -> bool:
    """Wait in memory for the predecessor this process is handling now (shared/inbound/handoff.py):
    True once its delivery ended, False (wait in the ledger) if none runs here or it takes too long.
    Not while F&O's budget holds the bridge back: then the wait in the ledger is what lets the
    predecessor's forward take it along in one F&O message (shared/inbound/aggregate.py)."""
    sequence = attempt.event.sequence
    if sequence is None or attempt.ports.fo.budget_wait_s() >= aggregate.BUDGET_BOUND_S:
        return False
    return attempt.ports.handoff.wait_for(attempt.identity.company, attempt.order, sequence - 1, until)


def _enter(attempt: Attempt, entry: LedgerEntry, plan: Plan | None, *, new: bool) -> Result:
    """Write the row into the state the gate decided (insert when `new`, else an ETag-guarded move),
    in one transaction with the order's row as the decision needs it, and act on it."""
    ports = attempt.ports
    decision = plan.decision if plan is not None else None
    gate_row = plan.row if plan is not None else None
    resubmitted = entry.state is State.PARKED
    if resubmitted:
        entry = token_spent(entry)  # whatever the gate decided, this resubmission was admitted

    def write(state: State, **changes: Any) -> LedgerEntry:
        companions = [ports.gate.check(gate_row)] if gate_row is not None else None
        try:
            if new:
                written = ports.ledger.create(
                    replace(entry, state=state, **changes), payload=attempt.delivery.body, companions=companions
                )
            else:
                written = ports.ledger.transition(entry, state, companions=companions, **changes)
        except CompanionConflict:
            # The order's row moved since the gate read it (a forward, a wait noted, a stale row in
            # the gate's memory): nothing was written, the gate decides again on the row as it is.
            ports.gate.forget(entry.company, attempt.order)
            raise _GateMoved from None
        if gate_row is not None and written.companion_etags:
            ports.gate.stored(gate_row, written.companion_etags[0])
            ports.recent.moved(entry.company, attempt.order, gate_row.etag, written.companion_etags[0], written)
        return written

    if isinstance(decision, Duplicate):
        row = write(State.DUPLICATE, reason=NotParked.BELOW_WATERMARK, detail=decision.detail, lease_until=None)
        return attempt.result(row, Outcome.DUPLICATE, NotParked.BELOW_WATERMARK, decision.detail)
    if isinstance(decision, Conflict):
        extra = {**entry.extra, "Conflict": "sequence", "ConflictsWith": decision.other}
        row = write(State.PARKED, reason=ParkReason.CONFLICT, detail=decision.detail, lease_until=None, extra=extra)
        return attempt.result(row, Outcome.PARKED, ParkReason.CONFLICT, decision.detail)
    if isinstance(decision, Gap):
        # The park and the order's `held` flag are one transaction: the watermark move that ends the
        # gap looks for this row.
        extra = {**entry.extra, "Missing": decision.missing if decision.missing is not None else ""}
        row = write(State.PARKED, reason=decision.reason, detail=decision.detail, lease_until=None, extra=extra)
        return attempt.result(row, Outcome.PARKED, decision.reason, decision.detail)
    if isinstance(decision, Wait):
        unchanged = (
            not new and entry.state is State.WAITING and entry.reason == NotParked.ORDERING and entry.detail == decision.detail
        )
        # A resubmission counts as an attempt: its scheduled copies then get fresh broker ids.
        attempts = entry.attempts + 1 if resubmitted else entry.attempts
        # The wait's note on the order's row and the message's row are one transaction: the forward
        # that ends the wait finds both or neither (then this one fails on the moved row and is decided again).
        if not unchanged:
            waiting = write(State.WAITING, reason=NotParked.ORDERING, detail=decision.detail, lease_until=None, attempts=attempts)
            # The delivery's body is the row's payload (a copy with other content was parked before
            # this): the wake-up that ends the wait, in this process, need not read it back.
            ports.recent.waiting(waiting, attempt.delivery.body)
        else:
            waiting = entry
            if plan is not None and not _gate_row_stored(attempt, plan):
                raise _GateMoved
        return settlement.wait(attempt, waiting, decision.detail, wakes=decision.wakes)
    # The claim and the order's row as the gate read it are one transaction: a watermark that moved
    # meanwhile (this message forwarded by another copy, a stale row in the gate's memory) fails it.
    claimed = write(
        State.FORWARDING,
        reason="",
        detail="" if new else "resubmitted" if resubmitted else f"attempt {entry.attempts + 1}",
        attempts=entry.attempts if new else entry.attempts + 1,
        lease_until=ports.clock() + timedelta(seconds=ports.settings.message_lock_budget_s),
        extra=aggregate.on_its_own(entry.extra),
    )
    if _end_without_sequence(attempt):
        # Asked again now that the end's own row is written: a message of another flow whose row was
        # written while the gate decided (rows follow decisions) was taken in first and goes to F&O first.
        earlier = _earlier_in_flight(attempt, claimed)
        if earlier:
            detail = f"waiting for {earlier} earlier message(s) of {attempt.order}"
            held = ports.ledger.transition(claimed, State.WAITING, reason=NotParked.ORDERING, detail=detail, lease_until=None)
            return settlement.wait(attempt, held, detail)
    progress = replace(gate_row, etag=claimed.companion_etags[0]) if gate_row is not None and claimed.companion_etags else None
    return _send(attempt, claimed, progress)


def _gate_row_stored(attempt: Attempt, plan: Plan) -> bool:
    """The order's row as the decision needs it, when the message's own row has nothing new to write:
    the note written alone, or the row read again when it came from the gate's memory. False: it changed."""
    gate = attempt.ports.gate
    if plan.row is None or (plan.unchanged and plan.read_now):
        return True
    if plan.unchanged:
        return gate.confirm(plan.row)
    try:
        gate.write(plan.row)
    except ProgressChanged:
        return False
    return True


# --- send ---------------------------------------------------------------------------------------


def _send(attempt: Attempt, claimed: LedgerEntry, progress: Progress | None) -> Result:
    """Call F&O and settle by what came back: the error's class decides (module docstring)."""
    call = attempt.call()
    ports = attempt.ports
    # The order's held index, looked at once: by the aggregation here, and by the wake-up after the forward.
    look = HeldLook(ports.ledger, claimed.company, attempt.order, ports.recent, progress)
    if progress is not None and isinstance(call, SendMessage):
        if aggregate.worth_looking(progress, claimed):
            # This message or another of the order waited: its direct successors of this flow may be Waiting.
            head = aggregate.Member(claimed, attempt.event)
            until = ports.clock() + timedelta(seconds=ports.settings.message_lock_budget_s)
            group = aggregate.gather(ports.ledger, ports.settings, ports.options, attempt.flow, head, call, until, look)
            if group is not None:
                return _send_merged(attempt, group, progress, look)
        # Nothing to take along yet, and F&O's budget would hold it anyway: its successors on its
        # session get the time to join it (never at low load: the budget has a slot at once).
        budget_wait = ports.fo.budget_wait_s()
        if aggregate.steps_aside(ports.settings, claimed, call, budget_wait):
            stepped = settlement.step_aside(attempt, claimed, budget_wait)
            if stepped is not None:
                return stepped
    started = time.monotonic()
    try:
        reference = execute(ports.fo, call)
    except InDoubt as exc:
        if not attempt.flow.repeatable:
            detail = f"{exc.message}; check F&O before resubmitting"
            return settlement.park_in_doubt(attempt, claimed, call, detail, _ms(started))
        return settlement.retry_later(attempt, claimed, exc)
    except (BusinessRejection, NotFound) as exc:
        infolog = exc.infolog if isinstance(exc, BusinessRejection) else ""
        return settlement.park(
            attempt,
            claimed,
            ParkReason.REJECTED,
            exc.message,
            infolog=infolog,
            fo_ms=_ms(started),
            fo_message_type=message_type(call),
        )
    except (Transient, AuthError, ConfigError) as exc:
        return settlement.retry_later(attempt, claimed, exc)
    return settlement.forwarded(attempt, claimed, call, reference, progress, _ms(started), look)


def _send_merged(attempt: Attempt, group: aggregate.Group, progress: Progress, look: HeldLook) -> Result:
    """One F&O message for the group's MES messages (shared/inbound/aggregate.py), its answer recorded
    on every one of them."""
    ports = attempt.ports
    started = time.monotonic()
    # Undone, the group's other members are Waiting again under new ETags: read when next needed.
    others = [m.entry for m in group.members[1:]]
    try:
        execute(ports.fo, group.call)
    except InDoubt as exc:
        detail = f"{exc.message}; one F&O message for {len(group.members)} MES messages; check F&O before resubmitting"
        members = [(m.entry, m.event) for m in group.members]
        return settlement.park_group_in_doubt(attempt, members, detail, _ms(started))
    except (BusinessRejection, NotFound) as refusal:
        # F&O refused the request: it queued nothing, so nothing of it was applied. Each message goes
        # alone now (this one first, the others when the watermark reaches them): only the bad one parks.
        why = refusal.message[:500]
        ports.recent.forget_waiting(others)
        alone = settlement.record(lambda: aggregate.release(ports.ledger, group, refused=why))
        result = _send(attempt, alone, progress)
        if result.outcome is Outcome.FORWARDED:
            # The others wait behind it: the next goes now rather than at its next look.
            settlement.wake_behind(ports, alone, f"{alone.message_id} was forwarded alone")
        return result
    except (Transient, AuthError, ConfigError) as exc:
        ports.recent.forget_waiting(others)
        alone = settlement.record(lambda: aggregate.release(ports.ledger, group))
        return settlement.retry_later(attempt, alone, exc)
    return settlement.forwarded_group(attempt, group, progress, _ms(started), look)


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
