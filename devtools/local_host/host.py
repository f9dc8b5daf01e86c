"""The local Functions host: runs what `function_app.py` declares, read from its binding metadata.

Service Bus-triggered functions get messages from the in-memory broker the way the Functions
host gets them from Service Bus with `autoCompleteMessages`: one receiver per session, several
sessions at once, complete when the function returns, abandon when it raises. Event
Grid-triggered functions get the events the emulator delivers (at least once, unordered).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions.servicebus import ServiceBusMessage

from devtools.local_host.broker import InMemoryBroker, Lease, SessionLockLostError


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


_DISCOVERED: dict[int, Discovered] = {}
_DISCOVER_LOCK = threading.Lock()


def discover(app: func.FunctionApp) -> Discovered:
    """The functions of `app` by trigger (cached: an app can be indexed only once)."""
    with _DISCOVER_LOCK:
        if id(app) not in _DISCOVERED:
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
            _DISCOVERED[id(app)] = Discovered(tuple(queues), event_grid, tuple(http))
        return _DISCOVERED[id(app)]


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


@dataclass
class HostStats:
    invocations: int = 0
    failures: int = 0
    event_grid_invocations: int = 0
    errors: list[str] = field(default_factory=list)


class LocalHost:
    def __init__(
        self,
        app: func.FunctionApp,
        broker: InMemoryBroker,
        *,
        max_concurrent_sessions: int = 8,
        max_delivery_count: int = 10,
        lock_duration_s: float = 60.0,
        before_invoke: Callable[[QueueFunction, Lease], None] | None = None,
        after_invoke: Callable[[QueueFunction, Lease], None] | None = None,
    ) -> None:
        self.discovered = discover(app)
        self.broker = broker
        self.workers = max_concurrent_sessions
        self.before_invoke = before_invoke
        #: runs after the function returned and before the message is completed (a crash there)
        self.after_invoke = after_invoke
        self.stats = HostStats()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Condition()
        self._rotation = itertools.cycle(range(max(1, len(self.discovered.queues))))
        self._rotation_lock = threading.Lock()
        for function in self.discovered.queues:
            broker.declare(
                function.queue,
                requires_session=function.sessions,
                max_delivery_count=max_delivery_count,
                lock_duration_s=lock_duration_s,
            )

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> LocalHost:
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"host-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once every queue the functions read is empty (scheduled messages included) and no function runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._busy_lock:
                busy = self._busy
            if busy == 0 and sum(self.broker.pending(f.queue) for f in self.discovered.queues) == 0:
                return True
            time.sleep(0.02)
        return False

    # --- Service Bus ----------------------------------------------------------------------------
    def _next_function(self) -> QueueFunction:
        with self._rotation_lock:
            return self.discovered.queues[next(self._rotation)]

    def _work(self) -> None:
        idle_rounds = 0
        while not self._stop.is_set():
            did_work = False
            for _ in range(len(self.discovered.queues)):
                function = self._next_function()
                if function.sessions:
                    accepted = self.broker.accept_session(function.queue)
                    if accepted is None:
                        continue
                    did_work = True
                    session, token = accepted
                    try:
                        self._drain_session(function, session, token)
                    finally:
                        self.broker.release_session(function.queue, session, token)
                else:
                    lease = self.broker.receive(function.queue)
                    if lease is not None:
                        did_work = True
                        self._invoke(function, lease)
            idle_rounds = 0 if did_work else idle_rounds + 1
            if not did_work:
                wait = self.broker.next_visible_in()
                time.sleep(min(0.05, wait) if wait is not None else 0.02)

    def _drain_session(self, function: QueueFunction, session: str, token: str) -> None:
        while not self._stop.is_set():
            try:
                lease = self.broker.receive(function.queue, session, token)
            except SessionLockLostError:
                return
            if lease is None:
                return
            self._invoke(function, lease)

    def _invoke(self, function: QueueFunction, lease: Lease) -> None:
        with self._busy_lock:
            self._busy += 1
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
            with contextlib.suppress(RuntimeError):
                self.broker.abandon(lease)
        else:
            # A lost lock means the message comes back, as Service Bus would do.
            with contextlib.suppress(RuntimeError):
                self.broker.complete(lease)
        finally:
            with self._stats_lock:
                self.stats.invocations += 1
            with self._busy_lock:
                self._busy -= 1

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
