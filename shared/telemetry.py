"""Structured logs: every outcome line carries flow, MES message id, order, correlation id and
outcome as attributes, which the Azure Monitor OpenTelemetry exporter turns into
customDimensions in Application Insights."""

from __future__ import annotations

import logging
from typing import Any, Protocol


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


def log_outcome(log: logging.Logger, flow: str, result: _Outcome, *, duration_ms: float, delivery_count: int) -> None:
    outcome = str(result.outcome)
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
        },
    )
