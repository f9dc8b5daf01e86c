"""Table Storage access: clients from settings, safe keys, and one translation of storage errors."""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from http.client import HTTPResponse
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.request import getproxies

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import Pipeline, PipelineContext, PipelineRequest, PipelineResponse
from azure.core.pipeline.transport._requests_basic import RequestsTransport
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse
from azure.core.rest._requests_basic import RestRequestsTransportResponse
from azure.core.utils._pipeline_transport_rest_shared import BytesIOSocket
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient

from shared.errors import EntityTooLarge, Transient
from shared.fo.http import DirectSession, install_header_parser
from shared.settings import Settings

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


def _wire_entity(document: Mapping[str, Any]) -> dict[str, Any]:
    """An entity as the SDK serialised it (JSON with `@odata.type` annotations), typed again."""
    entity: dict[str, Any] = {}
    for name, value in document.items():
        if "@odata." in name or name.startswith("odata."):
            continue
        edm = document.get(f"{name}@odata.type")
        if edm == "Edm.Binary":
            entity[name] = base64.b64decode(str(value))
        elif edm in _FIXED_SIZES:
            entity[name] = EntityProperty(value, EdmType(edm))
        else:
            entity[name] = value
    return entity


def check_request(request: Any) -> None:
    """azure-core request hook: every entity a request writes (one, or each of a transaction's) is
    checked against Azure's limits before it is sent. One place for every table the bridge writes."""
    http = request.http_request
    if http.method not in ("POST", "PUT", "PATCH", "MERGE") or not http.body:
        return
    body = http.body.decode("utf-8", "surrogatepass") if isinstance(http.body, (bytes, bytearray)) else str(http.body)
    lines = [body] if body.lstrip().startswith("{") else [line for line in body.split("\r\n") if line.startswith("{")]
    for line in lines:
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "PartitionKey" in document:
            check_entity(_wire_entity(document))
            if len(line.encode("utf-8", "surrogatepass")) > ENTITY_BYTES:
                # Azurite measures the request's JSON (non-ASCII escaped) against the 1 MiB.
                where = f"{str(document.get('PartitionKey'))[:60]}/{str(document.get('RowKey'))[:60]}"
                raise EntityTooLarge(f"entity {where}: its JSON is {len(line)} bytes; Azurite refuses one over 1 MiB")


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


# A Table transaction is one multipart `$batch` request. azure-core (1.41, pinned in requirements.txt)
# runs the sub-requests' policies through a ThreadPoolExecutor it creates and joins twice per
# transaction: once preparing the request (`Pipeline._prepare_multipart_mixed_request`) and once
# parsing the answer (`_parts_helper`), for one StorageHeadersPolicy that only sets a header. Those
# threads cost 15-22 % of an event's CPU (BENCHMARKS.md), and writing the body and splitting the
# answer with the `email` package about a fifth more. The classes below do the same work in the
# calling thread, the multipart text by hand; tests/integration/test_table_transactions.py fails if
# azure-core changes the internals they rely on, and compares bytes and answers with azure-core's.
class SequentialMultipartPipeline(Pipeline[Any, Any]):
    """azure-core's Pipeline, its multipart sub-requests prepared in the calling thread."""

    @staticmethod
    def _prepare_multipart_mixed_request(request: Any) -> None:
        info = request.multipart_mixed_info
        if not info:
            return
        requests, policies, _boundary, options = info
        for sub_request in requests:
            if sub_request.multipart_mixed_info:  # a changeset inside the batch
                SequentialMultipartPipeline._prepare_multipart_mixed_request(sub_request)
            pipeline_request = PipelineRequest(sub_request, PipelineContext(None, **options))
            for policy in policies:
                _sync(policy.on_request(pipeline_request))

    def _prepare_multipart(self, request: Any) -> None:
        self._prepare_multipart_mixed_request(request)
        multipart_body(request)


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def multipart_body(request: Any, content_index: int = 0) -> int:
    """azure-core's `prepare_multipart_body` without the `email` package (most of an event's CPU in
    it): the same bytes its generator writes (HTTP policy: CRLF, nothing folded), the same headers."""
    info = request.multipart_mixed_info
    if not info:
        return 0
    requests, _policies, boundary, _options = info
    if not boundary:  # the email package would make one up: leave it to azure-core
        return int(request.prepare_multipart_body(content_index))
    parts: list[bytes] = []
    for sub_request in requests:
        if sub_request.multipart_mixed_info:  # a changeset: its own body, after its Content-Type
            content_index = multipart_body(sub_request, content_index)
            head = f"Content-Type: {sub_request.headers['Content-Type']}\r\n"
            payload = sub_request.serialize()
            payload = payload[payload.index(b"--") :]  # its body, without request line and headers
        else:
            head = f"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {content_index}\r\n"
            payload = sub_request.serialize()
            content_index += 1
        parts.append(head.encode("ascii") + b"\r\n" + _LINE_BREAK.sub(b"\r\n", payload))
    delimiter = f"--{boundary}".encode("ascii")
    body = delimiter + b"\r\n" + (b"\r\n" + delimiter + b"\r\n").join(parts) + b"\r\n" + delimiter + b"--\r\n"
    request.set_bytes_body(body)
    request.headers["Content-Type"] = f"multipart/mixed; boundary={boundary}"
    return content_index


