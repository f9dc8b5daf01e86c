"""What the pipeline needs from Service Bus: the delivered message, and a way to put a message
back on its queue for later (the order gate's wait and the outage backoff).

Rescheduling a copy and completing the original keeps the delivery count of a waiting message
at 1: a long F&O outage never pushes healthy messages into the dead-letter queue.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import azure.functions as func

from shared.settings import Settings

#: Application properties the bridge sets on the copies it schedules.
ATTEMPT = "mesbridge-attempt"
ORIGINAL_ID = "mesbridge-original-message-id"
RESUBMIT = "mesbridge-resubmit-token"
#: On the copy of an in-doubt message that asks the bridge to check F&O (shared/inbound/in_doubt.py).
IN_DOUBT_CHECK = "mesbridge-in-doubt-check"
#: On the copy the bridge put back because Table Storage failed under it (shared/inbound/settlement.py,
#: `storage_unavailable`): since when (ISO 8601) and how many copies so far.
STORAGE_FAILING_SINCE = "mesbridge-storage-failing-since"
STORAGE_RETRIES = "mesbridge-storage-retries"


@dataclass(frozen=True)
class Delivery:
    """One delivery of a Service Bus message to a flow function."""

    body: bytes
    message_id: str
    queue: str
    session_id: str | None = None
    delivery_count: int = 1
    enqueued_at: datetime | None = None
    correlation_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_trigger(cls, message: func.ServiceBusMessage, queue: str) -> Delivery:
        return cls(
            body=message.get_body(),
            message_id=str(message.message_id or ""),
            queue=queue,
            session_id=message.session_id,
            delivery_count=int(message.delivery_count or 1),
            enqueued_at=message.enqueued_time_utc,
            correlation_id=message.correlation_id,
            properties=dict(message.application_properties or {}),
        )


def servicebus_client(settings: Settings) -> Any:
    """A ServiceBusClient for the triggers' connection: connection string locally, identity in Azure."""
    from azure.servicebus import ServiceBusClient

    if settings.servicebus_connection_string:
        return ServiceBusClient.from_connection_string(settings.servicebus_connection_string.get_secret_value())
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    credential: Any = (
        ManagedIdentityCredential(client_id=settings.servicebus_client_id)
        if settings.servicebus_client_id
        else DefaultAzureCredential()
    )
    return ServiceBusClient(settings.servicebus_namespace, credential)


class Requeue(Protocol):
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
    ) -> None: ...


class ServiceBusRequeue:
    """Schedules messages with the azure-servicebus SDK (identity or connection string)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self._senders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _sender(self, queue: str) -> Any:
        with self._lock:
            if self._client is None:
                self._client = servicebus_client(self._settings)
            if queue not in self._senders:
                self._senders[queue] = self._client.get_queue_sender(queue)
            return self._senders[queue]

    def check(self) -> str:
        """Open a sender link to the first inbound queue (health check)."""
        from shared.topology import INBOUND_QUEUES

        queue = next(iter(INBOUND_QUEUES.values()))
        sender = self._sender(queue)
        sender._open_with_retry()  # the SDK opens links lazily; a health check wants to know now
        return f"sender link to {queue} open"

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
        from azure.servicebus import ServiceBusMessage

        message = ServiceBusMessage(
            body,
            message_id=message_id,
            session_id=session_id,
            correlation_id=correlation_id,
            application_properties={str(k): v for k, v in (properties or {}).items()},
            content_type="application/json",
        )
        self._sender(queue).schedule_messages(message, datetime.now(UTC) + timedelta(seconds=delay_s))


@dataclass(frozen=True)
class DeadLettered:
    """A message the broker gave up on (MaxDeliveryCountExceeded, expiry), as operators see it."""

    queue: str
    sequence_number: int
    message_id: str
    session_id: str | None
    reason: str
    description: str
    delivery_count: int
    body: bytes


class DeadLetters(Protocol):
    def dead_lettered(self, queue: str) -> list[DeadLettered]: ...

    def resubmit_dead_lettered(self, queue: str, sequence_number: int) -> None: ...


class ServiceBusDeadLetters:
    """The dead-letter sub-queues of the inbound queues, through the azure-servicebus SDK."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def dead_lettered(self, queue: str) -> list[DeadLettered]:
        from azure.servicebus import ServiceBusSubQueue

        with (
            servicebus_client(self._settings) as client,
            client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver,
        ):
            return [
                DeadLettered(
                    queue,
                    int(m.sequence_number or 0),
                    str(m.message_id),
                    m.session_id,
                    str(m.dead_letter_reason or ""),
                    str(m.dead_letter_error_description or ""),
                    int(m.delivery_count or 0),
                    b"".join(m.body),
                )
                for m in receiver.peek_messages(max_message_count=250)
            ]

    def resubmit_dead_lettered(self, queue: str, sequence_number: int) -> None:
        """Send a copy back to its queue, then remove it from the dead-letter queue."""
        from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue

        client = servicebus_client(self._settings)
        receiver = client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=5)
        with client, receiver:
            for message in receiver.receive_messages(max_message_count=250, max_wait_time=5):
                if message.sequence_number != sequence_number:
                    receiver.abandon_message(message)
                    continue
                copy = ServiceBusMessage(
                    b"".join(message.body),
                    message_id=f"{message.message_id}|dlq-{sequence_number}"[:128],
                    session_id=message.session_id,
                    correlation_id=message.correlation_id,
                    application_properties=message.application_properties,
                )
                with client.get_queue_sender(queue) as sender:
                    sender.send_messages(copy)
                receiver.complete_message(message)
                return
        raise LookupError(f"no dead-lettered message {sequence_number} on {queue}")
