"""Table Storage access: clients from settings, safe keys, and one translation of storage errors."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableServiceClient

from shared.errors import Transient
from shared.settings import Settings

_ENCODED = set("/\\#?%~") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}
_MAX_KEY_CHARS = 400


def safe_key(value: str) -> str:
    """A PartitionKey/RowKey for any string: forbidden characters percent-encoded, reversibly.

    Table Storage refuses `/ \\ # ?` and control characters in keys and caps them at 1 KiB; `%`
    is encoded too so that decoding is unambiguous. Over-long keys keep a prefix and a hash.
    """
    encoded = "".join("".join(f"%{b:02X}" for b in ch.encode()) if ch in _ENCODED else ch for ch in value)
    if not encoded:
        return "~empty"
    if len(encoded) > _MAX_KEY_CHARS:
        digest = hashlib.sha256(value.encode()).hexdigest()
        encoded = encoded[: _MAX_KEY_CHARS - 65] + "~" + digest
    return encoded


def key_value(key: str) -> str:
    """The string that `safe_key` encoded (for keys that were not shortened)."""
    from urllib.parse import unquote

    return "" if key == "~empty" else unquote(key)


class OpCounter:
    """Table operations made by this process (the benchmark reports them per event)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.count += n


TABLE_OPS = OpCounter()


@contextmanager
def storage_call(what: str) -> Iterator[None]:
    """Run one storage call; network faults and 5xx/408/429 become `Transient`."""
    TABLE_OPS.add()
    try:
        yield
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        raise
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise Transient(f"Table Storage unreachable during {what}: {type(exc).__name__}") from None
    except HttpResponseError as exc:
        if exc.status_code is None or exc.status_code >= 500 or exc.status_code in (408, 429):
            raise Transient(f"Table Storage failed during {what} (HTTP {exc.status_code})") from None
        raise


def _transport(pool_size: int) -> Any:
    """A pooled transport as wide as the function's concurrency (azure-core's default keeps 10)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=False)


def service_client(settings: Settings) -> TableServiceClient:
    transport = _transport(max(16, settings.fo_max_concurrency * 2))
    if settings.tables_connection_string:
        return TableServiceClient.from_connection_string(
            settings.tables_connection_string.get_secret_value(), transport=transport
        )
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    credential: Any = (
        ManagedIdentityCredential(client_id=settings.tables_client_id) if settings.tables_client_id else DefaultAzureCredential()
    )
    return TableServiceClient(endpoint=settings.tables_endpoint, credential=credential, transport=transport)


def table(service: TableServiceClient, name: str) -> TableClient:
    """The table, created on first use (idempotent)."""
    with storage_call(f"create table {name}"):
        service.create_table_if_not_exists(name)
    return service.get_table_client(name)
