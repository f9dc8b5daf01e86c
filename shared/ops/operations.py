"""What an operator does to a stuck message, in one place for the HTTP functions and the CLI."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from shared.clock import utcnow
from shared.inbound import aggregate, mapping
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.order_gate import OrderGate, Progress
from shared.inbound.servicebus import DeadLetters, Requeue
from shared.inbound.settlement import catch_up_together
from shared.inbound.wakeup import Resubmitted, requeue_parked, wake
from shared.reasons import Closed, ParkReason
from shared.store.ledger import LedgerEntry, LedgerStore, LostRace, State
from shared.store.lineage import LineageStore
from shared.store.tables import utf16_units
from shared.topology import INBOUND_QUEUES


class OperationError(Exception):
    """The operation cannot be done as asked; the message says why."""


class NoSuchMessage(OperationError):
    """The message the operation names does not exist: not in the ledger, or not among the
    dead-lettered (HTTP 404, not 400)."""


# One reply shape for both front ends (functions/operations_actions.py and shared/ops/cli.py): an
# operation's answer is the JSON these functions and the operations below return.


def error_reply(exc: OperationError) -> dict[str, str]:
    """What both front ends answer when an operation cannot be done (HTTP 400 or 404, the CLI exit 1)."""
    return {"error": str(exc)}


#: An operator's reason or note, in UTF-16 code units: it is stored (ledger detail, the order's
#: skipped sequences), so it is bounded where it enters rather than refused by the store.
MAX_NOTE_UNITS = 2000


SEQUENCE_REFUSAL = "sequence must be the message's sequence number"
MISSING_REFUSAL = "missing must be a sequence number"
DEPTH_REFUSAL = "depth must be a whole number"


def whole_number(raw: str | None, refusal: str) -> int:
    """A count or a sequence number typed by an operator, the same for both front ends. ASCII digits
    only: `str.isdigit` also accepts characters such as "²" that `int` refuses."""
    text = (raw or "").strip()
    if not (text.isascii() and text.isdigit()):
        raise OperationError(refusal)
    return int(text)


def _short(text: str, what: str) -> None:
    if utf16_units(text) > MAX_NOTE_UNITS:
        raise OperationError(f"{what} is {utf16_units(text)} UTF-16 code units; at most {MAX_NOTE_UNITS}")


def resubmit(
    ledger: LedgerStore,
    requeue: Requeue,
    company: str,
    message_id: str,
    *,
    payload: bytes | None = None,
    who: str = "operator",
    note: str = "",
    alone: bool = False,
) -> Resubmission:
    """Send a parked message through the pipeline again, optionally with a corrected payload.

    The original payload stays in the ledger history; a resubmission is admitted once (its token
    must match the row's), so resubmitting twice still has one effect in F&O.

    An in-doubt message that travelled in one F&O message with others (per-order aggregation) is
    resubmitted with every member still in doubt under that F&O message, in MES sequence: F&O has
    or lacks the merged message, never part of it. `alone` sends the named message only (its
    siblings stay parked); an edited payload replaces the named message's only.
    """
    entry = ledger.get(company, message_id)
    if entry is None:
        raise NoSuchMessage(f"no message {message_id} of {company} in the ledger")
    if entry.state is not State.PARKED:
        raise OperationError(f"message {message_id} is {entry.state.value}; only parked messages can be resubmitted")
    if entry.extra.get("Conflict") == "message_id":
        raise OperationError(
            f"message {message_id} is a changed copy of {entry.extra.get('ConflictsWith')}, which F&O already has: it cannot "
            "be sent under that id. Cancel it (and correct F&O by hand if this copy was the right one), or have the MES "
            "send the correction under a new message id"
        )
    original = ledger.payload(company, message_id) or b""
    if payload is not None and payload != original:
        _keeps_identity(entry, original, payload)
    body = payload if payload is not None else original
    kind, real_id = _type_and_id(body)
    if entry.reason == ParkReason.WRONG_QUEUE:
        return Resubmission.one(_reroute(ledger, requeue, entry, body, kind, real_id, who))
    if payload is not None and kind in INBOUND_QUEUES and kind != entry.flow:
        raise OperationError(
            f"an edited resubmission may not change the event type ({entry.flow!r} -> {kind!r}); "
            "cancel this message and have the MES send a new one"
        )
    detail = f"resubmitted by {who}" + (f": {note}" if note else "") + (" with an edited payload" if payload is not None else "")
    if payload is not None and payload != original:
        entry = replace(entry, extra={**entry.extra, "EditedBy": who})
    together, left_alone = ([entry], []) if alone else in_doubt_together(ledger, entry)
    if len(together) == 1:
        try:
            return Resubmission(requeue_parked(ledger, requeue, entry, body, detail), left_alone=tuple(left_alone))
        except ValueError as exc:
            raise OperationError(str(exc)) from None
    # In MES sequence: the order gate holds each until the one before it passed (or they merge again).
    done: list[Resubmitted] = []
    for member in together:
        named = member.message_id == entry.message_id
        row = entry if named else member
        sent = body if named else ledger.payload(member.company, member.message_id) or b""
        with_it = f"resubmitted by {who} with {entry.message_id}, one F&O message" + (f": {note}" if note else "")
        why = detail if named else with_it
        try:
            done.append(requeue_parked(ledger, requeue, row, sent, why))
        except ValueError as exc:
            left_alone.append(_left(member, f"not resubmitted: {exc}"))
        except LostRace:
            left_alone.append(_left(member, "not resubmitted: it changed meanwhile; look again"))
    named_done = next((r for r in done if r.entry.message_id == entry.message_id), None)
    if named_done is None:
        raise OperationError(f"message {entry.message_id} changed meanwhile; look again")
    return Resubmission(named_done, tuple(done), tuple(left_alone))


@dataclass(frozen=True)
class Resubmission:
    """What one resubmission sent: the named message, and every MES message sent with it in MES
    sequence (the named one among them; the named one alone unless it travelled in a merged F&O
    message), and the members of that F&O message left alone with why."""

    named: Resubmitted
    together: tuple[Resubmitted, ...] = ()
    left_alone: tuple[dict[str, Any], ...] = ()

    @classmethod
    def one(cls, resubmitted: Resubmitted) -> Resubmission:
        return cls(resubmitted)

    @property
    def entry(self) -> LedgerEntry:
        return self.named.entry

    @property
    def queue(self) -> str:
        return self.named.queue

    @property
    def sent(self) -> tuple[Resubmitted, ...]:
        return self.together or (self.named,)


def resubmission_reply(resubmission: Resubmission) -> dict[str, Any]:
    """The answer to a resubmission: the named message, and every message the action sent."""
    return acted_reply(resubmission.entry, [r.entry for r in resubmission.sent], list(resubmission.left_alone))


# --- one F&O message, several MES messages (per-order aggregation) ----------------------------------


def in_doubt_together(ledger: LedgerStore, entry: LedgerEntry) -> tuple[list[LedgerEntry], list[dict[str, Any]]]:
    """The MES messages an operator's decision on `entry` covers, in MES sequence, and the members
    of its F&O message left alone with why.

    An in-doubt message that travelled in one F&O message with others is decided with every member
    still parked in doubt under that same F&O message (the same head and merged content hash):
    F&O holds the merged message or not, so what is true of one is true of all. A member settled
    since (processed, failed, forwarded, cancelled) or sent again in another F&O message is left
    alone. Any other message is decided alone."""
    told = entry.extra.get(aggregate.FO_MESSAGE)
    digest = entry.extra.get("ContentHash")
    if entry.state is not State.PARKED or entry.reason != ParkReason.IN_DOUBT or not isinstance(told, dict) or not digest:
        return [entry], []
    head = aggregate.head_of(entry)
    together = [entry]
    left_alone: list[dict[str, Any]] = []
    for message_id in aggregate.members_of(entry):
        if message_id == entry.message_id:
            continue
        member = ledger.get(entry.company, message_id)
        if member is None:
            left_alone.append({"company": entry.company, "message_id": message_id, "state": None, "why": "not in the ledger"})
        elif member.state is not State.PARKED or member.reason != ParkReason.IN_DOUBT:
            settled = member.state in (State.PROCESSED, State.FAILED, State.FORWARDED, State.CANCELLED, State.DUPLICATE)
            left_alone.append(_left(member, "settled already" if settled else "no longer in doubt"))
        elif aggregate.head_of(member) != head or member.extra.get("ContentHash") != digest:
            left_alone.append(_left(member, "in doubt in another F&O message since; decide it on its own"))
        else:
            together.append(member)
    together.sort(key=lambda e: (e.sequence is None, e.sequence or 0))
    return together, left_alone


def _left(entry: LedgerEntry, why: str) -> dict[str, Any]:
    return {
        "company": entry.company,
        "message_id": entry.message_id,
        "sequence": entry.sequence,
        "state": entry.state.value,
        "reason": entry.reason,
        "why": why,
    }


def acted_reply(named: LedgerEntry, acted_on: list[LedgerEntry], left_alone: list[dict[str, Any]]) -> dict[str, Any]:
    """An operator action's answer: the named message as `describe` shows it, every MES message the
    action acted on (the members of its F&O message with it), and the members it left alone with why."""
    return {
        **describe(named),
        "acted_on": [
            {"company": e.company, "message_id": e.message_id, "sequence": e.sequence, "state": e.state.value} for e in acted_on
        ],
        "left_alone": left_alone,
    }


def _type_and_id(body: bytes) -> tuple[str, str]:
    """The event type and MES message id a payload states ("" where it does not)."""
    try:
        document = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(document, dict):
        return "", ""
    kind, message_id = document.get("type"), document.get("message_id")
    return (kind if isinstance(kind, str) else ""), (message_id if isinstance(message_id, str) else "")


def _reroute(
    ledger: LedgerStore, requeue: Requeue, entry: LedgerEntry, body: bytes, kind: str, real_id: str, who: str
) -> Resubmitted:
    """A copy that arrived on another flow's queue goes to the queue of its event type, where it is the
    message its id names (new, or a duplicate of the real copy: never sent twice). Its own row closes."""
    queue = INBOUND_QUEUES.get(kind)
    if queue is None or kind == entry.flow or not real_id:
        raise OperationError(
            f"message {entry.message_id}: its payload names no other inbound flow (type {kind!r}); edit it or cancel it"
        )
    # Sent first, then the row closes: should the close fail, a second resubmission is a duplicate
    # on the right queue, whereas a closed row whose copy was never sent would be a lost message.
    requeue.schedule(
        queue,
        body,
        message_id=f"{real_id}|reroute-{secrets.token_hex(8)}",
        session_id=entry.production_order or "no-order",
        delay_s=0,
        correlation_id=entry.correlation_id or None,
    )
    detail = f"resubmitted by {who} to {queue}, the queue of {kind} events, as message {real_id}"
    try:
        closed = ledger.transition(entry, State.CANCELLED, reason=Closed.REROUTED, detail=detail)
    except LostRace:
        raise OperationError(f"message {entry.message_id} changed meanwhile; look again") from None
    return Resubmitted(closed, queue)


_IDENTITY = (("message_id", "message id"), ("company", "company"), ("production_order", "production order"))


def _keeps_identity(entry: LedgerEntry, original: bytes, edited: bytes) -> None:
    """An edit corrects what a message says, never which message it is: the message id names its
    ledger row, the company its partition and the order its place in the sequence."""
    try:
        changed = json.loads(edited)
    except ValueError as exc:
        raise OperationError(f"the edited payload is not JSON: {exc}") from None
    if not isinstance(changed, dict):
        raise OperationError("the edited payload must be a JSON object")
    try:
        before = json.loads(original)
    except ValueError:
        before = None
    if not isinstance(before, dict):
        # Unreadable when it arrived: the row's identity is all there is (a byte hash for garbage).
        before = {"message_id": entry.message_id, "company": entry.company, "production_order": entry.production_order}
    for name, label in _IDENTITY:
        old, new = before.get(name), changed.get(name)
        if name == "company" and isinstance(old, str) and isinstance(new, str):
            old, new = old.upper(), new.upper()
        if (old or None) != (new or None):
            raise OperationError(
                f"an edited resubmission may not change the {label} ({old!r} -> {new!r}); "
                "cancel this message and have the MES send a new one"
            )


def gap_released_reply(progress: Progress, resubmitted: list[Resubmitted]) -> dict[str, Any]:
    """The answer to a released gap: the order's new watermark, what was skipped, what was resubmitted."""
    return {
        "watermark": progress.watermark,
        "skipped": list(progress.skipped),
        "resubmitted": [r.entry.message_id for r in resubmitted],
    }


def release_gap(
    gate: OrderGate,
    ledger: LedgerStore,
    requeue: Requeue,
    company: str,
    order: str,
    missing: int,
    reason: str,
    who: str = "operator",
) -> tuple[Progress, list[Resubmitted]]:
    """Skip a sequence number the MES will never send; what the gate held behind it resumes in sequence.

    The watermark jumps to just below the next sequence number the ledger holds for the order (a
    parked or waiting message), so a MES that numbers sparsely needs one release per hole, not one
    per missing number. The next held message is woken now, each forward wakes the one after it."""
    if not reason.strip():
        raise OperationError("releasing a gap needs a reason")
    _short(reason, "the reason")
    present = [
        e.sequence
        for e in ledger.query(company=company, production_order=order)
        if e.sequence is not None and e.sequence > missing and e.state in (State.PARKED, State.WAITING, State.FORWARDING)
    ]
    try:
        progress = gate.release_gap(company, order, missing, reason, who, through=min(present) - 1 if present else None)
    except ValueError as exc:
        raise OperationError(str(exc)) from None
    return progress, wake(ledger, gate, requeue, company, order, f"gap {missing} released by {who}")


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
        # One F&O message may carry several MES messages (per-order aggregation): which one, and with whom.
        "fo_message": _fo_message(entry),
        "received_at": entry.received_at.isoformat() if entry.received_at else None,
        "updated_at": entry.updated_at.isoformat() if entry.updated_at else None,
        "payload_size": entry.payload_size,
        "history": list(entry.history),
        # What this row holds that cannot be read (damaged, or written by an older version): shown, not hidden.
        "unreadable": [{"property": u.name, "error": u.error} for u in entry.unreadable],
    }


