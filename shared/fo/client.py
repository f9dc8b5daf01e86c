"""The F&O client: MES message service, OData, `$batch` and custom services over one pooled session.

Every call goes through `_call`, the one place that retries and paces: the client's `Pacer` spreads
calls at the budget it learns from F&O's 429s, a 429 pauses the whole client for `Retry-After`
(all threads wait, not just the one that was told), 5xx, timeouts and dropped
connections back off exponentially with jitter, and nothing is retried past the call deadline,
which the settings keep inside the Service Bus message lock.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from shared.errors import (
    AuthError,
    BridgeError,
    BusinessRejection,
    InDoubt,
    NotFound,
    Throttled,
    Transient,
)
from shared.fo import odata
from shared.fo.auth import TokenProvider
from shared.ops.telemetry import THROTTLED
from shared.settings import Settings

SEND_MESSAGE_PATH = "/api/services/SysMessageServices/SysMessageService/SendMessage"
_ENTRA_HINT = (
    "F&O refused the token ({status}). Check that client id {client_id} is registered in F&O under "
    "System administration > Setup > Microsoft Entra ID applications, mapped to an enabled user with "
    "the roles the bridge needs"
)


def message_content(content: Mapping[str, Any]) -> str:
    """The `_messageContent` string exactly as sent: F&O echoes it in its processed-message event."""
    return json.dumps(content, separators=(",", ":"), ensure_ascii=False)


def parse_retry_after(value: str | None, fallback: float, now: datetime | None = None) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return fallback
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return fallback
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _error_body(response: requests.Response) -> tuple[str, str]:
    """(message, infolog) from F&O's error shapes: OData `error.innererror`, custom-service JSON, text."""
    text = response.text or ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            inner = error.get("innererror") or {}
            infolog = str(inner.get("message") or "") if isinstance(inner, dict) else ""
            message = str(error.get("message") or infolog or "F&O error")
            return message, infolog or message
        for key in ("ExceptionMessage", "Message", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key]), str(body[key])
    return (text.strip()[:2000] or response.reason or f"HTTP {response.status_code}"), text.strip()[:8000]


def classify(response: requests.Response, *, fallback_wait: float, client_id: str = "") -> BridgeError | None:
    """None for success, else the error class that decides retry, park or stop."""
    status = response.status_code
    if status < 300:
        return None
    message, infolog = _error_body(response)
    where = f"{response.request.method if response.request else ''} {urlsplit(response.url).path}".strip()
    if status == 429:
        wait = parse_retry_after(response.headers.get("Retry-After"), fallback_wait)
        return Throttled(f"F&O throttled {where}: {message}", retry_after=wait)
    if status in (401, 403):
        return AuthError(
            _ENTRA_HINT.format(status=status, client_id=client_id or "?") + f": {message}",
            status=status,
        )
    if status == 404:
        return NotFound(f"F&O has no {where}: {message}", status=status)
    if status in (408, 502, 503, 504):
        return Transient(f"F&O unavailable for {where} (HTTP {status}): {message}", status=status)
    if status >= 500:
        # A write exception carries an X++ infolog: the content is wrong, a retry changes nothing.
        if "Infolog" in infolog or "AxODataWriteException" in response.text or "XppServices" in response.text:
            return BusinessRejection(
                f"F&O rejected {where}: {infolog or message}",
                infolog=infolog,
                status=status,
            )
        return Transient(f"F&O failed {where} (HTTP {status}): {message}", status=status)
    return BusinessRejection(
        f"F&O rejected {where} (HTTP {status}): {infolog or message}",
        infolog=infolog,
        status=status,
    )


