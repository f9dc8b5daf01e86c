"""Structured logs and counters.

Every outcome line carries flow, MES message id, order, correlation id and outcome as attributes,
which the Azure Monitor OpenTelemetry exporter turns into customDimensions in Application
Insights. Counters go through the OpenTelemetry metrics API: a no-op until the Functions worker
(telemetryMode OpenTelemetry) configures a meter provider.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from opentelemetry import metrics

_meter = metrics.get_meter("mesbridge")
FORWARDED = _meter.create_counter("mesbridge.forwarded", description="MES messages F&O accepted")
PARKED = _meter.create_counter("mesbridge.parked", description="MES messages parked for an operator, by reason")
DUPLICATES = _meter.create_counter("mesbridge.duplicates", description="MES messages recognised as duplicates")
WAITING = _meter.create_counter("mesbridge.waiting", description="MES messages rescheduled to wait (order gate, outage)")
THROTTLED = _meter.create_counter("mesbridge.fo.throttled", description="F&O answers 429 (each pauses the client)")
FO_LATENCY = _meter.create_histogram("mesbridge.fo.latency", unit="ms", description="F&O call time of forwarded messages")

_COUNTERS = {"forwarded": FORWARDED, "parked": PARKED, "duplicate": DUPLICATES, "waiting": WAITING, "retrying": WAITING}


class _Outcome(Protocol):
    @property
    def outcome(self) -> Any: ...
    @property
    def company(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def order(self) -> str: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def fo_ms(self) -> float: ...


def log_outcome(
    log: logging.Logger,
    flow: str,
    result: _Outcome,
    *,
    duration_ms: float,
    delivery_count: int,
    queue_age_s: float | None = None,
    storage_ms: float | None = None,
) -> None:
    """One line per delivery. `queue_age_s` (how long the message sat in its queue before this
    delivery) feeds the backlog-age alert per flow in infra/; `storage_ms` (its time in Table
    Storage calls) beside `fo_latency_ms` and `duration_ms` says where a slow delivery's time went."""
    outcome = str(result.outcome)
    counter = _COUNTERS.get(outcome)
    if counter is not None:
        counter.add(1, {"flow": flow, "reason": result.reason or outcome})
    if outcome == "forwarded":
        FO_LATENCY.record(result.fo_ms, {"flow": flow})
    level = logging.WARNING if outcome == "parked" else logging.INFO
    log.log(
        level,
        "%s %s %s%s",
        flow,
        result.message_id,
        outcome,
        f" ({result.reason}: {result.detail})" if result.reason else "",
        extra={
            "flow": flow,
            "mes_message_id": result.message_id,
            "company": result.company,
            "production_order": result.order,
            "correlation_id": result.correlation_id,
            "outcome": outcome,
            "reason": result.reason,
            "fo_latency_ms": round(result.fo_ms, 1),
            "duration_ms": round(duration_ms, 1),
            "delivery_count": delivery_count,
            **({"queue_age_s": round(queue_age_s, 1)} if queue_age_s is not None else {}),
            **({"storage_ms": round(storage_ms, 1)} if storage_ms is not None else {}),
        },
    )
