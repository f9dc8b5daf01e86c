"""Building MES events as a MES would send them (for tests, the demo and the benchmark)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

_counter = itertools.count(1)
#: One time for every event of a run that names none: an hour ago, so a MES clock check never
#: finds it ahead (the bridge parks times beyond MES_MAX_CLOCK_SKEW_S as clock_skew).
DEFAULT_TIME = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)


def event(
    kind: str,
    order: str | None,
    body: dict[str, Any],
    *,
    message_id: str | None = None,
    sequence: int | None = None,
    company: str = "USMF",
    plant: str = "1",
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "message_id": message_id or f"mes-{next(_counter):08d}",
        "type": kind,
        "schema_version": "1.0",
        "company": company,
        "plant": plant,
        "occurred_at": (occurred_at or DEFAULT_TIME).isoformat(),
        "body": body,
    }
    if order is not None:
        document["production_order"] = order
    if sequence is not None:
        document["sequence"] = sequence
    if correlation_id is not None:
        document["correlation_id"] = correlation_id
    return document


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()
