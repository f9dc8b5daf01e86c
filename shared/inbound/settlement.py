"""How an attempt ends in the ledger, once the pipeline has decided: forwarded (with its
bookkeeping), parked, parked in doubt, waiting, or retried later; and the catch-up of a message F&O
applied while the bridge was in doubt.

What is written after F&O accepted is retried for a few seconds (`record`): giving up then
leaves the message in doubt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from shared.errors import AuthError, BridgeError, ConfigError, NotFound, Transient
from shared.inbound import aggregate, in_doubt
from shared.inbound.attempt import Arrival, Attempt, Outcome, Result, token_spent
from shared.inbound.dispatch import indexed
from shared.inbound.flows import step_of
from shared.inbound.mapping import FoCall
from shared.inbound.messages import MesEvent
from shared.inbound.order_gate import OrderGate, Progress, wakes_followers
from shared.inbound.servicebus import ORIGINAL_ID, STORAGE_FAILING_SINCE, STORAGE_RETRIES, Requeue
from shared.inbound.wakeup import HeldLook, wake
from shared.ops.telemetry import log_outcome
from shared.reasons import NotParked, ParkReason
from shared.runtime import Ports
from shared.settings import Settings
from shared.store.ledger import (
    FINAL_STATES,
    Companion,
    CompanionConflict,
    LedgerEntry,
    LedgerStore,
    LostRace,
    State,
    ledger_partition,
)
from shared.store.lineage import Edge, LineageStore
from shared.store.lineage import rows as lineage_rows

# --- forwarded ----------------------------------------------------------------------------------


def forwarded(
    attempt: Attempt,
    claimed: LedgerEntry,
    call: FoCall,
    reference: str,
    progress: Progress | None,
    fo_ms: float,
    look: HeldLook | None = None,
) -> Result:
    """F&O accepted: record the Forwarded row with the order's watermark, the content index and the
    genealogy in one transaction, and wake what the gate held behind it (`look`: the order's held
    index as this delivery looked at it after its claim, if it did)."""
    ports, flow, event = attempt.ports, attempt.flow, attempt.event
    call_type, hashed, index_row = indexed(claimed, call)
    edges = flow.lineage(event)
    genealogy = genealogy_with(ports, claimed.company, edges, 2 + len(index_row))
    extra = {**claimed.extra, "ContentHash": hashed, "FoReference": reference, "FoMs": round(fo_ms, 1)}

    def forward(companions: list[Companion] | None) -> LedgerEntry:
        return ports.ledger.transition(
            claimed,
            State.FORWARDED,
            reason="",
            detail=call_type,
            fo_message_type=call_type,
            lease_until=None,
            extra=extra,
            companions=companions,
        )

    row = _as_written_since(ports, progress) if progress is not None else None
    looked: list[LedgerEntry] | None = None
    for _ in range(_FORWARD_TRANSACTIONS):
        planned = ports.gate.plan_advance(row, flow.step, event.sequence) if row is not None else None
        companions = [*([planned] if planned is not None else []), *index_row, *genealogy]
        try:
            done: LedgerEntry = record(partial(forward, companions))
        except LostRace:
            # The row moved on without this forward (a lease that ran out, an operator): F&O has
            # the message all the same, so its genealogy is a fact to keep.
            if genealogy:
                record(lambda: ports.lineage.record(edges))
            raise
        except CompanionConflict:
            # Another flow wrote the order's row since the claim (a wait noted, a forward): the
            # watermark moves from the row as it is now, still in the one transaction.
            row = ports.gate.read(claimed.company, attempt.order)
            continue
        after = row
        if row is not None and planned is not None and done.companion_etags:
            after = ports.gate.stored(ports.gate.advanced(row, flow.step, event.sequence), done.companion_etags[0])
            looked = _held_then(ports, row, progress, look)
        # Somebody waited for this one or is parked behind it: the next in sequence resumes now.
        waiters = row is not None and after is not None and wakes_followers(row, after)
        break
    else:
        # The order's row kept changing: the rows are recorded apart, the genealogy first.
        ports.gate.forget(claimed.company, attempt.order)
        if genealogy:
            record(lambda: ports.lineage.record(edges))
        done = record(partial(forward, None))
        after, waiters = record(lambda: ports.gate.advance_waking(claimed.company, attempt.order, flow.step, event.sequence))
        if index_row:
            record(lambda: ports.ledger.write(index_row[0]))
    ports.recent.finished(done)
    if waiters:
        wake_behind(ports, done, f"{done.message_id} was forwarded", after, looked)
    return attempt.result(done, Outcome.FORWARDED, fo_ms=fo_ms)


#: Forward transactions tried before the rows are written apart (each after reading the order's row again).
_FORWARD_TRANSACTIONS = 3


def _as_written_since(ports: Ports, progress: Progress) -> Progress:
    """The order's row as the claim left it, or as this process wrote it since (another of its
    deliveries noted a wait while F&O had this message): the forward's transaction, guarded by the
    row's ETag, finds out which is right, and a read is needed only when neither is."""
    if not progress.etag:
        return progress
    known = ports.gate.known(progress.company, progress.order)
    return known if known is not None and known.etag and known.etag != progress.etag else progress