def _fo_message(entry: LedgerEntry) -> dict[str, Any] | None:
    told = entry.extra.get("FoMessage") or entry.extra.get("EarlierFoMessage")
    if not isinstance(told, dict):
        return None
    members = [str(m) for m in told.get("Members", [])]
    return {
        "head": told.get("Head"),
        "members": members,
        "siblings": [m for m in members if m != entry.message_id],
        "lines": told.get("Lines"),
        "content_hash": told.get("ContentHash"),
        # Travelled in it before an operator's resubmission sent it on its own.
        "earlier": "FoMessage" not in entry.extra,
    }


def _payload_text(ledger: LedgerStore, company: str, message_id: str) -> str:
    return (ledger.payload(company, message_id) or b"")[:_SHOWN_PAYLOAD].decode("utf-8", errors="replace")


_SHOWN_PAYLOAD = 16_384


def with_conflict(ledger: LedgerStore, entry: LedgerEntry) -> dict[str, Any]:
    """`describe`, and for a conflict both payloads side by side: this message's and the one it
    conflicts with (None when no message holds what it conflicts with, e.g. a released gap)."""
    described = describe(entry)
    if entry.reason != ParkReason.CONFLICT:
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


def trace(ledger: LedgerStore, company: str, message_id: str) -> dict[str, Any]:
    entry = ledger.get(company, message_id)
    if entry is None:
        raise NoSuchMessage(f"no message {message_id} of {company} in the ledger")
    return with_conflict(ledger, entry)


