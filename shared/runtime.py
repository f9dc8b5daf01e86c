"""The composition root: builds each adapter once per process, on first use, from the settings.

Functions call `ports()`; dev tooling may `install()` other adapters (the local host's broker).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from shared.clock import Clock, utcnow
from shared.fo.auth import MsalTokenProvider
from shared.fo.client import FoApi, FoClient
from shared.fo.http import PinnedTrustSession
from shared.inbound.handoff import Handoff
from shared.inbound.mapping import MappingOptions
from shared.inbound.order_gate import OrderGate
from shared.inbound.recent import Recent
from shared.inbound.servicebus import DeadLetters, Requeue, ServiceBusDeadLetters, ServiceBusRequeue
from shared.outbound.mes_publisher import MesPublisher, ServiceBusMesPublisher
from shared.settings import Settings, get_settings
from shared.store.event_log import EventLog, EventStore
from shared.store.ledger import Ledger, LedgerStore
from shared.store.lineage import Lineage, LineageStore
from shared.store.progress import TableProgressStore
from shared.store.tables import EVENTS_TABLE, LEDGER_TABLE, service_client, table
from shared.topology import MES_TOPIC


@dataclass
class Ports:
    """The adapters every handler takes, built here once per process (`ports()`); tests and the local
    host pass their own (tests/fakes.py, `install`)."""

    settings: Settings
    fo: FoApi
    ledger: LedgerStore
    gate: OrderGate
    lineage: LineageStore
    requeue: Requeue
    options: MappingOptions
    events: EventStore
    publisher: MesPublisher
    dead_letters: DeadLetters
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("mesbridge"))
    #: What the pipeline reads the time from (a lease, the retry window, a queue age); tests pass a FakeClock.
    clock: Clock = field(default=utcnow)
    #: What this process knows of messages it handled lately (shared/inbound/recent.py).
    recent: Recent = field(default_factory=Recent)
    #: The order's deliveries this process is handling now, for an early successor to wait for (shared/inbound/handoff.py).
    handoff: Handoff = field(default_factory=Handoff)


_lock = threading.Lock()
_ports: Ports | None = None


def build(
    settings: Settings,
    *,
    requeue: Requeue | None = None,
    publisher: MesPublisher | None = None,
    dead_letters: DeadLetters | None = None,
) -> Ports:
    session = PinnedTrustSession(settings.tls_verify, pool_size=max(32, settings.fo_max_concurrency * 2))
    tokens = MsalTokenProvider(settings, session)
    tables = service_client(settings)
    prefix = settings.tables_prefix
    # Progress, content index and genealogy rows share the ledger's partitions: "forwarded", "the
    # watermark moved" and "these batches went in" are one transaction.
    ledger_table = table(tables, prefix + LEDGER_TABLE)
    return Ports(
        settings=settings,
        fo=FoClient(settings, tokens, session),
        ledger=Ledger(ledger_table),
        gate=OrderGate(
            TableProgressStore(ledger_table),
            gap_timeout_s=settings.gate_gap_timeout_s,
            require_start=settings.gate_require_start,
        ),
        lineage=Lineage(ledger_table),
        requeue=requeue or ServiceBusRequeue(settings),
        events=EventLog(table(tables, prefix + EVENTS_TABLE)),
        publisher=publisher or ServiceBusMesPublisher(settings, MES_TOPIC),
        dead_letters=dead_letters or ServiceBusDeadLetters(settings),
        options=MappingOptions.from_settings(settings),
    )


def ports() -> Ports:
    global _ports
    with _lock:
        if _ports is None:
            _ports = build(get_settings())
        return _ports


def install(custom: Ports | None) -> None:
    """Use these adapters from now on (None: build from the settings again on next use)."""
    global _ports
    with _lock:
        _ports = custom
