"""Sends outbound messages to the MES topic with the azure-servicebus SDK.

The Python output binding can set neither SessionId nor MessageId, so the bridge sends itself:
SessionId = production order (MES reads each order in order), MessageId derived from what the
message is about (a re-send after an Event Grid retry is dropped by duplicate detection).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.inbound.servicebus import servicebus_client
from shared.outbound.messages import Outbound
from shared.settings import Settings


@dataclass(frozen=True)
class Envelope:
    body: bytes
    message_id: str
    session_id: str
    correlation_id: str | None
    properties: dict[str, Any] = field(default_factory=dict)


def _utf8_json(message: Outbound) -> bytes:
    """The message as UTF-8 JSON. A lone surrogate (valid in the JSON F&O sends, e.g. in an infolog;
    not encodable in UTF-8) becomes "?" instead of stopping the message: Event Grid would retry forever."""
    try:
        return message.model_dump_json(exclude_none=True).encode()
    except ValueError:  # pydantic's serialisation error is a ValueError
        document = message.model_dump(mode="json", exclude_none=True)
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def envelope(message: Outbound, message_id: str, correlation_id: str | None = None) -> Envelope:
    return Envelope(
        body=_utf8_json(message),
        message_id=message_id[:128],
        session_id=message.production_order or f"company-{message.company}",
        correlation_id=correlation_id,
        properties={
            "type": message.type,
            "company": message.company,
            "production_order": message.production_order or "",
            "schema_version": message.schema_version,
        },
    )


class MesPublisher(Protocol):
    def publish(self, message: Envelope) -> None: ...


class ServiceBusMesPublisher:
    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._sender: Any = None
        self._lock = threading.Lock()

    def _get_sender(self) -> Any:
        with self._lock:
            if self._sender is None:
                self._sender = servicebus_client(self._settings).get_topic_sender(self._topic)
            return self._sender

    def publish(self, message: Envelope) -> None:
        from azure.servicebus import ServiceBusMessage

        self._get_sender().send_messages(
            ServiceBusMessage(
                message.body,
                message_id=message.message_id,
                session_id=message.session_id,
                correlation_id=message.correlation_id,
                application_properties={str(k): v for k, v in message.properties.items()},
                content_type="application/json",
            )
        )