def order_story(ledger: LedgerStore, company: str, order: str) -> list[dict[str, Any]]:
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

    @property
    def is_empty(self) -> bool:
        return all(value is None for value in vars(self).values())

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


def parked_filter(values: Mapping[str, Any]) -> ParkedFilter:
    """The filter from text values (query parameters, a bulk body, CLI options), the same for both
    front ends: empty means "any"; a number that is not one is refused naming the field."""

    def number(name: str, kind: type) -> Any:
        raw = values.get(name)
        try:
            return kind(raw) if raw not in (None, "") else None
        except (TypeError, ValueError):
            raise OperationError(f"{name} must be a number") from None

    def text(name: str) -> str | None:
        raw = values.get(name)
        return str(raw) if raw not in (None, "") else None

    return ParkedFilter(
        company=text("company"),
        flow=text("flow"),
        reason=text("reason"),
        production_order=text("order"),
        older_than_s=number("older_than_s", float),
        max_attempts=number("max_attempts", int),
    )


def parked(ledger: LedgerStore, where: ParkedFilter) -> list[dict[str, Any]]:
    entries = ledger.query(company=where.company, state=State.PARKED, flow=where.flow, production_order=where.production_order)
    return [with_conflict(ledger, e) for e in entries if where.matches(e)]


@dataclass(frozen=True)
class Selection:
    """What a bulk action acts on: the rows an operator ticked, or every parked row a filter selects.

    An empty filter selects nothing: "everything parked" is never one click (an unfiltered resubmit
    once sent in-doubt consumptions a second time). In-doubt rows are left out unless
    `include_in_doubt` names them, since F&O may have applied them already.
    """

    where: ParkedFilter | None = None
    ids: tuple[tuple[str, str], ...] = ()
    include_in_doubt: bool = False

    def rows(self, ledger: LedgerStore) -> list[LedgerEntry]:
        if self.ids:
            found = [ledger.get(company, message_id) for company, message_id in self.ids]
            missing = [m for (_, m), e in zip(self.ids, found, strict=True) if e is None]
            if missing:
                raise NoSuchMessage(f"no message {', '.join(missing[:5])} in the ledger")
            return [e for e in found if e is not None]
        if self.where is None or self.where.is_empty:
            raise OperationError(
                "a bulk action needs the messages it acts on: a list of messages, or a filter "
                "(company, flow, reason, order, age or attempts); an empty filter selects nothing"
            )
        where = self.where
        entries = ledger.query(
            company=where.company, state=State.PARKED, flow=where.flow, production_order=where.production_order
        )
        return [e for e in entries if where.matches(e)]


