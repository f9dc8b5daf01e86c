"""Table Storage's REST API, spoken directly over http.client.

Every inbound event makes two Table calls, and through azure-data-tables each one cost more CPU than
the rest of the event: azure-core's pipeline of a dozen policies, requests and urllib3 under it, the
multipart machinery of a transaction (BENCHMARKS.md, "Where the CPU goes"). The bridge uses seven
calls of the API (read, insert, update, upsert, delete, a transaction, a query), all documented in
https://learn.microsoft.com/rest/api/storageservices/table-service-rest-api, so this module sends
exactly those requests itself: one kept-alive connection per worker thread, the request signed with
the account key (Shared Key) or a Microsoft Entra token, the answer read into the SDK's own types.

So the rest of the bridge does not change: entities are `azure.data.tables.TableEntity` with their
`metadata` (etag, timestamp), typed values are `EntityProperty`, and failures are azure-core's
exceptions (`ResourceNotFoundError`, `ResourceExistsError`, `ResourceModifiedError`,
`TableTransactionError` with the failed operation's `index`, `HttpResponseError` with its
`status_code`, `ServiceRequestError`/`ServiceResponseError` when the network fails).
tests/integration/test_table_rest.py holds it to the SDK: the same entities written by one and read
by the other against Azurite, the same errors, the same serialised values.

Retries are not done here (shared/store/tables.py turns a failure into `Transient`, which the
pipeline retries with its one policy), except that a kept-alive connection the server closed while
idle is reopened and the request sent again on it once: the server never saw it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import math
import os
import re
import select
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import formatdate
from enum import Enum
from typing import Any, Protocol
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import EdmType, EntityProperty, TableEntity, TableTransactionError, UpdateMode
from opentelemetry import trace
from opentelemetry.trace import SpanKind

#: The REST API version the SDK (12.7) speaks, and the first with Microsoft Entra authorisation.
API_VERSION = "2019-02-02"
STORAGE_SCOPE = "https://storage.azure.com/.default"
#: Azurite's development account (`UseDevelopmentStorage=true`): public, the same everywhere.
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_CONNECT_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 30.0
_INT32 = (-(2**31), 2**31)
_INT64 = (-(2**63), 2**63)
_JSON = "application/json"
_TRACER = trace.get_tracer("mesbridge.tables")
_MINIMAL = "application/json;odata=minimalmetadata"


#: Sees every entity and its JSON before it is written; raises to stop the write.
Check = Callable[[Mapping[str, Any], bytes], None]


class TokenSource(Protocol):
    """An azure-identity credential (ManagedIdentityCredential, DefaultAzureCredential...)."""

    def get_token(self, *scopes: str) -> Any: ...


# --- where and how to sign ----------------------------------------------------------------------


class _SharedKey:
    """Shared Key authorisation for the Table service:
    https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key#table-service-shared-key-authorization"""

    def __init__(self, account: str, key: str) -> None:
        self.account = account
        try:
            self._key = base64.b64decode(key, validate=True)
        except ValueError:
            raise ValueError("the account key of the Table Storage connection string is not base64") from None

    def sign(self, method: str, path: str, headers: dict[str, str]) -> None:
        # The canonical resource is the path as sent (Azurite's has the account in it too), no query
        # (the Table service signs only `comp`, which the bridge never sends).
        content = f"{headers.get('Content-MD5', '')}\n{headers.get('Content-Type', '')}"
        text = f"{method}\n{content}\n{headers['x-ms-date']}\n/{self.account}{path}"
        digest = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {self.account}:{base64.b64encode(digest).decode('ascii')}"


