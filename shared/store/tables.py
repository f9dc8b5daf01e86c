"""Table Storage access: clients from settings (shared/store/table_rest.py speaks the REST API), safe
keys, Azure's limits checked before every write, and one translation of storage errors."""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import EntityProperty

from shared.errors import EntityTooLarge, Transient
from shared.settings import Settings
from shared.store.table_rest import Table, TableService

# The tables the bridge keeps, each named TABLES_PREFIX + this. The orders' progress, the content
# index and the genealogy live in the ledger's table (in the company's partition: "forwarded", "the
# watermark moved" and "these batches went in" are one transaction), so they have no table of their own.
LEDGER_TABLE = "Ledger"
EVENTS_TABLE = "Events"
TABLES = (LEDGER_TABLE, EVENTS_TABLE)
#: Where the genealogy was kept before it moved into the ledger's table (`python -m shared.ops.cli upgrade`).
LEGACY_LINEAGE_TABLE = "Lineage"

_ENCODED = set("/\\#?%~") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}
_TO_ENCODE = re.compile("[" + "".join(sorted(re.escape(c) for c in _ENCODED)) + "\ud800-\udfff]")  # any of them
_COMMA_AZURITE_MISREADS = re.compile(r"(?:^|(?<='))(?:,)")
_MAX_KEY_UNITS = 400  # a key holds 1 KiB = 512 UTF-16 code units; the rest is margin

# Azure's limits, which Azurite does not enforce (it takes a 1.8 MiB entity): every write is measured
# against them before it leaves the process. Sizes as Azure counts them: strings in UTF-16 (2 bytes a
# code unit), https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model
# and https://learn.microsoft.com/archive/blogs/avkashchauhan/how-the-size-of-an-entity-is-caclulated-in-windows-azure-table-storage
ENTITY_BYTES = 1024 * 1024
STRING_UNITS = 32 * 1024  # 64 KiB of UTF-16 (Azurite agrees: 32,768 units pass, 32,769 fail)
BINARY_BYTES = 64 * 1024
MAX_PROPERTIES = 252  # 255 with PartitionKey, RowKey and Timestamp


def utf16_units(text: str) -> int:
    """The length Table Storage counts: UTF-16 code units (an emoji is two, a lone surrogate one)."""
    if text.isascii():  # nearly every key and value: one unit a character, without encoding a copy
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def utf16_prefix(text: str, units: int) -> str:
    """The longest prefix of `text` within `units` UTF-16 code units, never half a surrogate pair."""
    if units <= 0:
        return ""
    if len(text) <= units // 2:  # fast path: even all-astral text fits
        return text
    raw = text.encode("utf-16-le", "surrogatepass")[: units * 2]
    if len(raw) >= 2 and 0xD8 <= raw[-1] <= 0xDB:  # ends on a high surrogate: its pair did not fit
        raw = raw[:-2]
    return raw.decode("utf-16-le", "surrogatepass")


def cut_text(text: str, units: int, where: str) -> str:
    """`text` within `units` UTF-16 code units, saying how long it was when it had to be cut."""
    if utf16_units(text) <= units:
        return text
    note = f" [... cut: {utf16_units(text)} UTF-16 units did not fit in {where}]"
    return utf16_prefix(text, max(0, units - len(note))) + note


def utf16_parts(text: str, units: int = STRING_UNITS) -> list[str]:
    """`text` cut into strings of at most `units` UTF-16 code units each (one "" for an empty text)."""
    parts: list[str] = []
    while True:
        part = utf16_prefix(text, units) or text[:1]  # a pair in a one-unit part: it cannot be split
        parts.append(part)
        text = text[len(part) :]
        if not text:
            return parts


def put_text(entity: dict[str, Any], name: str, text: str, *, stored_parts: int = 1) -> None:
    """Store `text` whole as `name`, `name`1, `name`2... (`name`Parts says how many), each within the
    64 KiB a string property holds. `stored_parts` blanks the parts of a longer text written before
    (a merge keeps properties it is not given)."""
    parts = utf16_parts(text)
    for n, part in enumerate(parts):
        entity[name if n == 0 else f"{name}{n}"] = part
    for n in range(len(parts), stored_parts):
        entity[f"{name}{n}"] = ""
    if len(parts) > 1 or stored_parts > 1:
        entity[f"{name}Parts"] = len(parts)


def get_text(entity: Mapping[str, Any], name: str) -> str:
    """A text `put_text` stored (or a plain string property)."""
    count = int(entity.get(f"{name}Parts") or 1)
    return "".join(str(entity.get(name if n == 0 else f"{name}{n}") or "") for n in range(count))


def text_parts(entity: Mapping[str, Any], name: str) -> int:
    return int(entity.get(f"{name}Parts") or 1)