@dataclass(frozen=True)
class BulkPlan:
    action: str
    chosen: list[LedgerEntry]
    left_out: list[tuple[LedgerEntry, str]]

    def summary(self, done: bool = False) -> str:
        past = {"resubmit": "resubmitted", "cancel": "cancelled"}[self.action]
        verb = past if done else f"will be {past}"
        flows = Counter(e.flow for e in self.chosen)
        text = f"{len(self.chosen)} message(s) {verb}" + (
            " (" + ", ".join(f"{flow} {n}" for flow, n in sorted(flows.items())) + ")" if flows else ""
        )
        reasons = Counter(why for _, why in self.left_out)
        if reasons:
            text += "; left out: " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        return text


def plan_bulk(ledger: LedgerStore, selection: Selection, action: str) -> BulkPlan:
    """The dry run of a bulk action: exactly which rows it would touch, and which it leaves out and why."""
    allowed = (State.PARKED,) if action == "resubmit" else (State.PARKED, State.WAITING)
    chosen: list[LedgerEntry] = []
    left_out: list[tuple[LedgerEntry, str]] = []
    seen: set[tuple[str, str]] = set()
    for entry in selection.rows(ledger):
        if (entry.company, entry.message_id) in seen:
            continue
        if entry.state not in allowed:
            left_out.append((entry, f"{entry.state.value.lower()} (not {action}able)"))
        elif entry.reason == ParkReason.IN_DOUBT and not selection.include_in_doubt:
            left_out.append((entry, "in doubt (include_in_doubt not set)"))
        else:
            # An in-doubt member of a merged F&O message is resubmitted with the whole F&O message, in
            # MES sequence, as the single resubmission does (`in_doubt_together`).
            for member in in_doubt_together(ledger, entry)[0] if action == "resubmit" else [entry]:
                if (member.company, member.message_id) not in seen:
                    seen.add((member.company, member.message_id))
                    chosen.append(member)
            continue
        seen.add((entry.company, entry.message_id))
    return BulkPlan(action, chosen, left_out)


