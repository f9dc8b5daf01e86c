"""Decode and validate one delivered MES message: its bytes to a typed event, or a refusal with the
reason and with what the message says of itself (so even garbage gets a ledger row keyed by its own id).
Pure: no I/O, so the fuzz test runs it as a unit test (tests/unit/test_decode_fuzz.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from pydantic import ValidationError

from shared.clock import utcnow
from shared.errors import InvalidMessage
from shared.inbound.flows import Flow
from shared.inbound.messages import MAX_SEQUENCE, MES_EVENTS, MesEvent
from shared.inbound.servicebus import Delivery
from shared.reasons import ParkReason
from shared.settings import Settings
from shared.store.ledger import payload_hash

_MAX_DEPTH = 32


@dataclass(frozen=True)
class Identity:
    """What a message says of itself, as far as it can be read: its ledger row's key and labels."""

    company: str
    message_id: str
    order: str = ""
    correlation_id: str = ""
    sequence: int | None = None


# --- decode -------------------------------------------------------------------------------------


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _identity(raw: Any, delivery: Delivery, settings: Settings) -> Identity:
    """Who this message is, as far as it can be read, so that even garbage gets a ledger row."""

    # Named by its bytes, not by the broker's MessageId: the same garbage delivered again (a new
    # broker id past duplicate detection) finds its parked row instead of parking a second one.
    def fallback_id() -> str:
        return "sha256:" + payload_hash(delivery.body)

    if not isinstance(raw, dict):
        return Identity(settings.fo_default_company.upper(), fallback_id(), correlation_id=delivery.correlation_id or "")

    def text(name: str, limit: int) -> str:
        value = raw.get(name)
        if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable():
            return value
        return ""

    company = text("company", 4).upper()
    sequence = raw.get("sequence")
    return Identity(
        company=company if company in settings.companies else settings.fo_default_company.upper(),
        message_id=text("message_id", 128) or fallback_id(),
        order=text("production_order", 20),
        correlation_id=text("correlation_id", 128) or delivery.correlation_id or "",
        sequence=sequence if type(sequence) is int and 1 <= sequence <= MAX_SEQUENCE else None,
    )


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


def _out_of_range(sequence: Any) -> bool:
    """True for a number (not a bool) outside 1..MAX_SEQUENCE; False for anything else (the model says why)."""
    number = isinstance(sequence, (int, float)) and not isinstance(sequence, bool)
    return number and not 1 <= sequence <= MAX_SEQUENCE


def misrouted_id(message_id: str, queue_flow: str) -> str:
    """The ledger id of a copy that arrived on another flow's queue."""
    return f"{message_id}|wrong-queue|{queue_flow}"


def decode(delivery: Delivery, flow: Flow, settings: Settings) -> tuple[Identity, MesEvent]:
    """Parse and validate: the event with its identity, or `Refused` with the reason and the identity
    (named by its bytes when the body cannot be read)."""
    if len(delivery.body) > settings.max_message_bytes:
        unread = _identity(None, delivery, settings)
        raise Refused(unread, ParkReason.TOO_LARGE, f"{len(delivery.body)} bytes; the limit is {settings.max_message_bytes}")
    if not delivery.body.strip():
        raise Refused(_identity(None, delivery, settings), ParkReason.EMPTY, "the message body is empty")
    try:
        raw = json.loads(delivery.body, parse_constant=_refuse)
    except (ValueError, RecursionError) as exc:
        unread = _identity(None, delivery, settings)
        raise Refused(unread, ParkReason.INVALID_JSON, f"not JSON: {str(exc)[:300]}") from None
    identity = _identity(raw, delivery, settings)
    if _depth(raw, _MAX_DEPTH) > _MAX_DEPTH:
        raise Refused(identity, ParkReason.TOO_DEEP, f"nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(raw, dict):
        raise Refused(identity, ParkReason.INVALID_MESSAGE, "the body must be a JSON object")
    kind = raw.get("type")
    if kind != flow.name:
        if isinstance(kind, str) and kind in MES_EVENTS:
            # Parked under its own id: the real message, on its own queue, keeps its id (and its
            # place in the order) whichever copy comes first; a resubmission sends this one there.
            misrouted = replace(identity, message_id=misrouted_id(identity.message_id, flow.name))
            detail = f"a {kind} event arrived on the {flow.name} queue ({flow.queue}); resubmitting sends it to its own queue"
            raise Refused(misrouted, ParkReason.WRONG_QUEUE, detail)
        raise Refused(identity, ParkReason.UNKNOWN_TYPE, f"unknown event type {str(kind)[:60]!r}; expected {flow.name!r}")
    sequence = raw.get("sequence")
    if _out_of_range(sequence):
        # Checked apart from the model: the gate and the ledger's Int64 column rely on the range.
        raise Refused(identity, ParkReason.SEQUENCE_OUT_OF_RANGE, f"sequence {str(sequence)[:40]} is outside 1 to {MAX_SEQUENCE}")
    version = raw.get("schema_version", "1.0")
    if version != "1.0":
        raise Refused(identity, ParkReason.UNSUPPORTED_VERSION, f"schema_version {str(version)[:20]!r} is not supported (1.0 is)")
    try:
        event = flow.event.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
        raise Refused(identity, ParkReason.INVALID_MESSAGE, problems) from None
    ahead = _ahead_of_the_clock(event, settings)
    if ahead:
        raise Refused(identity, ParkReason.CLOCK_SKEW, ahead)
    if event.company.upper() not in settings.companies:
        raise Refused(
            identity,
            ParkReason.UNKNOWN_COMPANY,
            f"company {event.company} is not one of FO_COMPANIES ({', '.join(sorted(settings.companies))})",
        )
    return identity, event


def _ahead_of_the_clock(event: MesEvent, settings: Settings) -> str:
    """Why the event claims a time the plant cannot have reached yet ("" when it does not): a MES
    clock ahead by more than MES_MAX_CLOCK_SKEW_S would book F&O transactions on days to come."""
    skew = timedelta(seconds=settings.mes_max_clock_skew_s)
    latest = utcnow() + skew
    window = f"MES_MAX_CLOCK_SKEW_S allows {settings.mes_max_clock_skew_s:g} s"
    if event.occurred_at > latest:
        ahead = (event.occurred_at - latest + skew).total_seconds()
        return f"occurred_at {event.occurred_at.isoformat()} lies {ahead:.0f} s ahead of the bridge's clock; {window}"
    for name in ("moved_on", "adjusted_on"):  # the bodies that carry their own business day
        day = getattr(event.body, name, None)
        # UTC+14 is the earliest calendar on earth: no plant has reached a later day.
        if isinstance(day, date) and day > (latest + timedelta(hours=14)).date():
            return f"{name} {day.isoformat()} is a day no plant has reached yet; {window}"
    return ""


class Refused(InvalidMessage):
    """Invalid, with what the message says of itself (so its parked row is keyed by its own id)."""

    def __init__(self, identity: Identity, reason: ParkReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.identity = identity
