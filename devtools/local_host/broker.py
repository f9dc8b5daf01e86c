"""An in-memory Service Bus with the semantics the bridge relies on (docs/reference/azure-platform.md):

- peek-lock: a received message is invisible until completed, abandoned, or its lock expires;
- delivery count: incremented on every delivery; at `max_delivery_count` an abandon or a lock
  expiry moves the message to the dead-letter queue with reason MaxDeliveryCountExceeded;
- sessions: FIFO within a session, one receiver per session at a time, sessions in parallel; a
  session's lock lasts the queue's lock duration and is renewed by each receive or renewal;
- lock renewal: a receiver may renew the locks it holds (the Functions host does so while a
  function runs, up to `maxAutoLockRenewalDuration`);
- scheduled messages become visible at their enqueue time;
- duplicate detection: a MessageId seen within the window is accepted and dropped;
- a size limit (256 KB, Standard tier) refused at send time.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Under the bridge's logger, so a run's log (the demo's, the chaos run's) shows what Service Bus
#: would count in its dead-letter metrics.
_log = logging.getLogger("mesbridge.localhost")


class MessageSizeExceededError(ValueError):
    pass


class SessionLockLostError(RuntimeError):
    pass


@dataclass
class BrokerMessage:
    body: bytes
    message_id: str
    session_id: str | None
    correlation_id: str | None
    properties: dict[str, Any]
    sequence_number: int
    enqueued_at: float
    available_at: float
    delivery_count: int = 0
    lock_token: str | None = None
    locked_until: float = 0.0
    dead_letter_reason: str = ""
    dead_letter_description: str = ""


@dataclass
class Queue:
    name: str
    requires_session: bool = True
    max_delivery_count: int = 10
    lock_duration_s: float = 60.0
    duplicate_window_s: float = 600.0
    max_message_bytes: int = 256 * 1024
    active: list[BrokerMessage] = field(default_factory=list)
    dead_letters: list[BrokerMessage] = field(default_factory=list)
    seen_ids: dict[str, float] = field(default_factory=dict)
    session_owners: dict[str, tuple[str, float]] = field(default_factory=dict)
    duplicates_dropped: int = 0


@dataclass(frozen=True)
class Lease:
    queue: str
    message: BrokerMessage
    lock_token: str
    session_token: str | None


class InMemoryBroker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._queues: dict[str, Queue] = {}
        self._lock = threading.Condition()
        self._sequence = itertools.count(1)

    # --- topology -------------------------------------------------------------------------------
    def declare(self, name: str, **options: Any) -> Queue:
        with self._lock:
            if name not in self._queues:
                self._queues[name] = Queue(name, **options)
            return self._queues[name]

    def queue(self, name: str) -> Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise KeyError(f"no queue {name}: declare it first") from None

    # --- sending --------------------------------------------------------------------------------
    def send(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str | None = None,
        session_id: str | None = None,
        correlation_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        delay_s: float = 0.0,
    ) -> bool:
        """Enqueue; False when duplicate detection dropped it."""
        target = self.queue(queue)
        if len(body) > target.max_message_bytes:
            raise MessageSizeExceededError(f"{len(body)} bytes exceeds the {target.max_message_bytes} bytes limit of {queue}")
        if target.requires_session and not session_id:
            raise ValueError(f"{queue} requires a SessionId")
        now = self._clock()
        message_id = message_id or uuid.uuid4().hex
        with self._lock:
            seen = target.seen_ids.get(message_id)
            if seen is not None and now - seen < target.duplicate_window_s:
                target.duplicates_dropped += 1
                return False
            target.seen_ids[message_id] = now
            target.active.append(
                BrokerMessage(
                    body, message_id, session_id, correlation_id, dict(properties or {}), next(self._sequence), now, now + delay_s
                )
            )
            self._lock.notify_all()
        return True

    def schedule(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        session_id: str | None,
        delay_s: float,
        correlation_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        """The bridge's Requeue port: a scheduled message, as `ServiceBusSender.schedule_messages` makes."""
        self.send(
            queue,
            body,
            message_id=message_id,
            session_id=session_id,
            correlation_id=correlation_id,
            properties=properties,
            delay_s=delay_s,
        )

    # --- receiving ------------------------------------------------------------------------------
    def _expire_locks(self, target: Queue, now: float) -> None:
        for message in list(target.active):
            if message.lock_token and message.locked_until <= now:
                message.lock_token = None
                if message.delivery_count >= target.max_delivery_count:
                    self._dead_letter(target, message, "MaxDeliveryCountExceeded", "lock expired on the last delivery")
        for session, (_, until) in list(target.session_owners.items()):
            if until <= now:
                del target.session_owners[session]

    def _dead_letter(self, target: Queue, message: BrokerMessage, reason: str, description: str) -> None:
        target.active.remove(message)
        message.lock_token = None
        message.dead_letter_reason = reason
        message.dead_letter_description = description
        target.dead_letters.append(message)
        _log.warning(
            "%s: message %s (session %s) dead-lettered after %d deliveries: %s, %s",
            target.name,
            message.message_id,
            message.session_id,
            message.delivery_count,
            reason,
            description,
        )

    def accept_session(self, queue: str) -> tuple[str, str] | None:
        """Lock the next session that has a visible message: (session id, session token)."""
        target = self.queue(queue)
        now = self._clock()
        with self._lock:
            self._expire_locks(target, now)
            for message in target.active:
                session = message.session_id or ""
                if message.available_at <= now and session not in target.session_owners:
                    token = uuid.uuid4().hex
                    target.session_owners[session] = (token, now + target.lock_duration_s)
                    return session, token
        return None

    def accept_sessions(self, queue: str, limit: int) -> list[tuple[str, str]]:
        """Lock up to `limit` sessions that have a visible message, oldest message first (one scan)."""
        target = self.queue(queue)
        now = self._clock()
        accepted: list[tuple[str, str]] = []
        with self._lock:
            self._expire_locks(target, now)
            for message in target.active:
                if len(accepted) >= limit:
                    break
                session = message.session_id or ""
                if message.available_at <= now and not message.lock_token and session not in target.session_owners:
                    token = uuid.uuid4().hex
                    target.session_owners[session] = (token, now + target.lock_duration_s)
                    accepted.append((session, token))
        return accepted

    def receive_from_sessions(self, queue: str, held: Mapping[str, str], count: int = 1) -> tuple[list[Lease], set[str]]:
        """For each session in `held` (session id -> token), its next `count` visible messages in FIFO
        order, locked for this receiver (one scan); and the held sessions whose lock was lost."""
        target = self.queue(queue)
        now = self._clock()
        leases: list[Lease] = []
        with self._lock:
            self._expire_locks(target, now)
            lost = {s for s, token in held.items() if target.session_owners.get(s, ("", 0.0))[0] != token}
            done: set[str] = set(lost)
            taken: dict[str, int] = {}
            for message in target.active:
                session = message.session_id or ""
                if session not in held or session in done:
                    continue
                if message.lock_token:
                    done.add(session)  # FIFO: nothing overtakes a locked message of the session
                    continue
                if message.available_at > now:
                    continue
                message.delivery_count += 1
                message.lock_token = uuid.uuid4().hex
                message.locked_until = now + target.lock_duration_s
                leases.append(Lease(queue, message, message.lock_token, held[session]))
                target.session_owners[session] = (held[session], now + target.lock_duration_s)
                taken[session] = taken.get(session, 0) + 1
                if taken[session] >= count:
                    done.add(session)
        return leases, lost

    def renew(self, lease: Lease) -> bool:
        """Renew the message's lock and its session's (False when this receiver no longer holds it)."""
        target = self.queue(lease.queue)
        now = self._clock()
        with self._lock:
            message = lease.message
            if message.lock_token != lease.lock_token or message not in target.active:
                return False
            message.locked_until = now + target.lock_duration_s
            session = message.session_id or ""
            owner = target.session_owners.get(session)
            if lease.session_token and owner is not None and owner[0] == lease.session_token:
                target.session_owners[session] = (owner[0], now + target.lock_duration_s)
            return True

    def renew_session(self, queue: str, session: str, token: str) -> bool:
        target = self.queue(queue)
        with self._lock:
            owner = target.session_owners.get(session)
            if owner is None or owner[0] != token:
                return False
            target.session_owners[session] = (token, self._clock() + target.lock_duration_s)
            return True

    def wait_for_change(self, timeout: float) -> None:
        """Block until a message is sent or settled, a session released, or `timeout` passes."""
        with self._lock:
            self._lock.wait(timeout)

    def release_session(self, queue: str, session: str, token: str) -> None:
        target = self.queue(queue)
        with self._lock:
            if target.session_owners.get(session, ("", 0))[0] == token:
                del target.session_owners[session]
                self._lock.notify_all()

    def receive(self, queue: str, session: str | None = None, session_token: str | None = None) -> Lease | None:
        """The next visible message (of the session, in FIFO order), locked for this receiver."""
        target = self.queue(queue)
        now = self._clock()
        with self._lock:
            self._expire_locks(target, now)
            if session is not None:
                owner = target.session_owners.get(session)
                if owner is None or owner[0] != session_token:
                    raise SessionLockLostError(f"session {session} of {queue} is not locked by this receiver")
                target.session_owners[session] = (owner[0], now + target.lock_duration_s)
            for message in target.active:
                if session is not None and (message.session_id or "") != session:
                    continue
                if message.lock_token:
                    if session is not None:
                        return None  # FIFO: nothing overtakes a locked message of the session
                    continue
                if message.available_at > now:
                    continue
                message.delivery_count += 1
                message.lock_token = uuid.uuid4().hex
                message.locked_until = now + target.lock_duration_s
                return Lease(queue, message, message.lock_token, session_token)
        return None

    def notify(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def lose_lock(self, lease: Lease) -> None:
        """The receiver's locks end now (a stalled worker, a network blip): the message is visible
        again and another receiver may take it, while this one still runs and then fails to complete it."""
        with self._lock:
            target = self.queue(lease.queue)
            message = lease.message
            if message.lock_token == lease.lock_token:
                message.lock_token = None
                message.locked_until = 0.0
            session = message.session_id or ""
            owner = target.session_owners.get(session)
            if lease.session_token and owner is not None and owner[0] == lease.session_token:
                del target.session_owners[session]
            self._lock.notify_all()

    def _settle(self, lease: Lease) -> tuple[Queue, BrokerMessage]:
        target = self.queue(lease.queue)
        if lease.message.lock_token != lease.lock_token or lease.message not in target.active:
            raise RuntimeError(f"the lock on message {lease.message.message_id} was lost")
        return target, lease.message

    def complete(self, lease: Lease) -> None:
        with self._lock:
            target, message = self._settle(lease)
            target.active.remove(message)
            self._lock.notify_all()

    def abandon(self, lease: Lease) -> None:
        with self._lock:
            target, message = self._settle(lease)
            message.lock_token = None
            if message.delivery_count >= target.max_delivery_count:
                self._dead_letter(target, message, "MaxDeliveryCountExceeded", f"delivered {message.delivery_count} times")
            self._lock.notify_all()

    def dead_letter(self, lease: Lease, reason: str, description: str = "") -> None:
        with self._lock:
            target, message = self._settle(lease)
            self._dead_letter(target, message, reason, description)
            self._lock.notify_all()

    # --- inspection -----------------------------------------------------------------------------
    def pending(self, queue: str | None = None) -> int:
        with self._lock:
            names = [queue] if queue else list(self._queues)
            return sum(len(self._queues[n].active) for n in names)

    def next_visible_in(self) -> float | None:
        """Seconds until the next message becomes visible (None if none is waiting)."""
        now = self._clock()
        with self._lock:
            times = [m.available_at - now for q in self._queues.values() for m in q.active if not m.lock_token]
        return max(0.0, min(times)) if times else None

    def dead_letters(self, queue: str | None = None) -> list[BrokerMessage]:
        with self._lock:
            names = [queue] if queue else list(self._queues)
            return [m for n in names for m in self._queues[n].dead_letters]

    # --- the bridge's DeadLetters port ----------------------------------------------------------
    def dead_lettered(self, queue: str) -> list[Any]:
        from shared.inbound.servicebus import DeadLettered

        return [
            DeadLettered(
                queue,
                m.sequence_number,
                m.message_id,
                m.session_id,
                m.dead_letter_reason,
                m.dead_letter_description,
                m.delivery_count,
                m.body,
            )
            for m in self.dead_letters(queue)
        ]

    def resubmit_dead_lettered(self, queue: str, sequence_number: int) -> None:
        with self._lock:
            target = self.queue(queue)
            message = next((m for m in target.dead_letters if m.sequence_number == sequence_number), None)
            if message is None:
                raise LookupError(f"no dead-lettered message {sequence_number} on {queue}")
            target.dead_letters.remove(message)
        self.send(
            queue,
            message.body,
            message_id=f"{message.message_id}|dlq-{sequence_number}",
            session_id=message.session_id,
            correlation_id=message.correlation_id,
            properties=message.properties,
        )


class BrokerMesPublisher:
    """The bridge's MES publisher port, sending to the in-memory broker's MES topic."""

    def __init__(self, broker: InMemoryBroker, topic: str) -> None:
        self._broker = broker
        self._topic = topic

    def publish(self, message: Any) -> None:
        self._broker.send(
            self._topic,
            message.body,
            message_id=message.message_id,
            session_id=message.session_id,
            correlation_id=message.correlation_id,
            properties=message.properties,
        )
