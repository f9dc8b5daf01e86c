"""The local Functions host: runs what `function_app.py` declares, read from its binding metadata.

Service Bus-triggered functions get messages from the in-memory broker the way the Functions
host's Service Bus extension gets them, configured by the shipped host.json (see `LocalHost`).
Event Grid-triggered functions get the events the emulator delivers (at least once, unordered).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.servicebus import ServiceBusMessage

from devtools.local_host.broker import InMemoryBroker, Lease

#: What the Functions host logs for a failed invocation ("Executed 'Functions.<name>' (Failed, ...)"),
#: under the bridge's logger so a run's log shows why a message came back.
_log = logging.getLogger("mesbridge.localhost")


@dataclass(frozen=True)
class QueueFunction:
    name: str
    queue: str
    sessions: bool
    call: Callable[..., Any]


@dataclass(frozen=True)
class EventGridFunction:
    name: str
    call: Callable[..., Any]


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: str
    methods: tuple[str, ...]
    auth_level: str  # "function", "anonymous" or "admin"
    call: Callable[..., Any]


@dataclass(frozen=True)
class Discovered:
    queues: tuple[QueueFunction, ...]
    event_grid: dict[str, EventGridFunction]
    http: tuple[HttpFunction, ...] = ()


#: Keyed by id(app), the app kept with its entry: were it collected, a new app could get its id and
#: be served the old app's functions (a test then waited on queues nobody sends to).
_DISCOVERED: dict[int, tuple[func.FunctionApp, Discovered]] = {}
_DISCOVER_LOCK = threading.Lock()

#: The thread that plays Service Bus and the Functions host's listener (the bench tells its CPU apart).
LISTENER_THREAD = "servicebus-listener"


def discover(app: func.FunctionApp) -> Discovered:
    """The functions of `app` by trigger (cached: an app can be indexed only once)."""
    with _DISCOVER_LOCK:
        cached = _DISCOVERED.get(id(app))
        if cached is not None and cached[0] is app:
            return cached[1]
        queues: list[QueueFunction] = []
        event_grid: dict[str, EventGridFunction] = {}
        http: list[HttpFunction] = []
        for function in app.get_functions():
            binding = function.get_trigger()
            if binding is None:
                continue
            trigger = binding.get_dict_repr()
            name = str(function.get_function_name())
            if trigger["type"] == "serviceBusTrigger" and "queueName" in trigger:
                queues.append(
                    QueueFunction(
                        name, trigger["queueName"], bool(trigger.get("isSessionsEnabled")), function.get_user_function()
                    )
                )
            elif trigger["type"] == "eventGridTrigger":
                event_grid[name] = EventGridFunction(name, function.get_user_function())
            elif trigger["type"] == "httpTrigger":
                methods = tuple(str(getattr(m, "value", m)).upper() for m in trigger.get("methods") or ("GET", "POST"))
                level = str(getattr(trigger.get("authLevel"), "value", trigger.get("authLevel") or "function")).lower()
                http.append(HttpFunction(name, trigger["route"], methods, level, function.get_user_function()))
        discovered = Discovered(tuple(queues), event_grid, tuple(http))
        _DISCOVERED[id(app)] = (app, discovered)
        return discovered


def to_trigger_message(lease: Lease) -> ServiceBusMessage:
    m = lease.message
    return ServiceBusMessage(
        body=m.body,
        message_id=m.message_id,
        session_id=m.session_id,
        correlation_id=m.correlation_id,
        delivery_count=m.delivery_count,
        enqueued_time_utc=dt.datetime.fromtimestamp(time.time() - (time.monotonic() - m.enqueued_at), dt.UTC),
        sequence_number=m.sequence_number,
        lock_token=m.lock_token,
        application_properties=dict(m.properties),
        user_properties=dict(m.properties),
        content_type="application/json",
    )


def to_event_grid_event(event: dict[str, Any]) -> func.EventGridEvent:
    event_time = event.get("eventTime")
    return func.EventGridEvent(
        id=event["id"],
        data=event.get("data"),  # type: ignore[arg-type]
        topic=event.get("topic", ""),
        subject=event.get("subject", ""),
        event_type=event.get("eventType", ""),
        event_time=dt.datetime.fromisoformat(event_time.replace("Z", "+00:00")) if event_time else None,
        data_version=event.get("dataVersion", "1.0"),
    )


ROOT = Path(__file__).resolve().parents[2]


def timespan(value: str) -> float:
    """Seconds in a host.json TimeSpan, `[d.]hh:mm:ss[.fffffff]`."""
    parts = value.strip().split(":")
    if len(parts) != 3:
        raise ValueError(f"not a TimeSpan ([d.]hh:mm:ss): {value!r}")
    days, _, hours = parts[0].rpartition(".")
    return float(days or 0) * 86400 + float(hours) * 3600 + float(parts[1]) * 60 + float(parts[2])


@dataclass(frozen=True)
class HostConfig:
    """What the Functions host and the Python worker do with Service Bus messages, as host.json and
    the app settings configure it (defaults: Service Bus extension 5.x and the Python worker):
    https://learn.microsoft.com/azure/azure-functions/functions-bindings-service-bus#hostjson-settings ,
    https://learn.microsoft.com/azure/azure-functions/python-scale-performance-reference ."""

    #: Sessions one instance processes at once, per session-enabled function.
    max_concurrent_sessions: int = 8
    #: Messages one instance processes at once, per function without sessions.
    max_concurrent_calls: int = 16
    #: How long the session processor waits for the next message of a session it holds before it
    #: releases the session and accepts another (the .NET processor's SessionIdleTimeout; unset,
    #: the client's tryTimeout, 60 s by default).
    session_idle_timeout_s: float = 60.0
    #: How long the host keeps renewing the locks of a message whose function still runs.
    max_auto_lock_renewal_s: float = 300.0
    #: Messages fetched ahead of the function (locked, their lock not renewed until delivered).
    prefetch_count: int = 0
    #: PYTHON_THREADPOOL_THREAD_COUNT: the worker's threads for synchronous functions; every
    #: function of the app shares them (default: ThreadPoolExecutor's, min(32, cores + 4)).
    thread_count: int = field(default_factory=lambda: min(32, (os.cpu_count() or 1) + 4))

    @classmethod
    def load(cls, host_json: Path = ROOT / "host.json", environ: Mapping[str, str] | None = None) -> HostConfig:
        """The shipped host.json's `extensions.serviceBus`, and the worker's thread count from `environ`."""
        document = json.loads(host_json.read_text())
        bus = document.get("extensions", {}).get("serviceBus", {})
        retry = bus.get("clientRetryOptions", {})
        env = os.environ if environ is None else environ
        defaults = cls()
        idle = bus.get("sessionIdleTimeout") or retry.get("tryTimeout")
        threads = env.get("PYTHON_THREADPOOL_THREAD_COUNT")
        return cls(
            max_concurrent_sessions=int(bus.get("maxConcurrentSessions", defaults.max_concurrent_sessions)),
            max_concurrent_calls=int(bus.get("maxConcurrentCalls", defaults.max_concurrent_calls)),
            session_idle_timeout_s=timespan(idle) if idle else defaults.session_idle_timeout_s,
            max_auto_lock_renewal_s=timespan(bus["maxAutoLockRenewalDuration"])
            if "maxAutoLockRenewalDuration" in bus
            else defaults.max_auto_lock_renewal_s,
            prefetch_count=int(bus.get("prefetchCount", defaults.prefetch_count)),
            thread_count=int(threads) if threads else defaults.thread_count,
        )


