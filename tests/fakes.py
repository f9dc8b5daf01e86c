"""In-memory stand-ins for the adapters the handlers take through `Ports`, for unit tests that run in
milliseconds without Azurite or the emulator. Each keeps the semantics of the real adapter it stands
for; the contract tests in tests/integration run the same cases against both, so a fake cannot drift.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, cast

from shared.inbound.pipeline import Ports
from shared.outbound.mes_publisher import Envelope
from shared.store.event_log import STATUS, STATUS_UNITS
from shared.store.tables import cut_text


class InMemoryEventLog:
    """`shared.store.event_log.EventLog` in memory: EventIds per consumer (case-insensitive, as the
    real row key is upper-cased), and per kind, company and order the ControlNumber last applied,
    which only moves up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handled: dict[tuple[str, str], tuple[str, str]] = {}
        self.guards: dict[tuple[str, str, str], tuple[int, str]] = {}

    def seen(self, consumer: str, event_id: str) -> bool:
        with self._lock:
            return (consumer, event_id.upper()) in self.handled

    def remember(self, consumer: str, event_id: str, business_event_id: str, outcome: str) -> None:
        with self._lock:
            self.handled[(consumer, event_id.upper())] = (business_event_id, str(outcome))

    def applied(self, kind: str, company: str, order: str) -> tuple[int, str] | None:
        with self._lock:
            return self.guards.get((kind, company.upper(), order))

    def apply_control_number(self, kind: str, company: str, order: str, control_number: int, status: str) -> bool:
        key = (kind, company.upper(), order)
        with self._lock:
            current = self.guards.get(key)
            if current is not None and control_number <= current[0]:
                return False
            self.guards[key] = (control_number, cut_text(status, STATUS_UNITS, "the order's event row"))
            return True

    def applied_status(self, company: str, order: str) -> tuple[int, str] | None:
        return self.applied(STATUS, company, order)


@dataclass
class RecordingPublisher:
    """The MES topic as a list; `refuse` makes the next sends fail as a refused send would."""

    sent: list[Envelope] = field(default_factory=list)
    refuse: int = 0

    def publish(self, message: Envelope) -> None:
        if self.refuse:
            self.refuse -= 1
            raise RuntimeError("the MES topic refused the send")
        self.sent.append(message)


class Untouchable:
    """A port the code under test must not use: any attribute read fails the test, naming the port."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        raise AssertionError(f"the code under test used ports.{self._name}.{attribute}")


def ports(**given: Any) -> Ports:
    """Ports with the given fakes; every other port is `Untouchable`."""
    names = ("settings", "fo", "ledger", "gate", "lineage", "requeue", "options", "events", "publisher", "dead_letters")
    return Ports(**{name: given.get(name, cast(Any, Untouchable(name))) for name in names})
