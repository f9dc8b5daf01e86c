"""What an operator does to a stuck message, in one place for the HTTP functions and the CLI."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from shared.ledger import Ledger, LedgerEntry, State
from shared.ordering import OrderGate, Progress
from shared.servicebus import RESUBMIT, Requeue
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
    """Skip a sequence number the MES will never send, and resubmit what was parked waiting for it."""
    if not reason.strip():
        raise OperationError("releasing a gap needs a reason")
    try:
        progress = gate.release_gap(company, order, missing, reason, who)
    except ValueError as exc:
        raise OperationError(str(exc)) from None
    parked = [
        e for e in ledger.query(company=company, production_order=order, state=State.PARKED) if e.reason in ("gap", "no_start")
    ]
    return progress, [resubmit(ledger, requeue, company, e.message_id, who=who, note=f"gap {missing} released") for e in parked]
