"""F&O business events as Event Grid delivers them (docs/reference/fo-contracts.md §2).

`data` is a JSON string by default, an object with *Send object in Event Grid data field*. The
envelope is flat: BusinessEventId, EventId, ControlNumber (increasing, with gaps), EventTime as
`/Date(ms)/` (EventTimeIso8601 too in real payloads), then the event's own fields.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

ORDER_RELEASED = "ProductionOrderReleasedBusinessEvent"
ORDER_STATUS_CHANGED = "ProductionOrderStatusChangedBusinessEvent"
MESSAGE_PROCESSED = "SysMessageProcessorMessageProcessedBusinessEvent"

_MS_DATE = re.compile(r"^/Date\((-?\d+)\)/$")


class NotABusinessEvent(ValueError):
    """The Event Grid event does not carry an F&O business event (a test event, or something else)."""


def parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        match = _MS_DATE.match(value)
        if match:
            return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a /Date(ms)/ or ISO 8601 time: {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"not a time: {value!r}")


class BusinessEvent(BaseModel):
    """The envelope every F&O business event shares; `fields` holds the event's own members."""

    model_config = ConfigDict(frozen=True)

    business_event_id: str = Field(alias="BusinessEventId")
    event_id: str = Field(alias="EventId", min_length=1)
    control_number: int = Field(alias="ControlNumber")
    event_time: datetime | None = Field(None, alias="EventTime")
    legal_entity: str = Field("", alias="BusinessEventLegalEntity")
    fields: dict[str, Any] = Field(default_factory=dict)

    @field_validator("event_time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> datetime | None:
        return parse_time(value)

    def text(self, name: str) -> str:
        value = self.fields.get(name)
        return "" if value is None else str(value)


def parse(data: Any) -> BusinessEvent:
    """The business event in an Event Grid `data` member (string or object)."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise NotABusinessEvent(f"data is not JSON: {exc}") from None
    if not isinstance(data, dict) or "BusinessEventId" not in data or "EventId" not in data:
        raise NotABusinessEvent("data carries no BusinessEventId/EventId")
    envelope = {"BusinessEventId", "EventId", "ControlNumber", "EventTime", "BusinessEventLegalEntity"}
    event = BusinessEvent.model_validate(
        {**{k: v for k, v in data.items() if k in envelope}, "fields": {k: v for k, v in data.items() if k not in envelope}}
    )
    if event.event_time is None and data.get("EventTimeIso8601"):
        event = event.model_copy(update={"event_time": parse_time(data["EventTimeIso8601"])})
    return event
