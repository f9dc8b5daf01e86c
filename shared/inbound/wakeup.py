"""Gap wake-up: when an order's watermark moves, the messages the order gate holds resume by themselves.

The gate holds a message two ways: it waits (a copy rescheduled with a growing delay) or, once the
gap timeout passed, it is parked as `gap` (or `no_start`). Whatever moves the watermark (a forward,
F&O's processed event or an operator confirming an in-doubt message, a released gap) calls `wake`:
the held message(s) right after the new watermark are put back on their queue at once, a parked
one with a resubmission token (the pipeline admits it once), a waiting one as an immediate copy
(its rescheduled copy, when it comes, finds it forwarded and is a duplicate). Only the next in
sequence is woken; its own forward wakes the one after it, so the order resumes in MES order.

The progress row's `held` flag says that something of the order is parked by the gate, so that a
forward looks in the ledger only when there is something to wake.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from shared.inbound.attempt import RESUBMIT_TOKEN
from shared.inbound.order_gate import OrderGate, Progress
from shared.inbound.recent import Recent
from shared.inbound.servicebus import ATTEMPT, RESUBMIT, Requeue
from shared.reasons import NotParked, ParkReason
from shared.store.ledger import LedgerEntry, LedgerStore, LostRace, State
from shared.topology import INBOUND_QUEUES

#: Set on the copies `wake` schedules (the reason it was woken), for the telemetry and the tests.
WAKE = "mesbridge-wake"

#: The reasons the order gate parks a message with: each ends when the watermark reaches it.
GATE_PARKED = (ParkReason.GAP, ParkReason.NO_START)


@dataclass(frozen=True)
class Resubmitted:
    entry: LedgerEntry
    queue: str


def held_by_gate(entry: LedgerEntry) -> bool:
    return (entry.state is State.PARKED and entry.reason in GATE_PARKED) or (
        entry.state is State.WAITING and entry.reason == NotParked.ORDERING
    )


def requeue_parked(ledger: LedgerStore, requeue: Requeue, entry: LedgerEntry, body: bytes, detail: str) -> Resubmitted:
    """Put a parked row's message back on its queue with a fresh resubmission token: the pipeline
    admits the copy that carries the row's token once, any other copy is a duplicate."""
    queue = INBOUND_QUEUES.get(entry.flow)
    if queue is None:
        raise ValueError(f"message {entry.message_id} belongs to no inbound flow ({entry.flow!r})")
    token = secrets.token_hex(8)
    extra = {**entry.extra, RESUBMIT_TOKEN: token, "Resubmissions": int(entry.extra.get("Resubmissions", 0)) + 1}
    updated = ledger.transition(entry, State.PARKED, reason=entry.reason, detail=detail, extra=extra)
    requeue.schedule(
        queue,
        body,
        message_id=f"{entry.message_id}|resubmit-{token}",
        session_id=entry.production_order or "no-order",
        delay_s=0,
        correlation_id=entry.correlation_id or None,
        properties={RESUBMIT: token},
    )
    return Resubmitted(updated, queue)


class HeldLook:
    """The order's held index, queried at most once in a delivery: the aggregation's look for
    successors to take along (shared/inbound/aggregate.py) and the wake-up after the forward share it.

    The wake-up may take the look instead of querying again only when nobody wrote the order's row
    between the look and the forward: every wait noted, park and release writes that row, so the
    forward's transaction, guarded by the ETag the row had before the look, proves that nothing new
    was held meanwhile. What left the held states since is filtered out when its row is read."""

    def __init__(
        self, ledger: LedgerStore, company: str, order: str, recent: Recent | None = None, progress: Progress | None = None
    ) -> None:
        self._ledger, self._company, self._order, self._recent = ledger, company, order, recent
        # What this process knows of the index while the order's row is as the claim left it is the
        # index itself (shared/inbound/recent.py): no query then.
        known = recent.held_at(company, order, progress.etag) if recent is not None and progress is not None else None
        self.looked: list[LedgerEntry] | None = known

    def rows(self) -> list[LedgerEntry]:
        if self.looked is None:
            self.looked = self._ledger.held_rows(self._company, self._order)
        return self.looked

    def read(self, chosen: list[LedgerEntry]) -> list[tuple[LedgerEntry, bytes]]:
        return read_held(self._ledger, self._recent, self._company, chosen)


