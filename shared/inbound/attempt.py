"""One attempt at one inbound message: the flow, the delivery, the adapters and what the message
says, bundled once per delivery by `process` (shared/inbound/pipeline.py) and handed whole to the
gate decision, the F&O call and the settlement, instead of each taking its own part of it.

`Arrival` is a delivery known only by what it says of itself (enough to park it under its own id);
`Attempt` is one whose event decoded, which is what every step past decoding needs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from typing import Literal

from shared.inbound.decode import Identity, fingerprint
from shared.inbound.flows import Flow
from shared.inbound.mapping import FoCall
from shared.inbound.messages import MesEvent
from shared.inbound.servicebus import (
    ATTEMPT,
    IN_DOUBT_CHECK,
    ORIGINAL_ID,
    RESUBMIT,
    STORAGE_FAILING_SINCE,
    STORAGE_RETRIES,
    Delivery,
)
from shared.reasons import Reason
from shared.runtime import Ports
from shared.store.ledger import LedgerEntry, payload_hash


class Outcome(StrEnum):
    FORWARDED = "forwarded"
    DUPLICATE = "duplicate"
    PARKED = "parked"
    WAITING = "waiting"
    RETRYING = "retrying"


@dataclass(frozen=True)
class Result:
    """What became of one delivery: logged once (shared/ops/telemetry.py) and returned to the trigger."""

    outcome: Outcome
    company: str
    message_id: str
    reason: Reason | Literal[""] = ""
    detail: str = ""
    order: str = ""
    correlation_id: str = ""
    fo_ms: float = 0.0


#: The row's extra that holds the token of its pending resubmission (shared/inbound/wakeup.py).
RESUBMIT_TOKEN = "ResubmitToken"  # noqa: S105 (the name of a row property, not a secret)


def token_spent(parked: LedgerEntry) -> LedgerEntry:
    """The parked row as its resubmission is admitted: the token admits one copy, so it goes with the
    first move it allows. Copies that still carry it (the broker's redelivery of the resubmitted copy,
    a look-again scheduled from it) are duplicates from then on; sending again takes a new token."""
    if RESUBMIT_TOKEN not in parked.extra:
        return parked
    return replace(parked, extra={k: v for k, v in parked.extra.items() if k != RESUBMIT_TOKEN})


@dataclass(frozen=True)
class Arrival:
    """A delivered message, known by what it says of itself: enough to keep it under its own id."""

    delivery: Delivery
    flow: Flow
    ports: Ports
    identity: Identity

    @cached_property
    def payload_hash(self) -> str:
        return payload_hash(self.delivery.body)

    @property
    def scheduled_by_bridge(self) -> bool:
        """A copy the bridge scheduled itself (a wait, a retry) or an operator's resubmission: its row exists."""
        return ATTEMPT in self.delivery.properties or RESUBMIT in self.delivery.properties

    @property
    def next_copy(self) -> int:
        """The number of the next copy the bridge schedules (waits and retries alike): the count
        travels on the message (its attempt property), so waiting again costs no ledger write."""
        return int(self.delivery.properties.get(ATTEMPT, 0)) + 1

    def result(
        self, entry: LedgerEntry, outcome: Outcome, reason: Reason | Literal[""] = "", detail: str = "", fo_ms: float = 0.0
    ) -> Result:
        return Result(
            outcome, entry.company, entry.message_id, reason, detail, entry.production_order, entry.correlation_id, fo_ms
        )

    def resubmits(self, parked: LedgerEntry) -> bool:
        """True for the operator's resubmission of this parked row; any other copy (a redelivery, the
        MES sending it again) has no token or an old one and must not move it."""
        token = self.delivery.properties.get(RESUBMIT)
        return token is not None and token == parked.extra.get(RESUBMIT_TOKEN)

    def changed_copy(self, existing: LedgerEntry) -> bool:
        """True for a copy from the MES (not one the bridge scheduled or resubmitted itself) that says
        something else than what its message id said first."""
        if self.scheduled_by_bridge:
            return False
        if existing.payload_hash == self.payload_hash:
            return False
        stored = self.ports.ledger.payload(existing.company, existing.message_id)
        return stored is None or fingerprint(stored) != fingerprint(self.delivery.body)

    def schedule(self, entry: LedgerEntry, delay_s: float, *, in_doubt_check: bool = False) -> None:
        """Put a copy of this delivery back on its queue and session after `delay_s` (the bridge's own
        redelivery: a wait, a retry, or with `in_doubt_check` the bridge's check of an in-doubt send)."""
        delivery = self.delivery
        attempt = self.next_copy
        # A storage outage this copy outlived is over: the next one counts its retries afresh.
        dropped = (ATTEMPT, ORIGINAL_ID, STORAGE_FAILING_SINCE, STORAGE_RETRIES)
        properties = {k: v for k, v in delivery.properties.items() if k not in dropped}
        if in_doubt_check:
            properties[IN_DOUBT_CHECK] = "1"
        properties.update({ATTEMPT: attempt, ORIGINAL_ID: self.original_id})
        # A fresh broker id per attempt (duplicate detection would drop a copy with the old one), the
        # same one if this step is repeated after a crash (so the repeat is dropped instead).
        self.put_back(f"{entry.message_id}|{entry.attempts}.{attempt}", delay_s, properties, entry.correlation_id or None)

    @property
    def original_id(self) -> str:
        """The broker id of the message the MES sent, which every copy of it carries along."""
        return str(self.delivery.properties.get(ORIGINAL_ID, self.delivery.message_id))

    def put_back(self, message_id: str, delay_s: float, properties: dict[str, object], correlation_id: str | None) -> None:
        """This delivery's body back on its queue and session after `delay_s`, as a new broker message."""
        delivery = self.delivery
        self.ports.requeue.schedule(
            delivery.queue,
            delivery.body,
            message_id=message_id[:128],
            session_id=delivery.session_id,
            delay_s=delay_s,
            correlation_id=correlation_id,
            properties=properties,
        )


@dataclass(frozen=True)
class Attempt(Arrival):
    """A delivery whose event decoded: what the gate, the F&O call and the settlement work on."""

    event: MesEvent

    @property
    def order(self) -> str:
        return self.event.production_order or ""

    def call(self) -> FoCall:
        """The F&O call this event maps to."""
        return self.flow.map(self.event, self.ports.options)
