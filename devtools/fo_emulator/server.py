"""The emulator's HTTPS server: Entra endpoints, F&O OData, `$batch`, custom services, throttling,
faults on demand, and an inspection API under /emulator for tests and the demo."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import math
import random
import secrets
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from devtools.fo_emulator.application import ENTITY_KEYS, EventSink, FoApplication, WriteError
from devtools.fo_emulator.entra import AppRegistration, Entra, EntraError
from devtools.fo_emulator.odata import ODataError, parse_key, query
from devtools.fo_emulator.plant import PlantSpec
from devtools.fo_emulator.tls import make_tls_files

SEND_MESSAGE = "/api/services/SysMessageServices/SysMessageService/SendMessage"


@dataclass
class Faults:
    """Seeded faults on F&O calls (not on Entra or the inspection API)."""

    error_5xx_rate: float = 0.0
    drop_rate: float = 0.0  # connection closed with no answer; half before, half after the work is done
    slow_rate: float = 0.0  # answer only after `slow_s` (the work is done): beyond a client's read timeout
    slow_s: float = 5.0
    latency_ms: float = 0.0  # added to every F&O call
    latency_tail: float = 0.0  # Pareto shape for a heavy tail on top of latency_ms (0 = none)
    #: SendMessage whose `_messageContent` holds this text is refused with 400 and an infolog, as F&O
    #: refuses a message it will not queue (a test's way to make one MES message F&O-unacceptable).
    refuse_content: str = ""
    #: A call whose body holds this text is done, then its connection closed without an answer:
    #: the bridge cannot know F&O has it (in doubt), F&O's processed event tells.
    drop_after_content: str = ""


@dataclass
class Throttle:
    """F&O's resource-based protection: a token bucket in requests per second and a concurrency cap."""

    rate_per_s: float = 0.0  # 0 = no budget
    burst: float = 20.0
    max_concurrent: int = 52


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    tenant_id: str = "6a1a5ad9-0000-4000-8000-00000000f0f0"
    client_id: str = "3e1d0000-b7d6-4b5e-9c1c-00000000b71d"
    token_lifetime_s: int = 3600
    page_size: int = 10000
    processor_interval_s: float = 0.02
    quality_service_path: str = "MesBridgeServices/MesQualityService/reportQualityResult"
    journal_version: str = "2024"
    picking_batch_field: str = "ItemBatchNumber"
    validate_on_send: bool = True
    plant: PlantSpec = field(default_factory=PlantSpec)
    faults: Faults = field(default_factory=Faults)
    throttle: Throttle = field(default_factory=Throttle)
    seed: int = 1


@dataclass
class Stats:
    requests: int = 0
    accepted: int = 0
    throttled: int = 0
    injected_5xx: int = 0
    dropped: int = 0
    slowed: int = 0
    unauthorized: int = 0
    token_requests: int = 0
    #: The most calls inside their added latency at once: 1 would mean the emulator serialises what
    #: F&O serves in parallel, and every latency figure measured against it would be the emulator's.
    peak_overlap: int = 0
    by_route: dict[str, int] = field(default_factory=dict)


