"""What an operator does to a stuck message, in one place for the HTTP functions and the CLI."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from shared.ledger import Ledger, LedgerEntry, LostRace, State, utcnow
from shared.lineage import Lineage
from shared.ordering import OrderGate, Progress
from shared.pipeline import catch_up
from shared.servicebus import RESUBMIT, DeadLetters, Requeue
from shared.topology import INBOUND_QUEUES


class OperationError(Exception):
    """The operation cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class Resubmitted:
    entry: LedgerEntry
    queue: str


def resubmit(
    ledger: Ledger,
    requeue: Requeue,
    company: str,
    message_id: str,
    *,
    payload: bytes | None = None,
    who: str = "operator",
    note: str = "",
) -> Resubmitted:
    """Send a parked message through the pipeline again, optionally with a corrected payload.

    The original payload stays in the ledger history; a resubmission is admitted once (its token
    must match the row's), so resubmitting twice still has one effect in F&O.
    """
    entry = ledger.get(company, message_id)
    if entry is None:
        raise OperationError(f"no message {message_id} of {company} in the ledger")
    if entry.state is not State.PARKED:
        raise OperationError(f"message {message_id} is {entry.state.value}; only parked messages can be resubmitted")
    if entry.extra.get("Conflict") == "message_id":
        raise OperationError(
            f"message {message_id} is a changed copy of {entry.extra.get('ConflictsWith')}, which F&O already has: it cannot "
            "be sent under that id. Cancel it (and correct F&O by hand if this copy was the right one), or have the MES "
            "send the correction under a new message id"
        )
    original = ledger.payload(company, message_id) or b""
    body = payload if payload is not None else original
    token = secrets.token_hex(8)
    extra = {**entry.extra, "ResubmitToken": token, "Resubmissions": int(entry.extra.get("Resubmissions", 0)) + 1}
    if payload is not None and payload != original:
        extra["EditedBy"] = who
    detail = f"resubmitted by {who}" + (f": {note}" if note else "") + (" with an edited payload" if payload is not None else "")
    updated = ledger.transition(entry, State.PARKED, reason=entry.reason, detail=detail, extra=extra)
    queue = INBOUND_QUEUES.get(entry.flow)
    if queue is None:
        raise OperationError(f"message {message_id} belongs to no inbound flow ({entry.flow!r})")
    requeue.schedule(
        queue,
        body,
        message_id=f"{message_id}|resubmit-{token}",
        session_id=entry.production_order or "no-order",
        delay_s=0,
        correlation_id=entry.correlation_id or None,
        properties={RESUBMIT: token},
    )
    return Resubmitted(updated, queue)


def release_gap(
    gate: OrderGate, ledger: Ledger, requeue: Requeue, company: str, order: str, missing: int, reason: str, who: str = "operator"
) -> tuple[Progress, list[Resubmitted]]:
    """Skip a sequence number the MES will never send, and resubmit what was parked waiting for it.

    The watermark jumps to just below the next sequence number the ledger holds for the order (a
    parked or waiting message), so a MES that numbers sparsely needs one release per hole, not one
    per missing number."""
    if not reason.strip():
        raise OperationError("releasing a gap needs a reason")
    present = [
        e.sequence
        for e in ledger.query(company=company, production_order=order)
        if e.sequence is not None and e.sequence > missing and e.state in (State.PARKED, State.WAITING, State.FORWARDING)
    ]
    try:
        progress = gate.release_gap(company, order, missing, reason, who, through=min(present) - 1 if present else None)
    except ValueError as exc:
        raise OperationError(str(exc)) from None
    parked = [
        e for e in ledger.query(company=company, production_order=order, state=State.PARKED) if e.reason in ("gap", "no_start")
    ]
    return progress, [resubmit(ledger, requeue, company, e.message_id, who=who, note=f"gap {missing} released") for e in parked]


# --- what operators read ---------------------------------------------------------------------------


def describe(entry: LedgerEntry) -> dict[str, Any]:
    """One ledger row as operators see it (the same dict for HTTP and the CLI)."""
    return {
        "company": entry.company,
        "message_id": entry.message_id,
        "flow": entry.flow,
        "state": entry.state.value,
        "reason": entry.reason,
        "detail": entry.detail,
        "infolog": entry.infolog,
        "attempts": entry.attempts,
        "production_order": entry.production_order,
        "sequence": entry.sequence,
        "correlation_id": entry.correlation_id,
        "fo_message_type": entry.fo_message_type,
        "fo_reference": entry.extra.get("FoReference", ""),
        "received_at": entry.received_at.isoformat() if entry.received_at else None,
        "updated_at": entry.updated_at.isoformat() if entry.updated_at else None,
        "payload_size": entry.payload_size,
        "history": list(entry.history),
    }


def _payload_text(ledger: Ledger, company: str, message_id: str) -> str:
    return (ledger.payload(company, message_id) or b"")[:_SHOWN_PAYLOAD].decode("utf-8", errors="replace")


_SHOWN_PAYLOAD = 16_384


def with_conflict(ledger: Ledger, entry: LedgerEntry) -> dict[str, Any]:
    """`describe`, and for a conflict both payloads side by side: this message's and the one it
    conflicts with (None when no message holds what it conflicts with, e.g. a released gap)."""
    described = describe(entry)
    if entry.reason != "conflict":
        return described
    other_id = str(entry.extra.get("ConflictsWith") or "")
    other = ledger.get(entry.company, other_id) if other_id else None
    described["payload"] = _payload_text(ledger, entry.company, entry.message_id)
    described["conflicts_with"] = (
        {
            "message_id": other.message_id,
            "state": other.state.value,
            "payload": _payload_text(ledger, other.company, other.message_id),
        }
        if other is not None
        else None
    )
    return described