def _held_then(ports: Ports, row: Progress, progress: Progress | None, look: HeldLook | None) -> list[LedgerEntry] | None:
    """The order's held index as known when the forward's transaction found the order's `row` as it
    expected (None: unknown, the wake-up queries it): the look taken after the claim when the row was
    as the claim left it (`progress`), else what this process knew of it at that row's ETag."""
    if row is progress:
        return look.looked if look is not None else None
    return ports.recent.held_at(row.company, row.order, row.etag)


#: Operations an entity-group transaction may hold (Table Storage's limit).
_TRANSACTION_OPERATIONS = 100


def genealogy_with(ports: Ports, company: str, edges: list[Edge], others: int) -> list[Companion]:
    """The genealogy's rows to write in the forward's transaction beside `others` operations. When
    they cannot go with it (more than a transaction holds), they are recorded now, apart, and first:
    should the worker stop before Forwarded is recorded, the message is in doubt and its settlement
    writes the same (idempotent) rows again; never a Forwarded row without its genealogy."""
    if not edges:
        return []
    written = lineage_rows(edges)
    partition = ledger_partition(company)
    if len(written) + others <= _TRANSACTION_OPERATIONS and all(r[1]["PartitionKey"] == partition for r in written):
        return written
    record(lambda: ports.lineage.record(edges))
    return []


def wake_behind(
    ports: Ports, entry: LedgerEntry, why: str, progress: Progress | None = None, looked: list[LedgerEntry] | None = None
) -> None:
    """Wake what the gate holds behind `entry` (`progress`: the order's row as the forward wrote it;
    `looked`: the held index as a `HeldLook` found it, when nothing was held since). The message itself
    is done: a failure here is logged, and the order's `held` flag makes its next watermark move look again."""
    try:
        record(
            lambda: wake(
                ports.ledger,
                ports.gate,
                ports.requeue,
                entry.company,
                entry.production_order,
                why,
                progress,
                ports.recent,
                looked,
            )
        )
    except BridgeError as exc:
        ports.log.warning("could not wake the successors of %s: %s", entry.message_id, exc.message)


def catch_up(ledger: LedgerStore, gate: OrderGate, lineage: LineageStore, requeue: Requeue, entry: LedgerEntry, why: str) -> None:
    """What a forward records after F&O accepted, for a message F&O applied while the bridge was in
    doubt (its processed event, a read of F&O, or an operator who checked): the order's watermark,
    the genealogy, and the wake-up of what the gate held behind it."""
    catch_up_together(ledger, gate, lineage, requeue, [entry], why)