def bulk(
    ledger: LedgerStore,
    requeue: Requeue,
    selection: Selection,
    action: str,
    *,
    dry_run: bool,
    expect: int | None = None,
    reason: str = "",
    who: str = "operator",
) -> dict[str, Any]:
    """Resubmit or cancel every message a selection names. A dry run answers what would happen; the
    real run must say how many it expects (the dry run's count), so a selection that grew since
    the operator looked is refused instead of acted on."""
    if action not in ("resubmit", "cancel"):
        raise OperationError("a bulk action is resubmit or cancel")
    if action == "cancel" and not reason.strip():
        raise OperationError("cancelling needs a reason")
    _short(reason, "the reason")
    plan = plan_bulk(ledger, selection, action)
    answer: dict[str, Any] = {
        "action": action,
        "dry_run": dry_run,
        "count": len(plan.chosen),
        "messages": [{"company": e.company, "message_id": e.message_id, "flow": e.flow, "reason": e.reason} for e in plan.chosen],
        "left_out": [{"company": e.company, "message_id": e.message_id, "why": why} for e, why in plan.left_out],
        "summary": plan.summary(),
    }
    if dry_run:
        return answer
    if expect is None:
        raise OperationError(f"say how many messages you expect to {action} (expect); a dry run counts them")
    if expect != len(plan.chosen):
        raise OperationError(f"the selection changed: {len(plan.chosen)} message(s) now, {expect} expected; look again")
    done: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for entry in plan.chosen:
        try:
            if action == "resubmit":
                # The plan already holds every member of a merged F&O message, each is sent once.
                result = resubmit(ledger, requeue, entry.company, entry.message_id, who=who, note="bulk resubmit", alone=True)
                done.append(describe(result.entry))
            else:
                done.append(cancel(ledger, entry.company, entry.message_id, reason, who=who))
        except (OperationError, LostRace) as exc:
            failed.append({"company": entry.company, "message_id": entry.message_id, "error": str(exc)})
    return {**answer, "done": done, "failed": failed, "summary": plan.summary(done=True)}