def _sync(result: Any) -> None:
    if inspect.isawaitable(result):  # azure-core raises the same for an async policy in a sync pipeline
        raise TypeError("an async policy in a sync Table pipeline")


class _SequentialPartsResponse(RestRequestsTransportResponse):
    """A `$batch` answer whose parts are decoded and passed to the sub-requests' policies in the
    calling thread (azure-core's `_parts_helper` minus its thread pool)."""

    def parts(self) -> list[Any]:
        if not self.content_type or not self.content_type.startswith("multipart/mixed"):
            raise ValueError("You can't get parts if the response is not multipart/mixed")
        try:
            parts = self._decoded_parts()
        except _Unsplittable:  # a shape the splitter does not take: azure-core's own parser (email)
            parts = self._get_raw_parts()  # type: ignore[no-untyped-call]
        info = self.request.multipart_mixed_info
        policies = info[1] if info else []
        for part in parts:
            context = PipelineContext(None)
            pipeline_request = PipelineRequest(part.request, context)
            pipeline_response = PipelineResponse(part.request, part, context=context)
            for policy in policies:
                _sync(policy.on_response(pipeline_request, pipeline_response))
        return parts

    def _decoded_parts(self) -> list[Any]:
        """azure-core's `_get_raw_parts` with `multipart_parts` instead of the `email` package (a fifth
        of an event's CPU): each operation's answer is still read by http.client into the response
        type azure-core gives it, with its request, so status, headers and error bodies are the same."""
        requests = self.request.multipart_mixed_info[0]
        return self._decode(self.content_type or "", self.body(), requests)

    def _decode(self, content_type: str, body: bytes, requests: Sequence[Any]) -> list[Any]:
        responses: list[Any] = []
        for index, (part_type, content) in enumerate(multipart_parts(content_type, body)):
            media = part_type.split(";")[0].strip().lower()
            if media == "application/http":
                request = requests[index] if index < len(requests) else self.request  # as azure-core does
                socket: Any = BytesIOSocket(content)  # type: ignore[no-untyped-call]
                answer = HTTPResponse(socket, method=request.method)
                answer.begin()
                responses.append(RestHttpClientTransportResponse(request=request, internal_response=answer))  # type: ignore[no-untyped-call]
            elif media == "multipart/mixed" and index < len(requests) and requests[index].multipart_mixed_info:
                responses.extend(self._decode(part_type, content, requests[index].multipart_mixed_info[0]))
            else:
                raise ValueError("Multipart doesn't support part other than application/http for now")
        return responses


