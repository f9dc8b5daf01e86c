from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import function_app
from devtools.azurite import Azurite
from devtools.fo_emulator import FoEmulator
from devtools.local_host import InMemoryBroker, LocalHost
from devtools.local_host.broker import BrokerMesPublisher
from shared import runtime
from shared.runtime import Ports
from shared.settings import load_settings
from shared.topology import MES_TOPIC
from tests.conftest import bridge_env

FAST = {
    "GATE_FIRST_WAIT_S": "0.05",
    "GATE_GAP_TIMEOUT_S": "3",
    "RETRY_FIRST_WAIT_S": "0.2",
    "RETRY_MAX_WAIT_S": "1",
    "FO_CALL_DEADLINE_S": "3",
}


@dataclass
class Stack:
    emulator: FoEmulator
    broker: InMemoryBroker
    host: LocalHost
    ports: Ports


@pytest.fixture
def stack_env() -> dict[str, str]:
    return dict(FAST)


@pytest.fixture
def stack(emulator: FoEmulator, azurite: Azurite, table_prefix: str, stack_env: dict[str, str]) -> Iterator[Stack]:
    settings = load_settings(bridge_env(emulator, azurite, table_prefix, **stack_env))
    broker = InMemoryBroker()
    broker.declare(MES_TOPIC, requires_session=True)
    ports = runtime.build(settings, requeue=broker, publisher=BrokerMesPublisher(broker, MES_TOPIC), dead_letters=broker)
    runtime.install(ports)
    host = LocalHost(function_app.app, broker)
    try:
        yield Stack(emulator, broker, host, ports)
    finally:
        host.stop()
        runtime.install(None)


def failures_other_than_storage_hiccups(host: LocalHost) -> list[str]:
    """Function errors, leaving out a Table Storage connection dropped mid-call (Azurite closes idle
    connections). The inbound pipeline puts such a message back itself now; a business-event handler
    still raises, and Event Grid delivers the event again, as designed."""
    return [e for e in host.stats.errors if "Table Storage unreachable" not in e]