def cancel(ledger: LedgerStore, company: str, message_id: str, reason: str, who: str = "operator") -> dict[str, Any]:
    """Decide that a parked or waiting message must never reach F&O."""
    if not reason.strip():
        raise OperationError("cancelling needs a reason")
    _short(reason, "the reason")
    entry = ledger.get(company, message_id)
    if entry is None:
        raise NoSuchMessage(f"no message {message_id} of {company} in the ledger")
    if entry.state not in (State.PARKED, State.WAITING):
        raise OperationError(f"message {message_id} is {entry.state.value}; only parked or waiting messages can be cancelled")
    try:
        cancelled = ledger.transition(entry, State.CANCELLED, reason=Closed.CANCELLED, detail=f"cancelled by {who}: {reason}")
    except LostRace:
        raise OperationError(f"message {message_id} changed meanwhile; look again") from None
    return describe(cancelled)


def confirm_applied(
    ledger: LedgerStore,
    gate: OrderGate,
    tree: LineageStore,
    requeue: Requeue,
    company: str,
    message_id: str,
    note: str,
    who: str = "operator",
    *,
    alone: bool = False,
) -> dict[str, Any]:
    """An in-doubt message the operator found in F&O (Message processor messages): record it as
    forwarded, move the order's watermark past it and write its genealogy, as the forward would have.

    One that travelled in a merged F&O message is confirmed with every member still in doubt under
    it (`in_doubt_together`): each recorded as forwarded with its own genealogy, the watermark past
    the last, one wake-up. `alone` confirms the named message only."""
    if not note.strip():
        raise OperationError("confirming needs a note (where F&O shows the message)")
    _short(note, "the note")
    entry = ledger.get(company, message_id)
    if entry is None:
        raise NoSuchMessage(f"no message {message_id} of {company} in the ledger")
    if entry.state is not State.PARKED or entry.reason != ParkReason.IN_DOUBT:
        raise OperationError(f"message {message_id} is {entry.state.value} {entry.reason}; only in-doubt messages are confirmed")
    together, left_alone = ([entry], []) if alone else in_doubt_together(ledger, entry)
    rows = [_with_genealogy(ledger, member) for member in together]
    ids = ", ".join(r.message_id for r in rows)
    catch_up_together(ledger, gate, tree, requeue, rows, f"{who} confirmed {ids} in F&O")
    detail = f"confirmed in F&O by {who}: {note}"
    try:
        if len(rows) == 1:
            confirmed = [ledger.transition(rows[0], State.FORWARDED, reason="", detail=detail, lease_until=None)]
        else:
            detail += f" (one F&O message with {len(rows)} MES messages: {ids})"
            moves = [(r, State.FORWARDED, {"reason": "", "detail": detail, "lease_until": None}) for r in rows]
            confirmed = ledger.transition_together(moves)
    except LostRace:
        raise OperationError(f"message {message_id} or a message confirmed with it changed meanwhile; look again") from None
    named = next(c for c in confirmed if c.message_id == message_id)
    return acted_reply(named, confirmed, left_alone)


def _with_genealogy(ledger: LedgerStore, entry: LedgerEntry) -> LedgerEntry:
    """The row with the genealogy its confirmation records: the one it kept, or, when that cannot
    be read, the one its stored payload states again."""
    damaged = [u.error for u in entry.unreadable if u.name == "Extra"]
    if not damaged:
        return entry
    try:
        edges = mapping.lineage_of_payload(entry.flow, ledger.payload(entry.company, entry.message_id) or b"")
    except ValueError:
        raise OperationError(
            f"message {entry.message_id}: neither its kept genealogy ({damaged[0]}) nor its stored payload can be read; "
            "confirming would record it without its genealogy"
        ) from None
    return replace(entry, extra={**entry.extra, "Lineage": [asdict(edge) for edge in edges]})