class _Bearer:
    """A Microsoft Entra token for Storage (the function app's managed identity), renewed five
    minutes before it expires: https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory"""

    def __init__(self, credential: TokenSource, clock: Callable[[], float] = time.time) -> None:
        self._credential = credential
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._expires_on = 0.0

    def sign(self, method: str, path: str, headers: dict[str, str]) -> None:
        if self._clock() > self._expires_on - 300:
            with self._lock:
                if self._clock() > self._expires_on - 300:
                    token = self._credential.get_token(STORAGE_SCOPE)
                    self._token, self._expires_on = str(token.token), float(token.expires_on)
        headers["Authorization"] = f"Bearer {self._token}"


class _Anonymous:
    """A SAS token in the URL authorises the request itself."""

    def sign(self, method: str, path: str, headers: dict[str, str]) -> None:
        return None


def parse_connection_string(text: str) -> dict[str, str]:
    """A storage connection string's settings, by lower-case name."""
    settings: dict[str, str] = {}
    for part in text.strip().strip(";").split(";"):
        name, equals, value = part.strip().partition("=")
        if not equals or not name:
            raise ValueError("the Table Storage connection string is not `Name=value;Name=value;...`")
        settings[name.strip().lower()] = value.strip()
    return settings


# --- the connections ----------------------------------------------------------------------------


class _Connections(threading.local):
    connection: http.client.HTTPConnection | None = None