def read_held(
    ledger: LedgerStore, recent: Recent | None, company: str, chosen: list[LedgerEntry]
) -> list[tuple[LedgerEntry, bytes]]:
    """`chosen` (as the held index describes them) as they are, each with its body, in order: a Waiting
    row this process wrote is taken from `recent` (its ETag guards the copy or the claim that uses it;
    one that changed since fails that and is read again), any other is read from the ledger."""
    found: list[tuple[LedgerEntry, bytes]] = []
    for described in chosen:
        kept = recent.waiting_row(company, described.message_id) if recent is not None else None
        if kept is not None and described.state is State.WAITING and kept[0].production_order == described.production_order:
            found.append(kept)
        else:
            found += ledger.read_held(company, [described])
    return found


def _next_up(progress: Progress, held: list[LedgerEntry]) -> list[LedgerEntry]:
    """The held messages to put back now: the next sequence number, and (once the order started)
    those without a sequence number that waited for the start. When the next number is not there
    (a new hole), the ones parked for a hole that is filled now go back to the gate: they wait for
    the new one and, if it never comes, park again naming it."""
    after = progress.watermark + 1
    ready = [e for e in held if e.sequence is not None and e.sequence == after]
    if not ready:
        ready = [e for e in held if e.state is State.PARKED and e.reason == ParkReason.GAP and _missing(e) <= progress.watermark]
    if progress.started:
        ready += [e for e in held if e.sequence is None]
    return ready


def _missing(entry: LedgerEntry) -> int:
    """The sequence number a `gap` row was parked for (past any watermark when unreadable: not stale)."""
    value = entry.extra.get("Missing")
    return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else 2**63


def wake(
    ledger: LedgerStore,
    gate: OrderGate,
    requeue: Requeue,
    company: str,
    order: str,
    why: str,
    progress: Progress | None = None,
    recent: Recent | None = None,
    looked: list[LedgerEntry] | None = None,
) -> list[Resubmitted]:
    """Resume what the gate holds of `order` that its watermark now lets through. Safe to repeat and
    to race: each row moves under its ETag, and a copy the pipeline does not expect is a duplicate.
    `progress` is the order's row as the caller just wrote it (else it is read); `recent` gives the
    waiting rows this process wrote and keeps each one put back, for its copy to start from
    (shared/inbound/recent.py); `looked` is the held index as the caller's `HeldLook` found it, when
    nothing was held since (else it is queried)."""
    if progress is None or not progress.etag:
        progress, looked = gate.read(company, order), None
    # Chosen from the held index (one query), then only the chosen rows are read: each is woken as
    # it is now, if it is still held by the gate.
    rows = looked if looked is not None else ledger.held_rows(company, order)
    held = [e for e in rows if held_by_gate(e)]
    if not any(e.state is State.PARKED for e in held) and progress.held:
        # Nothing parked any more: forwards stop looking. Guarded by the ETag read before the query,
        # so a park noted meanwhile keeps the flag.
        gate.clear_held(progress)
    elif recent is not None:
        # What the index says now, for the next move of the order to start from (the members of a
        # merged message the look found, and the forwarded message, are below the watermark now).
        still = [e for e in rows if e.sequence is None or e.sequence > progress.watermark]
        recent.looked(company, order, progress.etag, still)
    woken: list[Resubmitted] = []
    for entry, body in read_held(ledger, recent, company, _next_up(progress, held)):
        if not held_by_gate(entry):
            continue
        try:
            if entry.state is State.PARKED:
                woken.append(requeue_parked(ledger, requeue, entry, body, f"resumed by the bridge: {why}"))
            else:
                queue = INBOUND_QUEUES[entry.flow]
                if recent is not None:
                    recent.woken(entry)
                requeue.schedule(
                    queue,
                    body,
                    # One wake per watermark: repeating this step after a crash is dropped by duplicate detection.
                    message_id=f"{entry.message_id}|wake-{progress.watermark}"[:128],
                    session_id=entry.production_order or "no-order",
                    delay_s=0,
                    correlation_id=entry.correlation_id or None,
                    properties={ATTEMPT: 1, WAKE: why[:200]},
                )
                woken.append(Resubmitted(entry, queue))
        except LostRace:
            continue  # somebody moved it first (its own copy, another waker): nothing to do
    return woken