def catch_up_together(
    ledger: LedgerStore, gate: OrderGate, lineage: LineageStore, requeue: Requeue, entries: list[LedgerEntry], why: str
) -> None:
    """`catch_up` for the MES messages of one order and flow that F&O applied as one message: each
    one's genealogy, the order's watermark past the last of them, and one wake-up after it."""
    first = entries[0]
    sequences = [e.sequence for e in entries if e.sequence is not None]
    if first.production_order:
        gate.advance(first.company, first.production_order, step_of(first.flow), max(sequences) if sequences else None)
    edges = [Edge(**edge) for entry in entries for edge in entry.extra.get("Lineage", [])]
    if edges:
        lineage.record(edges)
    if first.production_order:
        wake(ledger, gate, requeue, first.company, first.production_order, why)


def record(write: Callable[[], Any]) -> Any:
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


# --- parked -------------------------------------------------------------------------------------


def park(
    arrival: Arrival,
    entry: LedgerEntry,
    reason: ParkReason,
    detail: str,
    *,
    infolog: str = "",
    fo_ms: float = 0.0,
    extra: dict[str, Any] | None = None,
    companions: list[Companion] | None = None,
    **changes: Any,
) -> Result:
    """Move the row to Parked for an operator, with the reason and what F&O said."""
    parked = record(
        lambda: arrival.ports.ledger.transition(
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
    return arrival.result(parked, Outcome.PARKED, reason, detail, fo_ms)


def park_refused(arrival: Arrival, reason: ParkReason, detail: str) -> Result:
    """Park a message refused as read, under what it says of itself, with its payload. Only the
    operator's resubmission moves a row that exists; any other copy is a duplicate or a changed copy."""
    identity, ledger = arrival.identity, arrival.ports.ledger
    body = arrival.delivery.body
    entry = LedgerEntry(
        company=identity.company,
        message_id=identity.message_id,
        state=State.PARKED,
        flow=arrival.flow.name,
        reason=reason,
        detail=detail,
        production_order=identity.order,
        sequence=identity.sequence,
        correlation_id=identity.correlation_id,
        payload_hash=arrival.payload_hash,
        payload_size=len(body),
    )
    try:
        created = ledger.create(entry, payload=body)
    except LostRace:
        existing = ledger.get(identity.company, identity.message_id)
        resubmitted = existing is not None and arrival.resubmits(existing)
        if existing is not None and not resubmitted and arrival.changed_copy(existing):
            return park_changed_copy(arrival, existing)
        if existing is None or not resubmitted:
            return arrival.result(existing or entry, Outcome.DUPLICATE, NotParked.DUPLICATE, "this message was recorded before")
        created = ledger.transition(token_spent(existing), State.PARKED, reason=reason, detail=detail, payload=body)
    return arrival.result(created, Outcome.PARKED, reason, detail)


def park_changed_copy(arrival: Arrival, existing: LedgerEntry) -> Result:
    """Keep a changed copy apart, on a row of its own that names the first: neither replaces the other.
    Its id derives from its content, so a redelivery of the same copy finds that row."""
    identity, ledger = arrival.identity, arrival.ports.ledger
    digest = arrival.payload_hash
    detail = (
        f"message id {existing.message_id} arrived before with other content (that copy is {existing.state.value}); "
        "this copy was kept apart and not sent to F&O"
    )
    entry = LedgerEntry(
        company=existing.company,
        message_id=f"{existing.message_id}|conflict-{digest[:16]}",
        state=State.PARKED,
        flow=arrival.flow.name,
        reason=ParkReason.CONFLICT,
        detail=detail,
        production_order=identity.order,
        sequence=identity.sequence,
        correlation_id=identity.correlation_id,
        payload_hash=digest,
        payload_size=len(arrival.delivery.body),
        extra={"Conflict": "message_id", "ConflictsWith": existing.message_id},
    )
    try:
        created = ledger.create(entry, payload=arrival.delivery.body)
    except LostRace:
        kept = ledger.get(entry.company, entry.message_id)
        return arrival.result(kept or entry, Outcome.DUPLICATE, NotParked.DUPLICATE, "this conflicting copy was recorded before")
    return arrival.result(created, Outcome.PARKED, ParkReason.CONFLICT, detail)


# --- in doubt -----------------------------------------------------------------------------------


def park_in_doubt(attempt: Attempt, entry: LedgerEntry, call: FoCall, detail: str, fo_ms: float = 0.0) -> Result:
    """Park a send that may have been applied. Indexed by its content, so that F&O's processed event
    settles it without an operator; the bookkeeping a forward does waits in the row until then.
    Where a read of F&O can tell, the bridge checks by itself after the window (shared/inbound/in_doubt.py)."""
    if aggregate.FO_MESSAGE in entry.extra:
        return park_stranded_group(attempt, entry, detail)
    call_type, hashed, index_row = indexed(entry, call)
    extra = {**entry.extra, "ContentHash": hashed, "Lineage": [asdict(edge) for edge in attempt.flow.lineage(attempt.event)]}
    parked = park(
        attempt, entry, ParkReason.IN_DOUBT, detail, fo_ms=fo_ms, extra=extra, companions=index_row, fo_message_type=call_type
    )
    if in_doubt.decidable(attempt.flow.step) and attempt.event.production_order:
        attempt.schedule(entry, attempt.ports.settings.in_doubt_check_after_s, in_doubt_check=True)
    return parked


# --- one F&O message for several MES messages (shared/inbound/aggregate.py) ---------------------


def forwarded_group(attempt: Attempt, group: aggregate.Group, progress: Progress, fo_ms: float, look: HeldLook) -> Result:
    """F&O accepted the merged message: every member Forwarded with the order's watermark past the last
    one and each member's genealogy in one transaction (the content index went with the claim),
    and the wake-up of what the gate holds behind them (`look`: the held index as the group found it)."""
    ports, flow = attempt.ports, attempt.flow
    call_type = group.call.message_type
    edges = [edge for member in group.members for edge in flow.lineage(member.event)]
    genealogy = genealogy_with(ports, group.head.entry.company, edges, len(group.members) + 1)
    last = group.members[-1]
    row = _as_written_since(ports, progress)
    planned = ports.gate.plan_advance(row, flow.step, last.event.sequence)
    detail = f"{call_type} (one F&O message for {len(group.members)} MES messages)"

    def forward(together: bool) -> list[LedgerEntry]:
        moves = [
            (
                m.entry,
                State.FORWARDED,
                {
                    "detail": detail,
                    "fo_message_type": call_type,
                    "lease_until": None,
                    "extra": {**m.entry.extra, "FoReference": "", "FoMs": round(fo_ms, 1)},
                },
            )
            for m in group.members
        ]
        companions = [*([planned] if together and planned is not None else []), *genealogy]
        return ports.ledger.transition_together(moves, companions or None)

    after: Progress | None = None
    looked: list[LedgerEntry] | None = None
    try:
        try:
            done: list[LedgerEntry] = record(lambda: forward(True))
            if planned is not None and done[0].companion_etags:
                # The order's row as written (the gate spares the next read), and unchanged since the
                # claim, before the group's look: nothing was held since.
                after = ports.gate.stored(ports.gate.advanced(row, flow.step, last.event.sequence), done[0].companion_etags[0])
                looked = _held_then(ports, row, progress, look)
        except CompanionConflict:
            # Only the order's row can have changed (the genealogy's rows are upserts): it moves apart.
            done = record(lambda: forward(False))
            record(lambda: ports.gate.advance(done[0].company, attempt.order, flow.step, last.event.sequence))
    except LostRace:
        if genealogy:  # F&O has the message: its genealogy is kept whoever settles the rows
            record(lambda: ports.lineage.record(edges))
        # F&O's processed event came first and settled the members (with their bookkeeping): the head's
        # delivery finds its row settled; the others are told here, or nothing would say what became of
        # them until their own look-again came back.
        for member in group.members[1:]:
            now = ports.ledger.get(member.entry.company, member.entry.message_id)
            if now is not None and now.state in FINAL_STATES:
                result = attempt.result(now, Outcome.DUPLICATE, NotParked.DUPLICATE, f"already {now.state.value}")
                log_outcome(ports.log, flow.name, result, duration_ms=0.0, delivery_count=0)
        raise
    for entry in done:
        # Each member waited, so each has a look-again copy coming: this process answers it unread.
        ports.recent.finished(entry)
    for entry in done[1:]:
        result = attempt.result(entry, Outcome.FORWARDED, fo_ms=fo_ms)
        log_outcome(ports.log, flow.name, result, duration_ms=0.0, delivery_count=0)
    # They waited: the next in sequence resumes now.
    wake_behind(ports, done[-1], f"{done[-1].message_id} was forwarded", after, looked)
    return attempt.result(done[0], Outcome.FORWARDED, fo_ms=fo_ms)


def park_group_in_doubt(attempt: Attempt, members: list[tuple[LedgerEntry, MesEvent]], detail: str, fo_ms: float = 0.0) -> Result:
    """In doubt applies to the whole F&O message: every member parks, already indexed by the merged
    content's hash (written with the claim), so F&O's processed event settles them all."""
    ports, flow = attempt.ports, attempt.flow
    moves = [
        (
            entry,
            State.PARKED,
            {
                "reason": ParkReason.IN_DOUBT,
                "detail": detail,
                "lease_until": None,
                "extra": {**entry.extra, "Lineage": [asdict(edge) for edge in flow.lineage(event)]},
            },
        )
        for entry, event in members
    ]
    parked: list[LedgerEntry] = record(lambda: ports.ledger.transition_together(moves))
    for entry in parked[1:]:
        result = attempt.result(entry, Outcome.PARKED, ParkReason.IN_DOUBT, detail)
        log_outcome(ports.log, flow.name, result, duration_ms=0.0, delivery_count=0)
    return attempt.result(parked[0], Outcome.PARKED, ParkReason.IN_DOUBT, detail, fo_ms)


def park_stranded_group(attempt: Attempt, entry: LedgerEntry, detail: str) -> Result:
    """A member of a merged message found Forwarding after its worker stopped: the whole F&O message
    is in doubt. Its members held by nobody park with it (one a live worker holds is left to it); the
    merged hash and the content index were written with the claim."""
    ports, flow = attempt.ports, attempt.flow
    members: list[tuple[LedgerEntry, MesEvent]] = [(entry, attempt.event)]
    for message_id in aggregate.members_of(entry):
        if message_id == entry.message_id:
            continue
        other = ports.ledger.get(entry.company, message_id)
        body = ports.ledger.payload(entry.company, message_id) if other is not None else None
        held = other is not None and other.lease_until is not None and other.lease_until > ports.clock()
        if other is None or body is None or other.state is not State.FORWARDING or held:
            continue
        if aggregate.head_of(other) != aggregate.head_of(entry):
            continue
        members.append((other, flow.event.model_validate_json(body)))
    try:
        return park_group_in_doubt(attempt, members, detail)
    except LostRace:
        # Another member's copy parked one of them meanwhile: park this one, as part of the same message.
        return park_group_in_doubt(attempt, members[:1], detail)


def check_in_doubt(attempt: Attempt) -> Result:
    """The bridge's own check of an in-doubt message, once F&O's processed event had its window."""
    ports, company, message_id = attempt.ports, attempt.identity.company, attempt.event.message_id
    entry = ports.ledger.get(company, message_id)
    if entry is None or entry.state is not State.PARKED or entry.reason != ParkReason.IN_DOUBT:
        settled = entry or LedgerEntry(company=company, message_id=message_id, state=State.DUPLICATE)
        return attempt.result(settled, Outcome.DUPLICATE, NotParked.DUPLICATE, "settled before the bridge's check")
    try:
        reading = in_doubt.read(ports.fo, company, attempt.flow.step, attempt.order)
    except (Transient, AuthError, ConfigError, NotFound) as exc:
        attempt.schedule(entry, ports.settings.retry_first_wait_s)
        return attempt.result(entry, Outcome.RETRYING, exc.reason, f"checking F&O: {exc.message}")
    if reading.applied:
        catch_up(ports.ledger, ports.gate, ports.lineage, ports.requeue, entry, f"the bridge found {entry.message_id} in F&O")
        try:
            confirmed = ports.ledger.transition(
                entry, State.FORWARDED, reason="", detail=f"confirmed by the bridge: {reading.checked}", lease_until=None
            )
        except LostRace:
            return attempt.result(entry, Outcome.DUPLICATE, NotParked.DUPLICATE, "settled during the bridge's check")
        return attempt.result(confirmed, Outcome.FORWARDED, detail=f"in doubt, confirmed: {reading.checked}")
    detail = (
        f"{entry.detail}; the bridge read F&O after {ports.settings.in_doubt_check_after_s:g} s without a processed event: "
        f"{reading.checked}, which cannot tell whether F&O still holds the message; check Message processor messages"
    )
    try:
        kept = ports.ledger.transition(
            entry, State.PARKED, reason=ParkReason.IN_DOUBT, detail=detail, extra={**entry.extra, "Checked": reading.checked}
        )
    except LostRace:
        return attempt.result(entry, Outcome.DUPLICATE, NotParked.DUPLICATE, "settled during the bridge's check")
    return attempt.result(kept, Outcome.PARKED, ParkReason.IN_DOUBT, detail)


# --- waiting ------------------------------------------------------------------------------------


def wait(attempt: Arrival, waiting: LedgerEntry, detail: str, *, wakes: bool = False) -> Result:
    """The gate holds it: look again later, at a delay that grows with each wait."""
    settings = attempt.ports.settings
    delay = min(settings.gate_max_wait_s, settings.gate_first_wait_s * 2 ** min(attempt.next_copy - 1, 16))
    if wakes:
        # The watermark move that ends the wait puts the message back at once (shared/inbound/wakeup.py):
        # its own copy only has to look again when the gap timeout could have passed.
        delay = min(settings.gate_max_wait_s, max(delay, settings.gate_gap_timeout_s))
    attempt.schedule(waiting, delay)
    return attempt.result(waiting, Outcome.WAITING, NotParked.ORDERING, detail)


def step_aside(attempt: Attempt, claimed: LedgerEntry, budget_wait_s: float) -> Result | None:
    """Give the claimed message's turn back for its successors to join it (`aggregate.steps_aside`):
    `Waiting` in the order gate again, and a copy at once, behind them on its session. None when the
    row cannot be written now: it is sent at once instead, as it would have been."""
    order = attempt.order
    detail = (
        f"F&O's budget had no slot for {budget_wait_s:.1f} s: waits for the next messages of {order} on its "
        "queue, which may go to F&O with it"
    )
    try:
        ledger = attempt.ports.ledger
        waiting = ledger.transition(claimed, State.WAITING, reason=NotParked.ORDERING, detail=detail, lease_until=None)
    except Transient:
        return None
    attempt.schedule(waiting, 0)
    attempt.ports.recent.woken(waiting)  # its copy starts from the row written here
    attempt.ports.recent.waiting(waiting, attempt.delivery.body)
    return attempt.result(waiting, Outcome.WAITING, NotParked.ORDERING, detail)


def retry_later(attempt: Arrival, entry: LedgerEntry, error: BridgeError) -> Result:
    """A fault worth waiting out: Waiting with a growing delay, parked once the retry window closes."""
    ports, settings = attempt.ports, attempt.ports.settings
    now = attempt.ports.clock()
    received = entry.received_at or now
    if now - received > timedelta(seconds=settings.retry_give_up_after_s):
        return park(
            attempt,
            entry,
            ParkReason.RETRIES_EXHAUSTED,
            f"still failing after {settings.retry_give_up_after_s:g} s: {error.message}",
        )
    retries = int(entry.extra.get("Retries", 0)) + 1
    delay = backoff_s(settings, retries)
    if isinstance(error, (AuthError, ConfigError)):
        ports.log.error("F&O refused the bridge's credentials: %s", error.message, extra={"flow": entry.flow, "outcome": "auth"})
        delay = settings.retry_max_wait_s
    waiting = record(
        lambda: ports.ledger.transition(
            entry,
            State.WAITING,
            reason=error.reason,
            detail=error.message,
            lease_until=None,
            extra={**entry.extra, "Retries": retries},
        )
    )
    attempt.schedule(waiting, delay)
    return attempt.result(waiting, Outcome.RETRYING, error.reason, error.message)


def backoff_s(settings: Settings, retries: int) -> float:
    """The one retry policy's wait before retry number `retries`: doubling from RETRY_FIRST_WAIT_S to RETRY_MAX_WAIT_S."""
    return float(min(settings.retry_max_wait_s, settings.retry_first_wait_s * 2 ** min(retries - 1, 20)))


def storage_unavailable(arrival: Arrival, error: Transient) -> Result:
    """Table Storage failed under this delivery (an outage, a restart) and nothing could be recorded:
    the message is put back on its queue with the retry policy's growing delay, as `retry_later` does
    for a row. Raising instead would abandon it, and the broker redelivers at once: ten deliveries in
    a few milliseconds, then the dead-letter queue, for every message that arrived during a restart.

    The copy keeps the delivery's properties, so it is read as the original was (a message from the
    MES is still checked against what its id said first), and counts the copies and since when on two
    of its own. Past RETRY_GIVE_UP_AFTER_S the error goes to the broker: its delivery count, then its
    dead-letter queue, which keeps the message with the reason for an operator."""
    delivery, ports = arrival.delivery, arrival.ports
    now = ports.clock()
    since = _when(delivery.properties.get(STORAGE_FAILING_SINCE)) or now
    if now - since > timedelta(seconds=ports.settings.retry_give_up_after_s):
        raise error
    retries = int(delivery.properties.get(STORAGE_RETRIES, 0)) + 1
    delay = backoff_s(ports.settings, retries)
    original = arrival.original_id
    properties = {
        **delivery.properties,
        ORIGINAL_ID: original,
        STORAGE_FAILING_SINCE: since.isoformat(),
        STORAGE_RETRIES: retries,
    }
    # A fresh broker id per copy (duplicate detection would drop a copy with the old one).
    arrival.put_back(f"{original}|storage-{retries}", delay, properties, delivery.correlation_id)
    identity = arrival.identity
    detail = f"{error.message}; put back for {delay:g} s (copy {retries}, Table Storage failing since {since.isoformat()})"
    return Result(
        Outcome.RETRYING, identity.company, identity.message_id, error.reason, detail, identity.order, identity.correlation_id
    )


def _when(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def still_in_flight(attempt: Arrival, existing: LedgerEntry) -> Result:
    """Another worker holds the row now. Look again after its lease: if it crashed, this copy
    finishes the job. Look again at the retry cadence, and never later than just after its lease runs out."""
    settings = attempt.ports.settings
    lease_until = existing.lease_until
    remaining = (lease_until - attempt.ports.clock()).total_seconds() if lease_until else settings.message_lock_budget_s
    attempt.schedule(existing, max(0.05, min(remaining + 1.0, settings.retry_first_wait_s)))
    return attempt.result(existing, Outcome.WAITING, NotParked.IN_FLIGHT, "another worker is forwarding this message")