class Endpoint:
    """The account's Table endpoint, one kept-alive connection to it per thread (the Functions
    worker's threads live as long as the instance)."""

    def __init__(self, url: str, signer: _SharedKey | _Bearer | _Anonymous, sas: str = "") -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the Table endpoint {url!r} is not an http(s) URL")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path  # Azurite's endpoints carry the account name
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 literal, as http.client writes it
        self._host_header = host if self.port == (443 if parts.scheme == "https" else 80) else f"{host}:{self.port}"
        self.signer = signer
        self.sas = sas.lstrip("?")
        self._local = _Connections()
        self._proxy = self._proxy_for(parts.scheme, parts.hostname)

    @staticmethod
    def _proxy_for(scheme: str, host: str) -> tuple[str, int] | None:
        proxy = getproxies().get(scheme)
        if not proxy or host in ("127.0.0.1", "localhost", "::1") or proxy_bypass(host):
            return None  # a loopback endpoint (Azurite) is never reached through a proxy
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return (parts.hostname or "", parts.port or 8080)

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._proxy or (self.host, self.port)
        connection: http.client.HTTPConnection
        if self.scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=_CONNECT_TIMEOUT_S)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=_CONNECT_TIMEOUT_S)
        if self._proxy and self.scheme == "https":
            connection.set_tunnel(self.host, self.port)
        return connection

    def _target(self, path_and_query: str) -> str:
        if self._proxy and self.scheme == "http":  # a plain-HTTP proxy takes the absolute URL
            return f"{self.scheme}://{self.host}:{self.port}{path_and_query}"
        return path_and_query

    def send(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request; (status, headers, body) of its answer. `path` is below the endpoint, quoted."""
        full_path = self.base_path + path
        now = formatdate(usegmt=True)
        headers["x-ms-date"] = now
        headers["x-ms-version"] = API_VERSION
        headers["DataServiceVersion"] = "3.0"
        self.signer.sign(method, full_path, headers)
        if self.sas:
            query = f"{query}&{self.sas}" if query else self.sas
        target = self._target(full_path + (f"?{query}" if query else ""))
        # The one dependency per call in Application Insights (requests' instrumentation made it when
        # the SDK sent through requests): the URL without its query, which may carry a SAS.
        with _TRACER.start_as_current_span(
            f"{method} {self.host}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "server.address": self.host, "url.full": f"{self.url}{path}"},
        ) as span:
            status, answer_headers, data = self._exchange(method, target, headers, body)
            span.set_attribute("http.response.status_code", status)
            return status, answer_headers, data

    def _request(self, method: str, target: str, headers: dict[str, str], body: bytes | None) -> bytes:
        """The request as http.client's `request` writes it (Host, Accept-Encoding: identity, the
        headers, Content-Length when there is a body or the method expects one), in one string:
        http.client checks and encodes each header line apart, a tenth of a Table call's CPU. Every
        value here is the bridge's own; one with a line break is refused as http.client refuses it."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}", "Accept-Encoding: identity"]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"Invalid header value {value!r}")
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    def _exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        for attempt in (1, 2):
            connection = self._local.connection
            reused = connection is not None and connection.sock is not None
            if connection is None or (reused and _closed_by_peer(connection)):
                if connection is not None:
                    connection.close()
                connection = self._local.connection = self._connect()
                reused = False
            sent = False
            try:
                if connection.sock is None:
                    connection.connect()
                sock = connection.sock
                sock.sendall(self._request(method, target, headers, body))
                sent = True
                sock.settimeout(_READ_TIMEOUT_S)
                # The answer is read as http.client's connection reads it (the same response class on
                # the same socket); the request is written in one piece, see `_request`.
                answer = http.client.HTTPResponse(sock, method=method)
                answer.begin()
                data = answer.read()
                if answer.will_close:
                    connection.close()
                return answer.status, answer.headers, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                connection.close()
                if reused and attempt == 1:
                    continue  # the server closed the idle connection as the request went out
                raise (ServiceResponseError if sent else ServiceRequestError)(f"{type(exc).__name__}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise (ServiceResponseError if sent else ServiceRequestError)(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """True when a kept-alive connection's socket is readable while no request is out: the server
    closed it (an idle timeout; Azurite's is 5 s)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


# --- values -------------------------------------------------------------------------------------


def _utc_text(value: datetime) -> str:
    if getattr(value, "tables_service_value", ""):  # the SDK's round-trip datetime: its exact text
        return str(value.tables_service_value)  # type: ignore[attr-defined]
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _double(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _int_in(value: Any, bounds: tuple[int, int], edm: str) -> int:
    number = int(value)
    if not bounds[0] <= number < bounds[1]:
        raise TypeError(f"{value} is too large to be cast to type {edm}.")
    return number


def _typed(edm: str, value: Any) -> tuple[str | None, Any]:
    """(annotation, JSON value) of an `EntityProperty`: the type is always written, as the SDK does."""
    if edm == "Edm.String":
        return edm, str(value)
    if edm == "Edm.Int64":
        return edm, str(_int_in(value, _INT64, edm))
    if edm == "Edm.Int32":
        return edm, _int_in(value, _INT32, edm)
    if edm == "Edm.Boolean":
        return edm, value
    if edm == "Edm.Double":
        return edm, _double(value)
    if edm == "Edm.DateTime":
        return edm, value if isinstance(value, str) else _utc_text(value)
    if edm == "Edm.Guid":
        return edm, str(value)
    if edm == "Edm.Binary":
        return edm, base64.b64encode(value.encode("utf-8") if isinstance(value, str) else value).decode("ascii")
    raise TypeError(f"Type not supported when sending data to the service: {edm}.")


def entity_json(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The entity as the service takes it: what needs a type says so with `Name@odata.type`
    (https://learn.microsoft.com/rest/api/storageservices/payload-format-for-table-service-operations);
    strings, 32-bit integers and booleans go as JSON (the SDK's rules, without its string annotations)."""
    document: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if kind is str or kind is bool:
            document[name] = value
            continue
        if value is None:
            continue
        edm: str | None
        if isinstance(value, Enum):  # before int: an IntEnum is written as its text, as the SDK does
            edm, value = None, str(value)
        elif kind is int:
            edm, value = None, _int_in(value, _INT32, "Edm.Int32")
        elif isinstance(value, tuple):  # EntityProperty
            if value[0] is None:
                continue
            edm, value = _typed(str(EdmType(value[1]).value), value[0])
        elif isinstance(value, datetime):
            edm, value = "Edm.DateTime", _utc_text(value)
        elif isinstance(value, float):
            edm, value = "Edm.Double", _double(value)
        elif isinstance(value, (bytes, bytearray)):
            edm, value = "Edm.Binary", base64.b64encode(value).decode("ascii")
        elif isinstance(value, uuid.UUID):
            edm, value = "Edm.Guid", str(value)
        else:
            raise TypeError(f"Type not supported when sending data to the service: {type(value)}.")
        document[name] = value
        if edm:
            document[f"{name}@odata.type"] = edm
    return document


def _parse_time(text: str) -> datetime:
    # The service writes 7 fractional digits; Python keeps 6.
    return datetime.fromisoformat(text)


def entity_from_json(document: Mapping[str, Any]) -> TableEntity:
    """An entity as the SDK reads it: Int64 as `EntityProperty`, DateTime as an aware datetime,
    Binary as bytes, Guid as UUID, Double as float; the ETag and Timestamp in `metadata`."""
    entity = TableEntity()
    for name, value in document.items():
        if "@odata.type" in name or name.startswith("odata.") or name == "Timestamp":
            continue
        edm = document.get(f"{name}@odata.type")
        if edm is None:
            if type(value) is int and not _INT32[0] <= value < _INT32[1]:
                value = EntityProperty(value, EdmType.INT64)
            entity[name] = value
        elif edm == "Edm.Int64":
            entity[name] = EntityProperty(int(value), EdmType.INT64)
        elif edm == "Edm.DateTime":
            entity[name] = _parse_time(value)
        elif edm == "Edm.Binary":
            entity[name] = base64.b64decode(value)
        elif edm == "Edm.Guid":
            entity[name] = uuid.UUID(value)
        elif edm == "Edm.Double":
            entity[name] = float(value)
        else:
            entity[name] = value
    stamp = document.get("Timestamp")
    entity._metadata = {"etag": document.get("odata.etag"), "timestamp": _parse_time(stamp) if stamp else None}
    return entity


def filter_with(query_filter: str, parameters: Mapping[str, Any] | None) -> str:
    """The SDK's `@name` substitution (azure.data.tables._serialize._parameter_filter_substitution)."""
    if not parameters:
        return query_filter
    words = query_filter.split(" ")
    for index, word in enumerate(words):
        if not word.startswith("@"):
            continue
        value = parameters[word[1:]]
        if value is True or value is False:
            words[index] = str(value).lower()
        elif isinstance(value, float):
            words[index] = str(value)
        elif isinstance(value, int):
            words[index] = str(value) if value.bit_length() <= 32 else f"{value}L"
        elif isinstance(value, datetime):
            words[index] = f"datetime'{_utc_text(value)}'"
        elif isinstance(value, uuid.UUID):
            words[index] = f"guid'{value}'"
        elif isinstance(value, bytes):
            words[index] = f"X'{value.hex()}'"
        else:
            words[index] = "'" + str(value).replace("'", "''") + "'"
    return " ".join(words)


# --- errors -------------------------------------------------------------------------------------

#: An answer's headers: http.client's, or a transaction part's (lower-case names).
Headers = http.client.HTTPMessage | Mapping[str, str]

_NOT_FOUND = {"ResourceNotFound", "TableNotFound", "EntityNotFound"}
_EXISTS = {"ResourceAlreadyExists", "TableAlreadyExists", "AccountAlreadyExists", "EntityAlreadyExists"}
_MODIFIED = {"ConditionNotMet", "UpdateConditionNotSatisfied"}
_AUTH = {"InvalidAuthenticationInfo", "AuthenticationFailed", "AuthorizationFailure", "NoAuthenticationInformation"}


def _error_of(status: int, headers: Headers, body: bytes) -> tuple[str, str]:
    """(error code, message) of a refusal: the OData error document, else the header."""
    code, message = headers.get("x-ms-error-code", "") or "", ""
    try:
        document = json.loads(body) if body else {}
        detail = document.get("odata.error", {}) if isinstance(document, dict) else {}
        code = str(detail.get("code") or code)
        message = str((detail.get("message") or {}).get("value") or "")
    except (ValueError, AttributeError):
        message = body[:500].decode("utf-8", "replace")
    return code, message or f"HTTP {status}"


def refusal(status: int, headers: Headers, body: bytes) -> HttpResponseError:
    """The azure-core exception the SDK raises for this answer (azure.data.tables._error._decode_error)."""
    code, message = _error_of(status, headers, body)
    kind: type[HttpResponseError]
    if code in _MODIFIED or (status == 412 and not code):
        kind = ResourceModifiedError
    elif code in _NOT_FOUND or (status == 404 and not code):
        kind = ResourceNotFoundError
    elif code in _EXISTS or (status == 409 and not code):
        kind = ResourceExistsError
    elif code in _AUTH:
        kind = ClientAuthenticationError
    else:
        kind = HttpResponseError
    error = kind(message=f"{message}\nErrorCode:{code}")
    error.status_code = status
    error.error_code = code  # type: ignore[attr-defined]
    return error


def _transaction_refusal(status: int, headers: Headers, body: bytes) -> TableTransactionError:
    """The failed operation's answer: its message starts with the operation's index ("1:The
    specified entity already exists."), as the SDK reads it."""
    code, message = _error_of(status, headers, body)
    error = TableTransactionError(message=f"{message}\nErrorCode:{code}")
    error.status_code = status
    error.error_code = code  # type: ignore[attr-defined]
    return error


# --- multipart (a transaction's answer) ---------------------------------------------------------


class Unsplittable(ValueError):
    """A multipart body `multipart_parts` does not take apart."""


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_HEADERS_END = re.compile(rb"\r?\n\r?\n")


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Type, content) of each part of a multipart body (RFC 2046): the text between
    `--boundary` lines, the line break before a delimiter belonging to the delimiter."""
    found = _BOUNDARY.search(content_type)
    if not found:
        raise Unsplittable(f"no boundary in {content_type!r}")
    marker = b"--" + (found.group(1) or found.group(2)).encode("ascii")
    pieces: list[bytes] = []
    start: int | None = None
    at = body.find(marker)
    while True:
        if at < 0:
            raise Unsplittable("no closing boundary")
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
        head, content = _split_head(piece)
        headers = _header_lines(head)
        if headers.get("content-transfer-encoding", "binary").lower() not in ("binary", "7bit", "8bit"):
            raise Unsplittable(f"content transfer encoding {headers['content-transfer-encoding']}")
        parts.append((headers.get("content-type", ""), content))
    return parts


def _split_head(piece: bytes) -> tuple[bytes, bytes]:
    if piece.startswith((b"\r\n", b"\n")):  # no headers
        return b"", piece[piece.index(b"\n") + 1 :]
    blank = _HEADERS_END.search(piece)
    if not blank:
        return piece, b""
    return piece[: blank.start()], piece[blank.end() :]


def _header_lines(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if not colon or line[:1] in (" ", "\t"):
            raise Unsplittable(f"a header line it does not take: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def _operation_answers(content_type: str, body: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Each operation's (status, headers, body) in a `$batch` answer: its one changeset's parts."""
    answers: list[tuple[int, dict[str, str], bytes]] = []
    for part_type, content in multipart_parts(content_type, body):
        media = part_type.split(";")[0].strip().lower()
        if media == "multipart/mixed":
            answers.extend(_operation_answers(part_type, content))
        elif media == "application/http":
            head, payload = _split_head(content)
            status_line, _, header_text = head.partition(b"\n")
            fields = status_line.split()
            if len(fields) < 2 or not fields[1].isdigit():
                raise Unsplittable(f"no status line in a transaction's answer: {status_line[:80]!r}")
            answers.append((int(fields[1]), _header_lines(header_text), payload))
        else:
            raise Unsplittable(f"a {media} part in a transaction's answer")
    return answers


# --- the table ----------------------------------------------------------------------------------

Operation = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], Mapping[str, Any]]


# What `quote(text, safe="")` does to ASCII, as one translation table: a key is quoted for every
# operation of every transaction, and quote's generic path was a twentieth of an event's CPU.
_QUOTED_ASCII = {c: f"%{c:02X}" for c in range(128) if not (chr(c).isalnum() or chr(c) in "_.-~")}


def _key(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("PartitionKey or RowKey must be of type string.")
    doubled = value.replace("'", "''")
    return doubled.translate(_QUOTED_ASCII) if doubled.isascii() else quote(doubled, safe="")


def _if_match(options: Mapping[str, Any]) -> str:
    if options.get("match_condition") == MatchConditions.IfNotModified:
        etag = options.get("etag")
        if not etag:
            raise ValueError("an update guarded by its ETag needs the ETag")
        return str(etag)
    return "*"


class Table:
    """One table: the calls of azure-data-tables' `TableClient` that the bridge makes, same names,
    same arguments, same results. `check` sees every entity before it is written (Azure's limits)."""

    def __init__(self, endpoint: Endpoint, name: str, check: Check | None = None) -> None:
        self.endpoint = endpoint
        self.table_name = name
        self._check = check

    def _entity_path(self, partition_key: str, row_key: str) -> str:
        return f"/{self.table_name}(PartitionKey='{_key(partition_key)}',RowKey='{_key(row_key)}')"

    def _body(self, entity: Mapping[str, Any]) -> bytes:
        body = json.dumps(entity_json(entity), separators=(",", ":")).encode("ascii")
        if self._check is not None:
            self._check(entity, body)
        return body

    def _call(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], query: str = ""
    ) -> tuple[http.client.HTTPMessage, bytes]:
        status, answer_headers, data = self.endpoint.send(method, path, query, headers, body)
        if status >= 300:
            raise refusal(status, answer_headers, data)
        return answer_headers, data

    # reads

    def get_entity(self, partition_key: str, row_key: str, *, select: str | list[str] | None = None) -> TableEntity:
        query = f"$select={quote(select if isinstance(select, str) else ','.join(select), safe='')}" if select else ""
        _, data = self._call("GET", self._entity_path(partition_key, row_key), None, {"Accept": _MINIMAL}, query)
        return entity_from_json(json.loads(data))

    def query_entities(
        self,
        query_filter: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        select: str | list[str] | None = None,
        results_per_page: int | None = None,
    ) -> Iterator[TableEntity]:
        return self._pages(filter_with(query_filter, parameters), select, results_per_page)

    def list_entities(
        self, *, select: str | list[str] | None = None, results_per_page: int | None = None
    ) -> Iterator[TableEntity]:
        return self._pages("", select, results_per_page)

    def _pages(self, query_filter: str, select: str | list[str] | None, per_page: int | None) -> Iterator[TableEntity]:
        """Page after page, as the service continues it (x-ms-continuation-Next* headers)."""
        fixed = []
        if select:
            fixed.append(f"$select={quote(select if isinstance(select, str) else ','.join(select), safe='')}")
        if query_filter:
            fixed.append(f"$filter={quote(query_filter, safe='')}")
        if per_page:
            fixed.append(f"$top={int(per_page)}")
        next_keys: list[str] = []
        while True:
            headers, data = self._call("GET", f"/{self.table_name}()", None, {"Accept": _MINIMAL}, "&".join(fixed + next_keys))
            for document in json.loads(data).get("value", []):
                yield entity_from_json(document)
            partition, row = headers.get("x-ms-continuation-NextPartitionKey"), headers.get("x-ms-continuation-NextRowKey")
            if not partition:
                return
            next_keys = [f"NextPartitionKey={quote(partition, safe='')}"]
            if row:
                next_keys.append(f"NextRowKey={quote(row, safe='')}")

    # writes

    def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": _JSON, "Accept": _MINIMAL, "Prefer": "return-no-content"}
        answer, _ = self._call("POST", f"/{self.table_name}", self._body(entity), headers)
        return {"etag": answer.get("ETag")}

    def update_entity(self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE, **options: Any) -> dict[str, Any]:
        headers = {"Content-Type": _JSON, "Accept": _JSON, "If-Match": _if_match(options)}
        method = "PATCH" if mode == UpdateMode.MERGE else "PUT"
        answer, _ = self._call(method, self._entity_path(entity["PartitionKey"], entity["RowKey"]), self._body(entity), headers)
        return {"etag": answer.get("ETag")}

    def upsert_entity(self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE, **_options: Any) -> dict[str, Any]:
        method = "PATCH" if mode == UpdateMode.MERGE else "PUT"
        headers = {"Content-Type": _JSON, "Accept": _JSON}
        answer, _ = self._call(method, self._entity_path(entity["PartitionKey"], entity["RowKey"]), self._body(entity), headers)
        return {"etag": answer.get("ETag")}

    def delete_entity(self, partition_key: str, row_key: str, **options: Any) -> None:
        headers = {"Accept": _MINIMAL, "If-Match": _if_match(options)}
        try:
            self._call("DELETE", self._entity_path(partition_key, row_key), None, headers)
        except ResourceNotFoundError:
            if options.get("match_condition") == MatchConditions.IfNotModified:
                raise
            # The SDK's delete of a row that is not there succeeds.

    def submit_transaction(self, operations: Iterable[Operation]) -> list[dict[str, Any]]:
        """One entity-group transaction (https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions):
        all of the operations or none; the result is each operation's metadata (its new ETag)."""
        requests = [self._operation(n, operation) for n, operation in enumerate(operations)]
        if not requests:
            return []
        batch, changeset = f"batch_{os.urandom(16).hex()}", f"changeset_{os.urandom(16).hex()}"
        body = (
            f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode("ascii")
            + b"".join(f"--{changeset}\r\n".encode("ascii") + request + b"\r\n" for request in requests)
            + f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode("ascii")
        )
        headers = {"Content-Type": f"multipart/mixed; boundary={batch}", "Accept": _JSON, "MaxDataServiceVersion": "3.0;NetFx"}
        status, answer_headers, data = self.endpoint.send("POST", "/$batch", "", headers, body)
        if status == 413:
            raise _transaction_refusal(status, answer_headers, data)
        if status != 202:
            raise refusal(status, answer_headers, data)
        answers = _operation_answers(answer_headers.get("Content-Type", ""), data)
        for part_status, part_headers, part_body in answers:
            if not 200 <= part_status < 300:
                raise _transaction_refusal(part_status, part_headers, part_body)
        if len(answers) != len(requests):
            raise ServiceResponseError(f"a transaction of {len(requests)} operations was answered with {len(answers)}")
        return [{"etag": part_headers["etag"]} if "etag" in part_headers else {} for _, part_headers, _ in answers]

    def _operation(self, index: int, operation: Operation) -> bytes:
        """One operation of a changeset: an HTTP request written out (its URL absolute)."""
        kind, entity = operation[0], operation[1]
        options: Mapping[str, Any] = operation[2] if len(operation) > 2 else {}
        url = self.endpoint.url
        lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary", f"Content-ID: {index}", ""]
        headers = [f"x-ms-version: {API_VERSION}", "DataServiceVersion: 3.0"]
        mode = options.get("mode", UpdateMode.MERGE)
        body: bytes | None = None
        if kind == "create":
            lines.append(f"POST {url}/{self.table_name} HTTP/1.1")
            headers += [f"Accept: {_MINIMAL}", "Prefer: return-no-content"]
            body = self._body(entity)
        elif kind in ("update", "upsert"):
            method = "PATCH" if mode == UpdateMode.MERGE else "PUT"
            lines.append(f"{method} {url}{self._entity_path(entity['PartitionKey'], entity['RowKey'])} HTTP/1.1")
            headers.append(f"Accept: {_JSON}")
            if kind == "update":
                headers.append(f"If-Match: {_if_match(options)}")
            body = self._body(entity)
        elif kind == "delete":
            lines.append(f"DELETE {url}{self._entity_path(entity['PartitionKey'], entity['RowKey'])} HTTP/1.1")
            headers += [f"Accept: {_MINIMAL}", f"If-Match: {_if_match(options)}"]
        else:
            raise ValueError(f"Unexpected operation type: {kind!r}")
        if body is not None:
            headers += [f"Content-Type: {_JSON}", f"Content-Length: {len(body)}"]
        text = "\r\n".join([*lines, *headers, "", ""]).encode("ascii")
        return text + (body or b"")


class TableService:
    """The account: its tables by name (`get_table_client`), created when missing."""

    def __init__(self, endpoint: Endpoint, check: Check | None = None) -> None:
        self.endpoint = endpoint
        self._check = check

    @classmethod
    def from_connection_string(cls, text: str, check: Check | None = None) -> TableService:
        settings = parse_connection_string(text)
        if settings.get("usedevelopmentstorage", "").lower() == "true":
            settings = {
                "accountname": _DEV_ACCOUNT,
                "accountkey": _DEV_KEY,
                "tableendpoint": f"http://127.0.0.1:10002/{_DEV_ACCOUNT}",
                **settings,
            }
        account = settings.get("accountname", "")
        endpoint = settings.get("tableendpoint") or (
            f"{settings.get('defaultendpointsprotocol', 'https')}://{account}.table."
            + settings.get("endpointsuffix", "core.windows.net")
            if account
            else ""
        )
        if not endpoint:
            raise ValueError("the Table Storage connection string names neither AccountName nor TableEndpoint")
        signer: _SharedKey | _Anonymous
        if settings.get("accountkey"):
            if not account:
                raise ValueError("the Table Storage connection string has an AccountKey but no AccountName")
            signer = _SharedKey(account, settings["accountkey"])
        elif settings.get("sharedaccesssignature"):
            signer = _Anonymous()
        else:
            raise ValueError("the Table Storage connection string has neither AccountKey nor SharedAccessSignature")
        return cls(Endpoint(endpoint, signer, settings.get("sharedaccesssignature", "")), check)

    @classmethod
    def with_credential(cls, endpoint: str, credential: TokenSource, check: Check | None = None) -> TableService:
        return cls(Endpoint(endpoint, _Bearer(credential)), check)

    def get_table_client(self, name: str) -> Table:
        return Table(self.endpoint, name, self._check)

    def create_table_if_not_exists(self, name: str) -> Table:
        body = json.dumps({"TableName": name}).encode("ascii")
        headers = {"Content-Type": _JSON, "Accept": _MINIMAL, "Prefer": "return-no-content"}
        status, answer_headers, data = self.endpoint.send("POST", "/Tables", "", headers, body)
        if status >= 300:
            error = refusal(status, answer_headers, data)
            if not isinstance(error, ResourceExistsError):
                raise error
        return self.get_table_client(name)

    def delete_table(self, name: str) -> None:
        status, answer_headers, data = self.endpoint.send("DELETE", f"/Tables('{_key(name)}')", "", {"Accept": _JSON}, None)
        if status >= 300:
            error = refusal(status, answer_headers, data)
            if not isinstance(error, ResourceNotFoundError):
                raise error

    def list_tables(self) -> Sequence[str]:
        status, answer_headers, data = self.endpoint.send("GET", "/Tables", "", {"Accept": _MINIMAL}, None)
        if status >= 300:
            raise refusal(status, answer_headers, data)
        return [str(t["TableName"]) for t in json.loads(data).get("value", [])]