def text_properties(name: str) -> list[str]:
    """Every property a text may occupy (for a `select`)."""
    return [name, f"{name}Parts", *(f"{name}{n}" for n in range(1, ENTITY_BYTES // (STRING_UNITS * 2)))]


_FIXED_SIZES = {"Edm.Boolean": 1, "Edm.DateTime": 8, "Edm.Double": 8, "Edm.Guid": 16, "Edm.Int32": 4, "Edm.Int64": 8}


def _value_size(value: Any) -> tuple[int, str]:
    """(bytes Azure counts, the EDM type) for a property value as the SDK is given it."""
    if isinstance(value, EntityProperty):
        edm = str(value.edm_type.value if hasattr(value.edm_type, "value") else value.edm_type)
        inner = value.value
        if edm == "Edm.String":
            return 4 + 2 * utf16_units(str(inner)), edm
        if edm == "Edm.Binary":
            return 4 + len(inner if isinstance(inner, bytes) else str(inner).encode()), edm
        return _FIXED_SIZES.get(edm, 8), edm
    if isinstance(value, str):
        return 4 + 2 * utf16_units(value), "Edm.String"
    if isinstance(value, (bytes, bytearray)):
        return 4 + len(value), "Edm.Binary"
    if isinstance(value, bool):
        return 1, "Edm.Boolean"
    if isinstance(value, int):
        return (4, "Edm.Int32") if -(2**31) <= value < 2**31 else (8, "Edm.Int64")
    if isinstance(value, float):
        return 8, "Edm.Double"
    if isinstance(value, datetime):
        return 8, "Edm.DateTime"
    if isinstance(value, uuid.UUID):
        return 16, "Edm.Guid"
    return 4 + 2 * utf16_units(str(value)), "Edm.String"


def entity_size(entity: Mapping[str, Any]) -> int:
    """The entity's size as Azure counts it toward its 1 MiB."""
    size = 4 + 2 * (utf16_units(str(entity.get("PartitionKey", ""))) + utf16_units(str(entity.get("RowKey", ""))))
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey", "Timestamp") or value is None:
            continue
        size += 8 + 2 * utf16_units(name) + _value_size(value)[0]
    return size


def json_size(text: str) -> int:
    """Bytes of `text` in the SDK's request JSON (non-ASCII escaped: 6 bytes a UTF-16 unit)."""
    return len(encode_basestring_ascii(text))  # what json.dumps does with a str, without building an encoder


def wire_size(entity: Mapping[str, Any]) -> int:
    """About the bytes of the entity's request JSON, names and type annotations included."""
    size = 2
    for name, value in entity.items():
        if value is None:
            continue
        if isinstance(value, EntityProperty):
            value = value.value
        if isinstance(value, (bytes, bytearray)):
            encoded = 2 + 4 * -(-len(value) // 3)
        elif isinstance(value, str):
            encoded = json_size(value)
        else:
            encoded = 40
        size += 2 * json_size(name) + encoded + 32  # "Name": value, "Name@odata.type": "Edm.String",
    return size


def check_entity(entity: Mapping[str, Any]) -> None:
    """`EntityTooLarge` naming what is over Azure's limits; nothing when the entity fits."""
    for key in ("PartitionKey", "RowKey"):
        if utf16_units(str(entity.get(key, ""))) > 512:
            raise EntityTooLarge(f"{_where(entity)}: the {key} is over 1 KiB")
    # One pass over the properties (every write goes through here): sizes, and the first too long.
    sizes: dict[str, int] = {}
    too_long = ""
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey", "Timestamp") or value is None:
            continue
        size, edm = _value_size(value)
        sizes[name] = size
        limit = 4 + (2 * STRING_UNITS if edm == "Edm.String" else BINARY_BYTES)
        if not too_long and edm in ("Edm.String", "Edm.Binary") and size > limit:
            too_long = name
    if len(sizes) > MAX_PROPERTIES:
        raise EntityTooLarge(f"{_where(entity)}: {len(sizes)} properties; Table Storage holds {MAX_PROPERTIES}")
    if too_long:
        raise EntityTooLarge(f"{_where(entity)}: property {too_long} is {sizes[too_long] - 4} bytes; a property holds 64 KiB")
    total = 4 + 2 * (utf16_units(str(entity.get("PartitionKey", ""))) + utf16_units(str(entity.get("RowKey", ""))))
    total += sum(8 + 2 * utf16_units(name) + size for name, size in sizes.items())
    if total > ENTITY_BYTES:
        biggest = sorted(sizes, key=lambda n: -sizes[n])[:3]
        raise EntityTooLarge(f"{_where(entity)}: {total} bytes; an entity holds 1 MiB (largest: {', '.join(biggest)})")


def _where(entity: Mapping[str, Any]) -> str:
    return f"entity {entity.get('PartitionKey')!s:.60}/{entity.get('RowKey')!s:.60}"


def safe_key(value: str) -> str:
    """A PartitionKey/RowKey for any string: forbidden characters percent-encoded, reversibly.

    Table Storage refuses `/ \\ # ?` and control characters in keys and caps them at 1 KiB; `%`
    is encoded too so that decoding is unambiguous. Over-long keys keep a prefix and a hash.
    """
    encoded = (
        "".join(
            "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")) if ch in _ENCODED or _lone(ch) else ch
            for ch in value
        )
        if _TO_ENCODE.search(value)
        else value
    )
    if not encoded:
        return "~empty"
    if "," in encoded:
        # Azurite cannot find a row in a transaction when its key starts with "," or holds "',"
        # (ResourceNotFound): such a comma is encoded too (Table Storage takes either).
        encoded = _COMMA_AZURITE_MISREADS.sub("%2C", encoded)
    if utf16_units(encoded) > _MAX_KEY_UNITS:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        encoded = utf16_prefix(encoded, _MAX_KEY_UNITS - 65) + "~" + digest
    return encoded


def key_range(prefix: str) -> tuple[str, str]:
    """The row keys that start with `prefix`, which ends with "|": from it up to the same with "}"
    ("|" and "}" are neighbours), for a query of one key range within a partition."""
    assert prefix.endswith("|"), prefix
    return prefix, prefix[:-1] + "}"


def key_value(key: str) -> str:
    """The string that `safe_key` encoded (for keys that were not shortened)."""
    from urllib.parse import unquote

    return "" if key == "~empty" else unquote(key, errors="surrogatepass")


def _lone(ch: str) -> bool:
    """A lone surrogate (valid in JSON text, not in UTF-8): it cannot go into a request's URL as is."""
    return "\ud800" <= ch <= "\udfff"


class OpCounter:
    """Table operations made by this process (the benchmark reports them per event)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.count += n


TABLE_OPS = OpCounter()


class StorageTime:
    """Wall time spent in Table Storage calls by one delivery: its outcome line reports it beside
    F&O's, so a slow delivery says which of the two it waited for."""

    def __init__(self) -> None:
        self.ms = 0.0


_STORAGE_TIME: ContextVar[StorageTime | None] = ContextVar("storage_time", default=None)


@contextmanager
def timing_storage() -> Iterator[StorageTime]:
    """Add up the storage calls made inside the block (in this thread) to the `StorageTime` given."""
    spent = StorageTime()
    token = _STORAGE_TIME.set(spent)
    try:
        yield spent
    finally:
        _STORAGE_TIME.reset(token)


@contextmanager
def storage_call(what: str) -> Iterator[None]:
    """Run one storage call; network faults and 5xx/408/429 become `Transient`."""
    TABLE_OPS.add()
    spent = _STORAGE_TIME.get()
    started = time.perf_counter() if spent is not None else 0.0
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
    finally:
        if spent is not None:
            spent.ms += (time.perf_counter() - started) * 1000


def check_write(entity: Mapping[str, Any], body: bytes) -> None:
    """Every entity the bridge writes, before it is sent: Azure's limits on the entity, and Azurite's
    on its JSON (it measures the request's JSON, non-ASCII escaped, against the 1 MiB).

    Most writes are a few hundred bytes of JSON: below 32 KiB no string can be over its 32 Ki UTF-16
    units (the JSON spends at least a byte on each, six on anything not ASCII) and the entity is far
    below 1 MiB, so only the keys and the number of properties need looking at."""
    if len(body) < STRING_UNITS and len(entity) <= MAX_PROPERTIES:
        for key in ("PartitionKey", "RowKey"):
            if utf16_units(str(entity.get(key, ""))) > 512:
                raise EntityTooLarge(f"{_where(entity)}: the {key} is over 1 KiB")
        return
    check_entity(entity)
    if len(body) > ENTITY_BYTES:
        where = f"{str(entity.get('PartitionKey'))[:60]}/{str(entity.get('RowKey'))[:60]}"
        raise EntityTooLarge(f"entity {where}: its JSON is {len(body)} bytes; Azurite refuses one over 1 MiB")


def connect(connection_string: str) -> TableService:
    """The account of a connection string (an account key, or a SAS), every write checked."""
    return TableService.from_connection_string(connection_string, check=check_write)


def service_client(settings: Settings) -> TableService:
    if settings.tables_connection_string:
        return connect(settings.tables_connection_string.get_secret_value())
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    credential: Any = (
        ManagedIdentityCredential(client_id=settings.tables_client_id) if settings.tables_client_id else DefaultAzureCredential()
    )
    return TableService.with_credential(settings.tables_endpoint, credential, check=check_write)


def table(service: TableService, name: str) -> Table:
    """The table, created on first use (idempotent)."""
    with storage_call(f"create table {name}"):
        return service.create_table_if_not_exists(name)