def trace(ledger: Ledger, company: str, message_id: str) -> dict[str, Any]:
    entry = ledger.get(company, message_id)
    if entry is None:
        raise OperationError(f"no message {message_id} of {company} in the ledger")
    return with_conflict(ledger, entry)


def order_story(ledger: Ledger, company: str, order: str) -> list[dict[str, Any]]:
    """Every message of a production order, in MES sequence (then in arrival order)."""
    entries = list(ledger.query(company=company, production_order=order))
    entries.sort(key=lambda e: (e.sequence is None, e.sequence or 0, e.received_at.isoformat() if e.received_at else ""))
    return [describe(e) for e in entries]


@dataclass(frozen=True)
class ParkedFilter:
    company: str | None = None
    flow: str | None = None
    reason: str | None = None
    production_order: str | None = None
    older_than_s: float | None = None
    max_attempts: int | None = None

    def matches(self, entry: LedgerEntry) -> bool:
        if self.reason is not None and entry.reason != self.reason:
            return False
        if self.max_attempts is not None and entry.attempts > self.max_attempts:
            return False
        if self.older_than_s is not None:
            since = entry.updated_at or entry.received_at
            if since is None or (utcnow() - since).total_seconds() < self.older_than_s:
                return False
        return True


def parked(ledger: Ledger, where: ParkedFilter) -> list[dict[str, Any]]:
    entries = ledger.query(company=where.company, state=State.PARKED, flow=where.flow, production_order=where.production_order)
    return [with_conflict(ledger, e) for e in entries if where.matches(e)]


def resubmit_matching(ledger: Ledger, requeue: Requeue, where: ParkedFilter, who: str = "operator") -> list[dict[str, Any]]:
    """Resubmit every parked message the filter selects (all of them with an empty filter)."""
    done = []
    for row in parked(ledger, where):
        result = resubmit(ledger, requeue, row["company"], row["message_id"], who=who, note="resubmitted by filter")
        done.append(describe(result.entry))
    return done


def cancel(ledger: Ledger, company: str, message_id: str, reason: str, who: str = "operator") -> dict[str, Any]:
    """Decide that a parked or waiting message must never reach F&O."""
    if not reason.strip():
        raise OperationError("cancelling needs a reason")
    entry = ledger.get(company, message_id)
    if entry is None:
        raise OperationError(f"no message {message_id} of {company} in the ledger")
    if entry.state not in (State.PARKED, State.WAITING):
        raise OperationError(f"message {message_id} is {entry.state.value}; only parked or waiting messages can be cancelled")
    try:
        cancelled = ledger.transition(entry, State.CANCELLED, reason="cancelled", detail=f"cancelled by {who}: {reason}")
    except LostRace:
        raise OperationError(f"message {message_id} changed meanwhile; look again") from None
    return describe(cancelled)


def confirm_applied(
    ledger: Ledger, gate: OrderGate, tree: Lineage, company: str, message_id: str, note: str, who: str = "operator"
) -> dict[str, Any]:
    """An in-doubt message the operator found in F&O (Message processor messages): record it as
    forwarded, move the order's watermark past it and write its genealogy, as the forward would have."""
    if not note.strip():
        raise OperationError("confirming needs a note (where F&O shows the message)")
    entry = ledger.get(company, message_id)
    if entry is None:
        raise OperationError(f"no message {message_id} of {company} in the ledger")
    if entry.state is not State.PARKED or entry.reason != "in_doubt":
        raise OperationError(f"message {message_id} is {entry.state.value} {entry.reason}; only in-doubt messages are confirmed")
    catch_up(gate, tree, entry)
    try:
        confirmed = ledger.transition(
            entry, State.FORWARDED, reason="", detail=f"confirmed in F&O by {who}: {note}", lease_until=None
        )
    except LostRace:
        raise OperationError(f"message {message_id} changed meanwhile; look again") from None
    return describe(confirmed)


def lineage(tree: Lineage, company: str, item: str, batch: str, direction: str, depth: int = 5) -> dict[str, Any]:
    if direction not in ("upstream", "downstream"):
        raise OperationError("direction is upstream or downstream")
    depth = max(1, min(depth, 20))
    walk = tree.upstream if direction == "upstream" else tree.downstream
    return {"direction": direction, "depth": depth, "root": walk(company, item, batch, depth)}


# --- what the broker gave up on -----------------------------------------------------------------------


def dead_lettered(port: DeadLetters, flow: str | None = None) -> list[dict[str, Any]]:
    """Dead-lettered messages of every inbound flow (or one), with the broker's reason."""
    flows = [flow] if flow else list(INBOUND_QUEUES)
    if any(f not in INBOUND_QUEUES for f in flows):
        raise OperationError(f"unknown flow {flow}; flows: {', '.join(INBOUND_QUEUES)}")
    return [
        {
            "flow": f,
            "queue": m.queue,
            "sequence_number": m.sequence_number,
            "message_id": m.message_id,
            "session_id": m.session_id,
            "reason": m.reason,
            "description": m.description,
            "delivery_count": m.delivery_count,
            "body": m.body[:2000].decode("utf-8", errors="replace"),
        }
        for f in flows
        for m in port.dead_lettered(INBOUND_QUEUES[f])
    ]


def resubmit_dead_lettered(port: DeadLetters, flow: str, sequence_number: int) -> dict[str, Any]:
    """Put a dead-lettered message back on its queue: it goes through the pipeline (and its ledger) again."""
    if flow not in INBOUND_QUEUES:
        raise OperationError(f"unknown flow {flow}")
    try:
        port.resubmit_dead_lettered(INBOUND_QUEUES[flow], sequence_number)
    except LookupError as exc:
        raise OperationError(str(exc)) from None
    return {"flow": flow, "sequence_number": sequence_number, "resubmitted": True}
