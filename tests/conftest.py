"""Fixtures: Azurite (real Table Storage) per session, the F&O emulator per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devtools.azurite import Azurite
from devtools.fo_emulator import EmulatorConfig, FoEmulator
from devtools.fo_emulator.plant import PlantSpec
from shared.fo.auth import MsalTokenProvider
from shared.fo.client import FoClient
from shared.fo.http import PinnedTrustSession
from shared.settings import Settings, load_settings
from shared.store.table_rest import TableService
from shared.store.tables import connect


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as instance:
        yield instance


@pytest.fixture
def table_service(azurite: Azurite) -> TableService:
    return connect(azurite.connection_string)


@pytest.fixture
def table_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def small_plant(**changes: object) -> PlantSpec:
    values: dict[str, object] = {"orders": 40}
    values.update(changes)
    return PlantSpec(**values)  # type: ignore[arg-type]


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(plant=small_plant())


@pytest.fixture
def emulator(emulator_config: EmulatorConfig) -> Iterator[FoEmulator]:
    with FoEmulator(emulator_config) as instance:
        yield instance


def bridge_env(emulator: FoEmulator, azurite: Azurite, prefix: str, **overrides: str) -> dict[str, str]:
    return {
        **emulator.bridge_settings(),
        "TABLES_CONNECTION_STRING": azurite.connection_string,
        "TABLES_PREFIX": prefix,
        "FO_CALL_DEADLINE_S": "20",
        "FO_BACKOFF_BASE_S": "0.05",
        "FO_BACKOFF_MAX_S": "0.5",
        "FO_READ_TIMEOUT_S": "5",
        **overrides,
    }


@pytest.fixture
def settings(emulator: FoEmulator, azurite: Azurite, table_prefix: str) -> Settings:
    return load_settings(bridge_env(emulator, azurite, table_prefix))


def make_client(settings: Settings) -> tuple[FoClient, MsalTokenProvider]:
    session = PinnedTrustSession(settings.tls_verify)
    tokens = MsalTokenProvider(settings, session)
    return FoClient(settings, tokens, session), tokens


@pytest.fixture
def fo(settings: Settings) -> FoClient:
    return make_client(settings)[0]