class Pacer:
    """One per client, shared by every thread of the instance: paces calls to F&O's learned budget.

    F&O answers 429 with a `Retry-After` of whole seconds once its resource budget is spent. Waiting
    that out and then letting every thread fire at once spends the budget's burst in a moment and
    earns the next 429, so most of the budget goes unused. The pacer instead gives each call a start
    slot `1 / rate` after the previous one (requests spread evenly, never bunched) and learns the
    rate the way TCP learns a path's capacity:
    - slow start: with no budget configured, the rate starts at `start_rps` and doubles every
      second that callers queue for slots, until the first 429;
    - a 429 pauses every caller for `Retry-After` and cuts the rate to `decrease` times itself, the
      first time to `decrease` times what F&O admitted in the second before (answered with anything
      but a 429) (once per pause: the answers to calls already in flight are the same overload);
    - afterwards, while callers queue, the rate grows by `increase` of itself per second
      (additive increase), five times slower once within 5 % of the last 429's rate, never past
      the instance's share of the budget (`FO_INSTANCE_BUDGET_RPS`), where it starts when set;
    - `ceiling_rps` (`FO_BUDGET_RPS`, F&O's whole budget for the app registration) caps the rate
      without fixing it: many instances learn their shares from 429s, a lone busy one may use it all;
    - `probe_after_s` past the last 429's rate without another, slow start again: F&O's budget
      moves with its load, and a throttling storm must not slow the bridge for minutes after it.
      Each probe costs a pause (about a second of the budget, Retry-After being whole seconds), so
      a probe that finds the budget where it was doubles the interval to the next one, up to
      `probe_after_max_s`; a probe that finds more, or a 429 well below the last one's rate (a
      storm), brings it back to `probe_after_s`.
    """

    def __init__(
        self,
        budget_rps: float | None = None,
        *,
        ceiling_rps: float | None = None,
        start_rps: float = 10.0,
        increase: float = 0.01,
        decrease: float = 0.9,
        min_rps: float = 0.2,
        probe_after_s: float = 20.0,
        probe_after_max_s: float = 320.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._ceiling = budget_rps or ceiling_rps or math.inf
        self._increase = increase
        self._decrease = decrease
        self._min_rps = min_rps
        self._probe_after_s = probe_after_s
        self._probe_after_max_s = max(probe_after_s, probe_after_max_s)
        self.probe_interval_s = probe_after_s
        self._probing = False  # in the slow start of a probe: its 429 tells whether the budget moved
        self._probed_rate = math.inf  # the budget as the last probe (or storm) found it
        self.rate = budget_rps or min(start_rps, self._ceiling)
        self.slow_start = budget_rps is None
        self._next_slot = 0.0
        self._resume_at = 0.0
        self._last_cut = -math.inf
        self._plateau = math.inf  # just below the rate of the last 429
        self._accepted: deque[float] = deque()  # calls F&O admitted in the last second
        self._lock = threading.Lock()
        self.pauses = 0
        self.waited_s = 0.0

    def acquire(self, deadline: float) -> float:
        """Wait for this call's slot; the slot's time. Raises `Throttled` when it falls past `deadline`."""
        while True:
            start, waited = self._reserve(deadline)
            if waited:
                self._sleep(waited)
            with self._lock:
                self.waited_s += waited
                if self._resume_at <= start:
                    return start
            # A 429 arrived while this caller slept towards its slot: queue again behind the pause.

    def _reserve(self, deadline: float) -> tuple[float, float]:
        with self._lock:
            now = self._clock()
            start = max(now, self._resume_at, self._next_slot)
            if start > deadline:
                raise Throttled(
                    f"F&O's budget has no slot for {start - now:.1f} s, beyond this call's deadline",
                    retry_after=start - now,
                )
            if self._next_slot > max(now, self._resume_at):
                # Callers queue for slots (not for a pause): demand exceeds the rate, so probe higher.
                if not self.slow_start and now - self._last_cut > self.probe_interval_s and self.rate >= self._plateau:
                    # Quiet past the last 429's rate for a while: the budget may be back (a storm
                    # passed), so probe fast again instead of creeping up for minutes.
                    self.slow_start = True
                    self._probing = True
                if self.slow_start:
                    grown = self.rate * 2 ** (1 / self.rate)
                else:  # near the rate of the last 429, probe five times slower: fewer pauses
                    grown = self.rate + self._increase * (0.2 if self.rate >= self._plateau else 1.0)
                self.rate = min(self._ceiling, grown)
            self._next_slot = start + 1.0 / self.rate
            return start, start - now

    def wait_s(self) -> float:
        """How long a call asking now would wait for its slot (nothing is reserved): above a few slots,
        F&O's budget is what holds the bridge back."""
        with self._lock:
            return max(0.0, max(self._resume_at, self._next_slot) - self._clock())

    def accepted(self, sent_at: float) -> None:
        """F&O admitted the call sent at `sent_at`: any answer but a 429 (counted over the last second,
        for a slow start's 429 to cut to what F&O admitted)."""
        with self._lock:
            self._accepted.append(sent_at)
            while self._accepted[0] < sent_at - 1.0:
                self._accepted.popleft()

    def throttled(self, retry_after: float, sent_at: float) -> None:
        """F&O answered 429 to the call sent at `sent_at`: pause everybody and slow down."""
        with self._lock:
            now = self._clock()
            self.pauses += 1
            self._resume_at = max(self._resume_at, now + retry_after)
            if sent_at <= self._last_cut:
                return  # sent before the last cut: part of the same overload
            self._last_cut = now
            current = self.rate
            if self.slow_start:
                # The rate may have doubled past the budget within the last second: cut what was served.
                served = len([t for t in self._accepted if t >= sent_at - 1.0])
                current = min(current, max(self._min_rps, float(served)))
                self.slow_start = False
                self._accepted.clear()
            if self._probing:
                # The probe found the budget where it was: look again half as often while it stays put.
                steady = current <= 1.1 * self._probed_rate
                self.probe_interval_s = min(self._probe_after_max_s, 2 * self.probe_interval_s) if steady else self._probe_after_s
                self._probing, self._probed_rate = False, current
            elif current < 0.8 * self._probed_rate:
                # Well below what the last probe found: a storm; look for the budget's return soon after it.
                self.probe_interval_s, self._probed_rate = self._probe_after_s, current
            self._plateau = 0.95 * current
            self.rate = max(self._min_rps, current * self._decrease)


@dataclass
class CallStats:
    """What the client did, for telemetry and the benchmark."""

    requests: int = 0
    throttled: int = 0
    retries: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(
        self,
        *,
        requests: int = 0,
        throttled: int = 0,
        retries: int = 0,
        seconds: float = 0.0,
    ) -> None:
        with self._lock:
            self.requests += requests
            self.throttled += throttled
            self.retries += retries
            self.seconds += seconds


@dataclass(frozen=True)
class BatchOperation:
    """One request inside a `$batch` changeset: POST/PATCH/DELETE on an entity set or entity."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BatchResult:
    status: int
    body: Any
    content_id: str = ""


class FoApi(Protocol):
    """What the bridge asks of F&O (the pipeline's sends, the in-doubt check's and the business-event
    handlers' reads, health): `FoClient` over HTTP, `FakeFo` (tests/fakes.py) in memory, and
    tests/integration/test_fo_contract.py holds both to the same classification of F&O's answers:
    accepted, `BusinessRejection`, `NotFound`, `AuthError`, `Transient`, and `InDoubt` for a send
    that got no answer."""

    stats: CallStats

    def budget_wait_s(self) -> float:
        """How long a call made now would wait for F&O's request budget (the client's pacing)."""
        ...

    def token_check(self) -> None: ...

    def send_message(self, company: str, message_type: str, content: Mapping[str, Any]) -> None: ...

    def call_service(self, service_path: str, payload: Mapping[str, Any], *, idempotent: bool = False) -> Any: ...

    def query(
        self,
        entity_set: str,
        *,
        company: str,
        where: odata.Filter | None = None,
        select: Sequence[str] = (),
        top: int | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def get(self, entity_set: str, keys: Mapping[str, odata.Scalar]) -> dict[str, Any]: ...

    def batch(self, changeset: Sequence[BatchOperation]) -> list[BatchResult]: ...


class FoClient:
    def __init__(
        self,
        settings: Settings,
        tokens: TokenProvider,
        session: requests.Session,
        *,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._s = settings
        self._tokens = tokens
        self._session = session
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.pacer = pacer or Pacer(settings.fo_instance_budget_rps, ceiling_rps=settings.fo_budget_rps, sleep=sleep)
        self.stats = CallStats()
        self._slots = threading.BoundedSemaphore(settings.fo_max_concurrency)
        self.base_url = settings.fo_base_url

    def budget_wait_s(self) -> float:
        return self.pacer.wait_s()

    # --- the one request loop -------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._s.fo_backoff_max_s, self._s.fo_backoff_base_s * (2.0**attempt))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _call(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        deadline = deadline if deadline is not None else time.monotonic() + self._s.fo_call_deadline_s
        attempt = 0
        token_refreshed = False
        while True:
            sent_at = self.pacer.acquire(deadline)
            started = time.monotonic()
            error: BridgeError | None
            answered = False
            with self._slots:
                try:
                    response = self._session.request(
                        method,
                        url,
                        headers={
                            "Authorization": f"Bearer {self._tokens.token()}",
                            "Accept": "application/json",
                            **(headers or {}),
                        },
                        timeout=(
                            self._s.fo_connect_timeout_s,
                            self._s.fo_read_timeout_s,
                        ),
                        allow_redirects=False,
                        **kwargs,
                    )
                    answered = True
                    error = classify(
                        response,
                        fallback_wait=self._s.fo_retry_after_fallback_s,
                        client_id=self._s.fo_client_id,
                    )
                except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
                    error = Transient(f"cannot connect to F&O: {type(exc).__name__}")
                except requests.ConnectionError as exc:
                    error = self._after_send_failure(exc, idempotent)
                except requests.Timeout as exc:
                    error = self._after_send_failure(exc, idempotent)
            self.stats.add(requests=1, seconds=time.monotonic() - started)
            if answered and not isinstance(error, Throttled):
                # F&O let it past its throttling, whatever it answered (a 503 too): the rate it admits. Counting
                # only successes, an outage's first 429 cut the learning rate to its floor.
                self.pacer.accepted(sent_at)
            if error is None:
                return response
            if isinstance(error, AuthError) and error.status == 401 and not token_refreshed:
                self._tokens.invalidate()
                token_refreshed = True
                continue
            if isinstance(error, Throttled):
                self.stats.add(throttled=1)
                THROTTLED.add(1, {"retry_after_s": round(error.retry_after)})
                self.pacer.throttled(error.retry_after, sent_at)
                continue  # the pacer raises once the wait would cross the deadline
            if isinstance(error, Transient) and not isinstance(error, InDoubt):
                delay = self._backoff(attempt)
                attempt += 1
                if time.monotonic() + delay > deadline:
                    raise error
                self.stats.add(retries=1)
                self._sleep(delay)
                continue
            raise error

    @staticmethod
    def _after_send_failure(exc: Exception, idempotent: bool) -> Transient:
        refused = "NewConnectionError" in repr(exc) or "Connection refused" in str(exc)
        if idempotent or refused:
            return Transient(f"F&O connection failed: {type(exc).__name__}")
        return InDoubt(f"no answer from F&O after sending ({type(exc).__name__}); it may have been applied")

    def token_check(self) -> None:
        """Acquire a token now (health checks): raises the Entra error if there is one."""
        self._tokens.token()

    def _url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # --- MES message service and custom services ------------------------------------------------
    def send_message(self, company: str, message_type: str, content: Mapping[str, Any]) -> None:
        """Queue one message in F&O's message processor (`_messageContent` is a JSON string)."""
        envelope = {
            "_companyId": company,
            "_messageQueue": self._s.fo_message_queue,
            "_messageType": message_type,
            "_messageContent": message_content(content),
        }
        self._call("POST", self._url(SEND_MESSAGE_PATH), idempotent=False, json=envelope)

    def call_service(self, service_path: str, payload: Mapping[str, Any], *, idempotent: bool = False) -> Any:
        """POST a JSON custom service `/api/services/<group>/<service>/<operation>`."""
        response = self._call(
            "POST",
            self._url("/api/services/" + service_path.strip("/")),
            idempotent=idempotent,
            json=payload,
        )
        return response.json() if response.content else None

    # --- OData ----------------------------------------------------------------------------------
    def query(
        self,
        entity_set: str,
        *,
        company: str,
        where: odata.Filter | None = None,
        select: Sequence[str] = (),
        top: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every row of `entity_set` in `company` matching `where`, following `@odata.nextLink`."""
        condition = odata.eq("dataAreaId", company.lower())
        if where is not None:
            condition = condition & where
        params: dict[str, str] = {"cross-company": "true", "$filter": condition.text}
        if select:
            params["$select"] = ",".join(select)
        if top is not None:
            params["$top"] = str(top)
        url: str | None = self._url("/data/" + entity_set)
        request_params: dict[str, str] | None = params
        while url:
            body = self._call("GET", url, idempotent=True, params=request_params).json()
            for row in body.get("value", []):
                if condition.matches(row):
                    yield row
            url = body.get("@odata.nextLink")
            request_params = None  # the next link carries the whole query
            if url and not url.startswith(self.base_url + "/data/"):
                raise BusinessRejection(f"F&O returned a next link outside {self.base_url}/data: {url}")

    def get(self, entity_set: str, keys: Mapping[str, odata.Scalar]) -> dict[str, Any]:
        """One entity by its full key; `NotFound` when it does not exist."""
        response = self._call(
            "GET",
            self._url("/data/" + entity_set + odata.key_segment(keys)),
            idempotent=True,
        )
        row: dict[str, Any] = response.json()
        return row

    def batch(self, changeset: Sequence[BatchOperation]) -> list[BatchResult]:
        """Run the operations as one atomic changeset; any inner failure raises with its infolog."""
        batch_boundary = f"batch_{uuid.uuid4()}"
        changeset_boundary = f"changeset_{uuid.uuid4()}"
        lines: list[str] = [
            f"--{batch_boundary}",
            f"Content-Type: multipart/mixed; boundary={changeset_boundary}",
            "",
        ]
        for number, op in enumerate(changeset, start=1):
            lines += [
                f"--{changeset_boundary}",
                "Content-Type: application/http",
                "Content-Transfer-Encoding: binary",
                f"Content-ID: {number}",
                "",
                f"{op.method} {self._url('/data/' + op.path)} HTTP/1.1",
                "Content-Type: application/json; type=entry",
                "Accept: application/json",
                "",
                json.dumps(op.body, ensure_ascii=False) if op.body is not None else "",
            ]
        lines += [f"--{changeset_boundary}--", f"--{batch_boundary}--", ""]
        response = self._call(
            "POST",
            self._url("/data/$batch"),
            idempotent=False,
            data="\r\n".join(lines).encode(),
            headers={"Content-Type": f"multipart/mixed; boundary={batch_boundary}"},
        )
        results = parse_batch_response(response.headers.get("Content-Type", ""), response.content)
        for result in results:
            if result.status >= 300:
                fake = requests.Response()
                fake.status_code = result.status
                fake._content = json.dumps(result.body).encode() if not isinstance(result.body, str) else result.body.encode()
                fake.url = self._url("/data/$batch")
                error = classify(
                    fake,
                    fallback_wait=self._s.fo_retry_after_fallback_s,
                    client_id=self._s.fo_client_id,
                )
                if error is not None:
                    error.message = f"$batch operation {result.content_id or '?'} failed: {error.message}"
                    error.args = (error.message,)
                    error.operation = result.content_id
                    raise error
        return results


def _http_parts(message: email.message.Message) -> Iterator[email.message.Message]:
    for part in message.walk():
        if part.get_content_type() == "application/http":
            yield part


def parse_batch_response(content_type: str, body: bytes) -> list[BatchResult]:
    """Each inner response of a multipart `$batch` answer, in order."""
    if not content_type.startswith("multipart/"):
        raise Transient(f"$batch answered {content_type or 'no content type'} instead of multipart")
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    results = []
    for part in _http_parts(message):
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else str(part.get_payload()).encode()
        head, _, inner_body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        status_line = head.split(b"\n", 1)[0].decode()
        status = int(status_line.split()[1])
        text = inner_body.decode(errors="replace").strip()
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = text
        results.append(BatchResult(status=status, body=parsed, content_id=str(part.get("Content-ID", ""))))
    return results