def lineage(tree: LineageStore, company: str, item: str, batch: str, direction: str, depth: int = 5) -> dict[str, Any]:
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
        raise NoSuchMessage(str(exc)) from None
    return {"flow": flow, "sequence_number": sequence_number, "resubmitted": True}


# --- what the console shows -----------------------------------------------------------------------

_STUCK = (State.PARKED, State.WAITING, State.FORWARDING)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _forwarded_at(entry: LedgerEntry) -> datetime | None:
    at = next((h.get("at") for h in reversed(entry.history) if h.get("state") == State.FORWARDED.value), None)
    if at:
        return datetime.fromisoformat(str(at))
    return entry.updated_at if entry.state is State.FORWARDED else None


def overview(
    ledger: LedgerStore,
    dead: DeadLetters,
    *,
    answered_429_here: int = 0,
    now: datetime | None = None,
    window_s: int = 3600,
    buckets: int = 12,
) -> dict[str, Any]:
    """Per flow: what is stuck now (by state, parked by reason, in doubt, dead-lettered), what
    settled in the last hour, the oldest stuck message, and throughput and F&O latency over time.

    Read from the ledger (the rows stuck now, the rows that changed in the window), so every
    instance's work counts; only `answered_429_here` (F&O's 429s to this instance since it started) is per instance.
    """
    now = now or utcnow()
    since = now - timedelta(seconds=window_s)
    step = window_s / buckets
    flows: dict[str, dict[str, Any]] = {}

    def row(flow: str) -> dict[str, Any]:
        return flows.setdefault(
            flow or "unknown",
            {
                "flow": flow or "unknown",
                **dict.fromkeys(("forwarded", "processed", "failed", "duplicate", "cancelled"), 0),
                **dict.fromkeys(("waiting", "forwarding", "parked", "in_doubt", "dead_lettered"), 0),
                # An operator decides an in-doubt F&O message once, whatever the MES messages merged in it.
                "in_doubt_decisions": 0,
                "parked_by_reason": {},
            },
        )

    for flow in INBOUND_QUEUES:
        row(flow)
    oldest: LedgerEntry | None = None
    decisions: set[tuple[str, str, str, str]] = set()
    for state in _STUCK:
        for entry in ledger.query(state=state):
            counts = row(entry.flow)
            if state is State.PARKED and entry.reason == ParkReason.IN_DOUBT:
                counts["in_doubt"] += 1
                decision = (entry.flow, entry.company, aggregate.head_of(entry), str(entry.extra.get("ContentHash", "")))
                if decision not in decisions:
                    decisions.add(decision)
                    counts["in_doubt_decisions"] += 1
            elif state is State.PARKED:
                counts["parked"] += 1
                counts["parked_by_reason"][entry.reason] = counts["parked_by_reason"].get(entry.reason, 0) + 1
            else:
                counts[state.value.lower()] += 1
            since_when = entry.received_at or entry.updated_at
            if since_when is not None and (oldest is None or since_when < (oldest.received_at or oldest.updated_at or now)):
                oldest = entry
    starts = [(since + timedelta(seconds=step * n)).isoformat() for n in range(buckets)]
    forwarded = [0] * buckets
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    throttled_waits = 0
    for entry in ledger.query(updated_since=since):
        if entry.state not in _STUCK:
            row(entry.flow)[entry.state.value.lower()] += 1
        throttled_waits += sum(
            1 for h in entry.history if h.get("reason") == "throttled" and str(h.get("at", "")) >= since.isoformat()
        )
        at = _forwarded_at(entry)
        if at is None or at < since:
            continue
        n = min(buckets - 1, int((at - since).total_seconds() // step))
        forwarded[n] += 1
        if "FoMs" in entry.extra:
            latencies[n].append(float(entry.extra["FoMs"]))
    dead_total = 0
    for flow, queue in INBOUND_QUEUES.items():
        count = len(dead.dead_lettered(queue))
        row(flow)["dead_lettered"] = count
        dead_total += count
    all_ms = [ms for bucket in latencies for ms in bucket]
    return {
        "at": now.isoformat(),
        "window_s": window_s,
        "flows": list(flows.values()),
        "oldest_stuck": None
        if oldest is None
        else {
            **{k: describe(oldest)[k] for k in ("company", "message_id", "flow", "state", "reason", "production_order")},
            "age_s": round((now - (oldest.received_at or oldest.updated_at or now)).total_seconds()),
        },
        "series": [
            {"start": start, "forwarded": count, "p50_ms": _percentile(ms, 0.5), "p95_ms": _percentile(ms, 0.95)}
            for start, count, ms in zip(starts, forwarded, latencies, strict=True)
        ],
        "latency_ms": {"p50": _percentile(all_ms, 0.5), "p95": _percentile(all_ms, 0.95), "count": len(all_ms)},
        "throttled": {"waits_in_ledger": throttled_waits, "answered_429_here": answered_429_here},
        "dead_lettered": dead_total,
    }


def fo_request(flow_name: str, raw: bytes, options: mapping.MappingOptions) -> dict[str, Any] | None:
    """The F&O call the bridge makes for this payload (the flow's mapping, as configured now)."""
    flow = INBOUND_FLOWS.get(flow_name)
    if flow is None or not raw:
        return None
    try:
        call = flow.map(flow.event.model_validate_json(raw), options)
    except (ValidationError, ValueError) as exc:
        return {"error": f"this payload maps to no F&O call: {str(exc)[:400]}"}
    return {"kind": type(call).__name__, **asdict(call)}


def message_detail(
    ledger: LedgerStore, company: str, message_id: str, options: mapping.MappingOptions | None = None
) -> dict[str, Any]:
    """A message's row, its payload as received, the F&O call it makes and what F&O and the MES were told about it."""
    entry = ledger.get(company, message_id)
    if entry is None:
        raise NoSuchMessage(f"no message {message_id} of {company} in the ledger")
    raw = ledger.payload(company, message_id) or b""
    try:
        document: Any = json.loads(raw)
    except ValueError:
        document = None
    extra = entry.extra
    outcome = None
    if entry.state in (State.PROCESSED, State.FAILED):
        outcome = {
            "outcome": "accepted" if entry.state is State.PROCESSED else "rejected",
            "infolog": entry.infolog,
            "fo_event_id": extra.get("FoEventId", ""),
        }
    return {
        **describe(entry),
        "payload": raw.decode("utf-8", errors="replace"),
        "payload_json": document,
        "identity_editable": False,
        "fo": {
            "message_type": entry.fo_message_type,
            "reference": extra.get("FoReference", ""),
            "latency_ms": extra.get("FoMs"),
            "infolog": entry.infolog,
            "message_page": extra.get("FoMessagePage", ""),
            "content_hash": extra.get("ContentHash", ""),
            "request": fo_request(entry.flow, raw, options) if options is not None else None,
        },
        "mes_outcome": outcome,
        "resubmissions": int(extra.get("Resubmissions", 0)),
        "edited_by": extra.get("EditedBy", ""),
    }


def order_view(ledger: LedgerStore, gate: OrderGate, company: str, order: str) -> dict[str, Any]:
    """The order's sequence ladder across flows: what arrived, what waits, and where the gap is."""
    story = order_story(ledger, company, order)
    progress = gate.read(company, order)
    numbered = {row["sequence"]: row for row in story if row["sequence"] is not None}
    skipped = {int(s.get("sequence", -1)) for s in progress.skipped if isinstance(s, dict)}
    top = max([progress.watermark, *numbered, *skipped], default=0)
    ladder = []
    for sequence in range(1, min(top, progress.watermark + 200) + 1):
        found = numbered.get(sequence)
        if found is not None:
            ladder.append({"sequence": sequence, "status": found["state"], "row": found})
        elif sequence in skipped:
            ladder.append({"sequence": sequence, "status": "skipped", "row": None})
        else:
            ladder.append({"sequence": sequence, "status": "missing", "row": None})
    gaps = [step["sequence"] for step in ladder if step["status"] == "missing" and step["sequence"] > progress.watermark]
    return {
        "company": company,
        "order": order,
        "watermark": progress.watermark,
        "started": progress.started,
        "ended": progress.ended,
        "waiting_for": progress.waiting_for,
        "skipped": list(progress.skipped),
        "ladder": ladder,
        "gaps": gaps,
        "unsequenced": [row for row in story if row["sequence"] is None],
        "messages": story,
    }