class ThrottleBucket:
    """The emulator's F&O throttling (`Throttle`); the pacer's unit tests run it on a simulated clock."""

    def __init__(self, throttle: Throttle, clock: Callable[[], float] = time.monotonic) -> None:
        self.throttle = throttle
        self.clock = clock
        self.tokens = throttle.burst
        self.last = clock()
        self.in_flight = 0
        self.lock = threading.Lock()

    def admit(self) -> tuple[bool, int, str]:
        """(admitted, Retry-After seconds, reason)."""
        with self.lock:
            if self.in_flight >= self.throttle.max_concurrent:
                return False, 1, f"Number of concurrent requests exceeded the limit of {self.throttle.max_concurrent}."
            if self.throttle.rate_per_s > 0:
                now = self.clock()
                self.tokens = min(self.throttle.burst, self.tokens + (now - self.last) * self.throttle.rate_per_s)
                self.last = now
                if self.tokens < 1:
                    wait = (1 - self.tokens) / self.throttle.rate_per_s
                    return (
                        False,
                        max(1, math.ceil(wait)),
                        (
                            "This request could not be processed at this time due to system experiencing high resource utilization."
                        ),
                    )
                self.tokens -= 1
            self.in_flight += 1
            return True, 0, ""

    def release(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    emulator: FoEmulator

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # The TLS handshake runs in the handler thread, so a slow client never blocks accept().
        return self.emulator.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.server.emulator.handle(self, "GET")

    def do_POST(self) -> None:
        self.server.emulator.handle(self, "POST")

    def do_PATCH(self) -> None:
        self.server.emulator.handle(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server.emulator.handle(self, "DELETE")


class _Drop(Exception):
    pass


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


def _odata_error(status: int, message: str, infolog: str = "", exception_type: str = "") -> Answer:
    inner = {
        "message": infolog or message,
        "type": exception_type or "Microsoft.Dynamics.Platform.Integration.Services.OData.ODataException",
        "stacktrace": "",
    }
    return Answer(status, {"error": {"code": "", "message": message, "innererror": inner}})


def _service_error(status: int, message: str) -> Answer:
    return Answer(status, {"Message": message, "ExceptionType": "XppServicesException", "ExceptionMessage": message})


class FoEmulator:
    def __init__(self, config: EmulatorConfig | None = None, workdir: Path | None = None) -> None:
        self.config = config or EmulatorConfig()
        self._tempdir = tempfile.TemporaryDirectory(prefix="fo-emulator-") if workdir is None else None
        self.workdir = workdir or Path(self._tempdir.name)  # type: ignore[union-attr]
        self.tls = make_tls_files(self.workdir)
        self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls_context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        self.client_secret = secrets.token_urlsafe(24)
        self._server = _Server((self.config.host, self.config.port), _Handler)
        self._server.emulator = self
        host, port = str(self._server.server_address[0]), int(self._server.server_address[1])
        self.base_url = f"https://{host}:{port}"
        self.app = FoApplication(
            self.config.plant,
            journal_version=self.config.journal_version,
            picking_batch_field=self.config.picking_batch_field,
            validate_on_send=self.config.validate_on_send,
            fo_url=self.base_url,
        )
        self.entra = Entra(
            base_url=self.base_url,
            resource=self.base_url,
            tenant_id=self.config.tenant_id,
            token_lifetime_s=self.config.token_lifetime_s,
        )
        self.entra.apps[self.config.client_id] = AppRegistration(self.config.client_id, secret=self.client_secret)
        self.companies = {self.config.plant.company, self.config.plant.other_company}
        self.stats = Stats()
        self._stats_lock = threading.Lock()
        self._in_latency = 0
        self._rng = random.Random(self.config.seed)
        self._rng_lock = threading.Lock()
        self._bucket = ThrottleBucket(self.config.throttle)
        self._threads: list[threading.Thread] = []
        self._running = threading.Event()

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> FoEmulator:
        self._running.set()
        for target, name in (
            (self._server.serve_forever, "fo-http"),
            (self._processor_loop, "fo-processor"),
            *((self.app.events.run, f"fo-events-{n}") for n in range(self.app.events.workers)),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._running.clear()
        self.app.events.stop()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> FoEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _processor_loop(self) -> None:
        while self._running.is_set():
            self.app.process_queue()
            time.sleep(self.config.processor_interval_s)

    # --- what a client needs --------------------------------------------------------------------
    @property
    def ca_path(self) -> Path:
        return self.tls.ca_cert

    def bridge_settings(self) -> dict[str, str]:
        """App settings that point the bridge at this emulator."""
        return {
            "FO_BASE_URL": self.base_url,
            "FO_AUTH_MODE": "client_secret",
            "FO_TENANT_ID": self.config.tenant_id,
            "FO_CLIENT_ID": self.config.client_id,
            "FO_CLIENT_SECRET": self.client_secret,
            "FO_AUTHORITY_HOST": self.base_url,
            "FO_CA_BUNDLE": str(self.ca_path),
            "FO_DEFAULT_COMPANY": self.config.plant.company.upper(),
            "FO_JOURNAL_FIELD_NAMES": self.config.journal_version,
            "FO_PICKING_BATCH_FIELD": self.config.picking_batch_field,
            "FO_QUALITY_SERVICE_PATH": self.config.quality_service_path,
        }

    def set_faults(self, **changes: Any) -> None:
        self.config.faults = replace(self.config.faults, **changes)

    def set_throttle(self, **changes: Any) -> None:
        self.config.throttle = replace(self.config.throttle, **changes)
        self._bucket = ThrottleBucket(self.config.throttle)

    def subscribe(self, sink: EventSink, *, test_event: bool = True) -> None:
        """Activate business events to `sink` (an Event Grid subscriber); F&O sends a test event first."""
        self.app.events.sinks.append(sink)
        if test_event:
            self.app.test_event()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once the message processor has nothing it can still do and every event is delivered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.app.process_queue()
            with self.app.lock:
                busy = any(
                    q
                    and q[0].state == "Queued"
                    and (q[0].depends_on is None or self.app.messages[q[0].depends_on - 1].state in ("Processed", "Cancelled"))
                    for q in self.app.pending.values()
                )
            if not busy and self.app.events.drain(timeout=max(0.0, deadline - time.monotonic())):
                return True
            time.sleep(0.01)
        return False

    # --- HTTP -----------------------------------------------------------------------------------
    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, n in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def _delay(self, seconds: float) -> None:
        with self._stats_lock:
            self._in_latency += 1
            self.stats.peak_overlap = max(self.stats.peak_overlap, self._in_latency)
        try:
            time.sleep(seconds)
        finally:
            with self._stats_lock:
                self._in_latency -= 1

    def _random(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def handle(self, handler: _Handler, method: str) -> None:
        url = urlsplit(handler.path)
        path = unquote(url.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        route = path.split("/")[1] if "/" in path else path
        with self._stats_lock:
            self.stats.requests += 1
            self.stats.by_route[route] = self.stats.by_route.get(route, 0) + 1
        try:
            if route in ("data", "api"):
                answer = self._fo_call(handler, method, path, params, body)
            elif route == "emulator":
                answer = self._inspect(method, path, body)
            elif path == "/msi/token":
                answer = self._entra(
                    lambda: self.entra.managed_identity_token(handler.headers.get("X-IDENTITY-HEADER"), params), ""
                )
            else:
                answer = self._entra_route(method, path, body)
        except _Drop:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(handler, answer)

    @staticmethod
    def _write(handler: _Handler, answer: Answer) -> None:
        payload = answer.raw if answer.raw is not None else (b"" if answer.body is None else json.dumps(answer.body).encode())
        try:
            handler.send_response(
                answer.status, HTTPStatus(answer.status).phrase if answer.status in HTTPStatus._value2member_map_ else ""
            )
            content_type = answer.headers.pop("Content-Type", "application/json; odata.metadata=minimal; charset=utf-8")
            handler.send_header("Content-Type", content_type)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            handler.close_connection = True

    def _entra(self, action: Any, tenant: str) -> Answer:
        try:
            return Answer(200, action())
        except EntraError as exc:
            return Answer(exc.status, exc.body(tenant))

    def _entra_route(self, method: str, path: str, body: bytes) -> Answer:
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self._entra(lambda: self.entra.openid_configuration(parts[0]), parts[0])
        if method == "POST" and len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            self._count(token_requests=1)
            form = dict(parse_qsl(body.decode()))
            return self._entra(lambda: self.entra.token(parts[0], form), parts[0])
        return Answer(404, {"error": "not_found", "error_description": f"No endpoint {method} {path}"})

    def _fo_call(self, handler: _Handler, method: str, path: str, params: dict[str, str], body: bytes) -> Answer:
        allowed, reason = self.entra.check_bearer(handler.headers.get("Authorization"))
        if not allowed:
            self._count(unauthorized=1)
            return Answer(
                401,
                {"Message": f"Authorization has been denied for this request. {reason}"},
                {"WWW-Authenticate": f'Bearer authorization_uri="{self.base_url}/{self.config.tenant_id}/oauth2/authorize"'},
            )
        # Throttling first, then the injected faults: a call answered 503 was admitted and counts in
        # the budget. Our assumption: Microsoft documents the 429 and its Retry-After (fo-contracts.md
        # §5), not whether F&O's resource-based throttling counts the calls it then fails.
        admitted, retry_after, why = self._bucket.admit()
        if not admitted:
            self._count(throttled=1)
            return Answer(429, {"Message": why}, {"Retry-After": str(retry_after)})
        try:
            faults = self.config.faults
            if faults.latency_ms or faults.latency_tail:
                extra = faults.latency_ms * (self._rng.paretovariate(faults.latency_tail) if faults.latency_tail else 1.0)
                self._delay(min(extra, 30000) / 1000)
            roll = self._random()
            if roll < faults.error_5xx_rate:
                self._count(injected_5xx=1)
                return Answer(503, {"Message": "The service is unavailable."})
            drop = roll < faults.error_5xx_rate + faults.drop_rate
            drop_before = drop and self._random() < 0.5
            if drop_before:
                self._count(dropped=1)
                raise _Drop
            answer = self._dispatch(method, path, params, body, handler.headers.get("Content-Type", ""))
            if drop or (faults.drop_after_content and faults.drop_after_content.encode() in body):
                self._count(dropped=1)
                raise _Drop
            if roll < faults.error_5xx_rate + faults.drop_rate + faults.slow_rate:
                self._count(slowed=1)
                time.sleep(faults.slow_s)
            if answer.status < 300:
                self._count(accepted=1)
            return answer
        finally:
            self._bucket.release()

    def _dispatch(self, method: str, path: str, params: dict[str, str], body: bytes, content_type: str = "") -> Answer:
        try:
            if path == SEND_MESSAGE and method == "POST":
                sent = _json(body)
                refused = self.config.faults.refuse_content
                if refused and isinstance(sent, dict) and refused in str(sent.get("_messageContent", "")):
                    raise ODataError(400, f"Infolog: the message content holds {refused!r}, which this F&O refuses.")
                self.app.send_message(sent, self.companies)
                return Answer(200, None)
            if path == "/api/services/" + self.config.quality_service_path and method == "POST":
                return Answer(200, self.app.report_quality(_json(body), self.companies))
            if path.startswith("/api/services/"):
                return _service_error(404, f"Service operation {path.removeprefix('/api/services/')} was not found.")
            if path == "/data/$batch" and method == "POST":
                return self._batch(body, content_type)
            if path.startswith("/data/"):
                return self._entity(method, path.removeprefix("/data/"), params, body)
            return _odata_error(404, f"No HTTP resource was found that matches the request URI '{path}'.")
        except WriteError as exc:
            infolog = f"Write failed for table row of type '{exc.entity}'. Infolog: {exc.infolog}"
            return _odata_error(
                500,
                "An error has occurred.",
                infolog,
                "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException",
            )
        except ODataError as exc:
            if path.startswith("/api/"):
                return _service_error(exc.status, exc.message)
            return _odata_error(exc.status, exc.message)

    def _entity(self, method: str, resource: str, params: dict[str, str], body: bytes) -> Answer:
        name, _, key = resource.partition("(")
        if name not in ENTITY_KEYS:
            raise ODataError(404, f"No HTTP resource was found that matches the request URI '/data/{resource}'.")
        with self.app.lock:
            if method == "GET" and not key:
                rows = self.app.rows(name)
                if params.get("cross-company") != "true":
                    rows = [r for r in rows if r.get("dataAreaId") == self.config.plant.company]
                return Answer(
                    200,
                    query(
                        rows,
                        params,
                        fields=self.app.fields[name],
                        page_size=self.config.page_size,
                        self_url=f"{self.base_url}/data/{name}",
                    ),
                )
            if method == "GET":
                values = parse_key(key.rstrip(")"), ENTITY_KEYS[name])
                row = self.app.find(name, **values)
                if row is None:
                    raise ODataError(404, f"Resource not found for the segment '{name}'.")
                return Answer(200, dict(row))
            if method == "POST" and not key:
                created = self.app.create_many([(name, _json(body))])
                return Answer(201, dict(created[0]))
        raise ODataError(405, f"{method} on {name} is not supported by this emulator.")

    def _batch(self, body: bytes, content_type: str) -> Answer:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        if not message.is_multipart():
            raise ODataError(400, "A $batch request must be multipart/mixed.")
        boundary = f"batchresponse_{uuid.uuid4()}"
        out: list[str] = []
        for part in message.iter_parts():
            if part.get_content_type() == "multipart/mixed":
                out.append(self._changeset(part, boundary))
            else:
                out.append(self._single(part, boundary))
        out.append(f"--{boundary}--\r\n")
        return Answer(200, raw="".join(out).encode(), headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})

    @staticmethod
    def _inner_request(part: Any) -> tuple[str, str, Any]:
        raw = part.get_payload(decode=True) or b""
        head, _, inner_body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        request_line = head.split(b"\n", 1)[0].decode()
        method, url, *_ = request_line.split(" ")
        text = inner_body.strip()
        return method, urlsplit(url).path, (json.loads(text) if text else None)

    @staticmethod
    def _http_part(boundary: str, status: int, payload: Any, content_id: str = "") -> str:
        text = json.dumps(payload) if payload is not None else ""
        content = f"Content-ID: {content_id}\r\n" if content_id else ""
        return (
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n{content}\r\n"
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n{text}\r\n"
        )

    def _changeset(self, part: Any, boundary: str) -> str:
        operations: list[tuple[str, dict[str, Any]]] = []
        ids: list[str] = []
        inner_boundary = f"changesetresponse_{uuid.uuid4()}"
        try:
            for index, inner in enumerate(part.iter_parts()):
                ids.append(str(inner.get("Content-ID", index + 1)))
                method, path, payload = self._inner_request(inner)
                if method != "POST" or not path.startswith("/data/"):
                    raise ODataError(400, f"{method} {path} is not supported inside a changeset by this emulator.")
                operations.append((path.removeprefix("/data/"), payload))
            created = self.app.create_many(operations)
            parts = [self._http_part(inner_boundary, 201, row, ids[i]) for i, row in enumerate(created)]
        except WriteError as exc:
            error = _odata_error(
                500,
                "An error has occurred.",
                f"Write failed for table row of type '{exc.entity}'. Infolog: {exc.infolog}",
                "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException",
            )
            parts = [self._http_part(inner_boundary, 500, error.body, _content_id(ids, exc))]
        except ODataError as exc:
            parts = [
                self._http_part(inner_boundary, exc.status, _odata_error(exc.status, exc.message).body, _content_id(ids, exc))
            ]
        return (
            f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={inner_boundary}\r\n\r\n"
            + "".join(parts)
            + f"--{inner_boundary}--\r\n"
        )

    def _single(self, part: Any, boundary: str) -> str:
        method, path, payload = self._inner_request(part)
        answer = self._dispatch(method, path, {}, json.dumps(payload).encode() if payload is not None else b"")
        return self._http_part(boundary, answer.status, answer.body)

    # --- inspection -----------------------------------------------------------------------------
    def _inspect(self, method: str, path: str, body: bytes) -> Answer:
        parts = path.strip("/").split("/")[1:]
        try:
            if method == "GET" and parts == ["state"]:
                return Answer(200, self.app.snapshot())
            if method == "GET" and parts == ["stats"]:
                return Answer(200, asdict(self.stats))
            if method == "POST" and parts == ["faults"]:
                changes = _json(body)
                known = {f.name for f in fields(Faults)}
                if not isinstance(changes, dict) or set(changes) - known:
                    return Answer(400, {"Message": f"faults take {sorted(known)}"})
                self.set_faults(**changes)
                return Answer(200, asdict(self.config.faults))
            if method == "POST" and parts == ["throttle"]:
                changes = _json(body)
                self.set_throttle(**changes)
                return Answer(200, asdict(self.config.throttle))
            if method == "POST" and len(parts) == 4 and parts[0] == "orders" and parts[3] in ("release", "status"):
                if parts[3] == "release":
                    return Answer(200, self.app.release_order(parts[1], parts[2]))
                return Answer(200, self.app.change_status(parts[1], parts[2], _json(body)["status"]))
            if method == "POST" and len(parts) == 3 and parts[0] == "messages" and parts[2] == "cancel":
                return Answer(200, self.app.cancel_message(int(parts[1])).as_dict())
            if method == "POST" and parts == ["process"]:
                return Answer(200, {"changed": self.app.process_queue()})
        except ODataError as exc:
            return Answer(exc.status, {"Message": exc.message})
        return Answer(404, {"Message": f"No inspection endpoint {method} {path}"})


def _content_id(ids: list[str], exc: Exception) -> str:
    index = getattr(exc, "operation_index", len(ids) - 1)
    return ids[index] if 0 <= index < len(ids) else ""


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise ODataError(400, f"The request body is not valid JSON: {exc}") from None