class _Unsplittable(ValueError):
    """A multipart body `multipart_parts` does not take apart (azure-core's parser then does)."""


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_HEADERS_END = re.compile(rb"\r?\n\r?\n")


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Type, content) of each part of a multipart body (RFC 2046): the text between
    `--boundary` lines, the line break before a delimiter belonging to the delimiter."""
    found = _BOUNDARY.search(content_type)
    if not found:
        raise _Unsplittable(f"no boundary in {content_type!r}")
    marker = b"--" + (found.group(1) or found.group(2)).encode("ascii")
    pieces: list[bytes] = []
    start: int | None = None
    at = body.find(marker)
    while True:  # found by hand: a regex compiled per answer (each has its own boundary) costs more
        if at < 0:
            raise _Unsplittable("no closing boundary")
        if at == 0 or body[at - 1 : at] == b"\n":  # a delimiter starts a line
            end = at + len(marker)
            closing = body.startswith(b"--", end)
            end += 2 if closing else 0
            while body[end : end + 1] in (b" ", b"\t"):
                end += 1
            line_end = 2 if body.startswith(b"\r\n", end) else 1 if body.startswith(b"\n", end) else 0
            if line_end or end == len(body):
                if start is not None:  # the line break before the delimiter belongs to it
                    cut = at - 2 if body[at - 2 : at] == b"\r\n" else at - 1
                    pieces.append(body[start : max(start, cut)])
                if closing:
                    break
                start = end + line_end
        at = body.find(marker, at + 1)
    parts: list[tuple[str, bytes]] = []
    for piece in pieces:
        if piece.startswith((b"\r\n", b"\n")):  # no headers
            head, content = b"", piece[piece.index(b"\n") + 1 :]
        else:
            blank = _HEADERS_END.search(piece)
            if not blank:
                raise _Unsplittable("a part without the blank line after its headers")
            head, content = piece[: blank.start()], piece[blank.end() :]
        headers = {}
        for line in head.decode("latin-1").splitlines():
            name, colon, value = line.partition(":")
            if not colon or line[:1] in (" ", "\t"):
                raise _Unsplittable(f"a header line it does not take: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        if headers.get("content-transfer-encoding", "binary").lower() not in ("binary", "7bit", "8bit"):
            raise _Unsplittable(f"content transfer encoding {headers['content-transfer-encoding']}")
        parts.append((headers.get("content-type", ""), content))
    return parts


class TableTransport(RequestsTransport):
    """requests' transport whose `$batch` answers parse their parts without a thread pool."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        if getattr(request, "multipart_mixed_info", None) and type(response) is RestRequestsTransportResponse:
            response.__class__ = _SequentialPartsResponse  # same object, one method replaced
        return response


def _transport(pool_size: int) -> Any:
    """A pooled transport as wide as the function's concurrency (azure-core's default keeps 10)."""
    import requests

    session = DirectSession()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # Without a proxy configured, skip requests' per-call scan of the environment and ~/.netrc (as
    # shared/fo/http.py does); azure-core applies its use_env_settings only to sessions it creates.
    session.trust_env = bool(getproxies())
    install_header_parser()  # each transaction's answer and its parts: see shared/fo/http.py
    return TableTransport(session=session, session_owner=False)


def connect(connection_string: str, **options: Any) -> TableServiceClient:
    """A service client from a connection string, every write checked against Azure's limits."""
    options.setdefault("transport", _transport(16))
    return TableServiceClient.from_connection_string(connection_string, raw_request_hook=check_request, **options)


def service_client(settings: Settings) -> TableServiceClient:
    transport = _transport(max(16, settings.fo_max_concurrency * 2))
    if settings.tables_connection_string:
        return connect(settings.tables_connection_string.get_secret_value(), transport=transport)
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    credential: Any = (
        ManagedIdentityCredential(client_id=settings.tables_client_id) if settings.tables_client_id else DefaultAzureCredential()
    )
    return TableServiceClient(
        endpoint=settings.tables_endpoint, credential=credential, transport=transport, raw_request_hook=check_request
    )


def table(service: TableServiceClient, name: str) -> TableClient:
    """The table, created on first use (idempotent)."""
    with storage_call(f"create table {name}"):
        service.create_table_if_not_exists(name)
    client = service.get_table_client(name)
    pipeline = client._client._client._pipeline  # see SequentialMultipartPipeline
    if type(pipeline) is not Pipeline:
        raise TypeError(f"azure-data-tables built a {type(pipeline).__name__}, not azure-core's Pipeline")
    pipeline.__class__ = SequentialMultipartPipeline  # same object, multipart preparation replaced
    generated = client._client
    generated.send_request = functools.partial(_send_transaction, generated)  # type: ignore[method-assign]
    return client


def _send_transaction(generated: Any, request: Any, **kwargs: Any) -> Any:
    """The generated client's `send_request` (azure-data-tables 12.7, pinned) without its `deepcopy`
    of the request, every sub-request and header copied: a tenth of a transaction's CPU. Its one
    caller, `TableClient._batch_send`, builds the request for that call and never uses it again."""
    url = generated._serialize.url("self._config.url", generated._config.url, "str", skip_quote=True)
    request.url = generated._client.format_url(request.url, url=url)
    return generated._client.send_request(request, **kwargs)