@dataclass
class HostStats:
    invocations: int = 0
    failures: int = 0
    event_grid_invocations: int = 0
    sessions_accepted: int = 0
    sessions_released_idle: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _HeldSession:
    token: str
    idle_until: float
    renewed_at: float = 0.0
    busy: bool = False
    prefetched: deque[Lease] = field(default_factory=deque)


@dataclass
class _Running:
    lease: Lease
    started: float


class LocalHost:
    """Service Bus-triggered functions run the way the Functions host runs them with the Service Bus
    extension's session processor (`HostConfig`, read from the shipped host.json by default):

    - per session-enabled function, up to `maxConcurrentSessions` sessions are held at once; a held
      session's messages are delivered one at a time in order, and the session is kept until no
      message arrives for `sessionIdleTimeout` after the last one was processed, then released for
      the next session with a visible message;
    - per function without sessions, up to `maxConcurrentCalls` messages at once;
    - every invocation runs on the Python worker's thread pool (`PYTHON_THREADPOOL_THREAD_COUNT`
      threads shared by all functions); a message waiting for a thread keeps its lock;
    - message and session locks are renewed while the function runs, up to
      `maxAutoLockRenewalDuration`; `prefetchCount` messages are locked ahead of their turn;
    - autoComplete: complete when the function returns, abandon when it raises; the broker's
      delivery count and dead-lettering do the rest.

    One scheduler thread does the Service Bus side; the worker threads run the functions.
    """

    def __init__(
        self,
        app: func.FunctionApp,
        broker: InMemoryBroker,
        *,
        config: HostConfig | None = None,
        max_delivery_count: int = 10,
        lock_duration_s: float = 300.0,
        before_invoke: Callable[[QueueFunction, Lease], None] | None = None,
        after_invoke: Callable[[QueueFunction, Lease], None] | None = None,
    ) -> None:
        self.discovered = discover(app)
        self.broker = broker
        self.config = config or HostConfig.load()
        self.workers = self.config.max_concurrent_sessions
        self.before_invoke = before_invoke
        #: runs after the function returned and before the message is completed (a crash there)
        self.after_invoke = after_invoke
        self.stats = HostStats()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[tuple[QueueFunction, Lease] | None] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._held: dict[str, dict[str, _HeldSession]] = {f.name: {} for f in self.discovered.queues}
        self._in_flight: dict[str, int] = {f.name: 0 for f in self.discovered.queues}
        self._running: dict[str, _Running] = {}
        self._busy = 0
        self._lock_duration_s = lock_duration_s
        for function in self.discovered.queues:
            broker.declare(
                function.queue,
                requires_session=function.sessions,
                max_delivery_count=max_delivery_count,
                lock_duration_s=lock_duration_s,
            )

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> LocalHost:
        for n in range(self.config.thread_count):
            worker = threading.Thread(target=self._worker, name=f"python-worker-{n}", daemon=True)
            worker.start()
            self._threads.append(worker)
        scheduler = threading.Thread(target=self._schedule, name=LISTENER_THREAD, daemon=True)
        scheduler.start()
        self._threads.append(scheduler)
        return self

    def stop(self) -> None:
        self._stop.set()
        for _ in range(self.config.thread_count):
            self._jobs.put(None)
        self.broker.notify()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._state:
            for function in self.discovered.queues:
                for session, held in self._held[function.name].items():
                    self.broker.release_session(function.queue, session, held.token)
                self._held[function.name].clear()

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once every queue the functions read is empty (scheduled messages included) and no function runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._state:
                busy = self._busy
            if busy == 0 and sum(self.broker.pending(f.queue) for f in self.discovered.queues) == 0:
                return True
            time.sleep(0.02)
        return False

    # --- the Service Bus listener ---------------------------------------------------------------
    def _schedule(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for function in self.discovered.queues:
                if function.sessions:
                    self._serve_sessions(function, now)
                else:
                    self._serve_queue(function)
            self._renew_locks(time.monotonic())
            self.broker.wait_for_change(self._next_wake(time.monotonic()))

    def _next_wake(self, now: float) -> float:
        wake = 0.05  # scheduled messages become visible by time alone
        with self._state:
            for sessions in self._held.values():
                for held in sessions.values():
                    if not held.busy:
                        wake = min(wake, max(0.001, held.idle_until - now))
        return wake

    def _serve_sessions(self, function: QueueFunction, now: float) -> None:
        sessions = self._held[function.name]
        free = self.config.max_concurrent_sessions - len(sessions)
        if free > 0:
            for session, token in self.broker.accept_sessions(function.queue, free):
                with self._state:
                    sessions[session] = _HeldSession(token, now + self.config.session_idle_timeout_s, renewed_at=now)
                with self._stats_lock:
                    self.stats.sessions_accepted += 1
        with self._state:
            ready = {s: h for s, h in sessions.items() if not h.busy}
        # A prefetched message goes first, unless its lock ran out while it waited (it comes back).
        for session, held in list(ready.items()):
            while held.prefetched:
                lease = held.prefetched.popleft()
                if lease.message.lock_token == lease.lock_token and lease.message.locked_until > now:
                    self._dispatch(held, function, lease)
                    del ready[session]
                    break
        if not ready:
            return
        leases, lost = self.broker.receive_from_sessions(
            function.queue, {s: h.token for s, h in ready.items()}, 1 + self.config.prefetch_count
        )
        for lease in leases:
            held = ready[lease.message.session_id or ""]
            if held.busy:
                held.prefetched.append(lease)
            else:
                self._dispatch(held, function, lease)
        with self._state:
            for session in lost:
                sessions.pop(session, None)
            for session, held in ready.items():
                if not held.busy and not held.prefetched and session not in lost and now >= held.idle_until:
                    # No message for sessionIdleTimeout: the processor closes the session.
                    del sessions[session]
                    self.broker.release_session(function.queue, session, held.token)
                    with self._stats_lock:
                        self.stats.sessions_released_idle += 1

    def _serve_queue(self, function: QueueFunction) -> None:
        while self._in_flight[function.name] < self.config.max_concurrent_calls:
            lease = self.broker.receive(function.queue)
            if lease is None:
                return
            with self._state:
                self._in_flight[function.name] += 1
            self._submit(function, lease)

    def _dispatch(self, held: _HeldSession, function: QueueFunction, lease: Lease) -> None:
        with self._state:
            held.busy = True
        self._submit(function, lease)

    def _submit(self, function: QueueFunction, lease: Lease) -> None:
        with self._state:
            self._busy += 1
            self._running[lease.lock_token] = _Running(lease, time.monotonic())
        self._jobs.put((function, lease))

    def _renew_locks(self, now: float) -> None:
        """Renew what is about to expire: running messages (within maxAutoLockRenewalDuration) and held sessions."""
        margin = self._lock_duration_s / 2
        with self._state:
            running = list(self._running.values())
            # A session's lock, like a message's, is renewed when half of it is left (not on every pass).
            held = [
                (f, s, h) for f in self.discovered.queues for s, h in self._held[f.name].items() if now - h.renewed_at >= margin
            ]
        for item in running:
            if item.lease.message.locked_until - now < margin and now - item.started < self.config.max_auto_lock_renewal_s:
                self.broker.renew(item.lease)
        for function, session, held_session in held:
            if self.broker.renew_session(function.queue, session, held_session.token):
                held_session.renewed_at = now

    # --- the Python worker ----------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            function, lease = job
            self._invoke(function, lease)

    def _invoke(self, function: QueueFunction, lease: Lease) -> None:
        try:
            if self.before_invoke is not None:
                self.before_invoke(function, lease)
            function.call(to_trigger_message(lease))
            if self.after_invoke is not None:
                self.after_invoke(function, lease)
        except Exception as exc:
            with self._stats_lock:
                self.stats.failures += 1
                self.stats.errors.append(f"{function.name}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"[-2000:])
            _log.warning(
                "Executed '%s' (Failed, message %s, delivery %d): %s: %s",
                function.name,
                lease.message.message_id,
                lease.message.delivery_count,
                type(exc).__name__,
                str(exc)[:300],
            )
            with contextlib.suppress(RuntimeError):
                self.broker.abandon(lease)
        else:
            # A lost lock means the message comes back, as Service Bus would do.
            with contextlib.suppress(RuntimeError):
                self.broker.complete(lease)
        finally:
            with self._stats_lock:
                self.stats.invocations += 1
            with self._state:
                self._running.pop(lease.lock_token, None)
                self._busy -= 1
                if function.sessions:
                    held = self._held[function.name].get(lease.message.session_id or "")
                    if held is not None and held.token == lease.session_token:
                        held.busy = False
                        # The idle clock starts when the processor asks for the next message.
                        held.idle_until = time.monotonic() + self.config.session_idle_timeout_s
                else:
                    self._in_flight[function.name] -= 1
            self.broker.notify()

    # --- Event Grid -----------------------------------------------------------------------------
    def event_grid_sink(self, function_name: str | None = None) -> Callable[[list[dict[str, Any]]], None]:
        """A sink for the emulator's business events: each event invokes the Event Grid function once.

        Without a name, each event goes to every Event Grid function (as one subscription each)."""

        def deliver(events: list[dict[str, Any]]) -> None:
            names = [function_name] if function_name else list(self.discovered.event_grid)
            for event in events:
                for name in names:
                    with self._stats_lock:
                        self.stats.event_grid_invocations += 1
                    self.discovered.event_grid[name].call(to_event_grid_event(json.loads(json.dumps(event))))

        return deliver
