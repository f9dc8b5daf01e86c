import datetime as dt
import logging

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.inbound.attempt import Outcome, Result
from shared.inbound.pipeline import queue_age_s
from shared.inbound.servicebus import Delivery
from shared.ops import telemetry
from shared.reasons import ParkReason


@pytest.fixture
def reader(monkeypatch):
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    monkeypatch.setattr(telemetry, "_COUNTERS", {"forwarded": meter.create_counter("f"), "parked": meter.create_counter("p")})
    monkeypatch.setattr(telemetry, "FO_LATENCY", meter.create_histogram("l"))
    return reader


def test_every_outcome_line_carries_the_dimensions_and_counts(reader, caplog):
    result = Result(Outcome.PARKED, "USMF", "m-1", ParkReason.REJECTED, "no such item", "P1", "corr-1", 12.5)
    with caplog.at_level(logging.INFO, logger="mesbridge"):
        telemetry.log_outcome(
            logging.getLogger("mesbridge"),
            "material_consumed",
            result,
            duration_ms=30,
            delivery_count=2,
            queue_age_s=95.04,
            storage_ms=4.24,
        )
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    for name, value in {
        "flow": "material_consumed",
        "mes_message_id": "m-1",
        "production_order": "P1",
        "correlation_id": "corr-1",
        "outcome": "parked",
        "reason": "rejected",
        "delivery_count": 2,
        "queue_age_s": 95.0,  # the backlog-age alert reads it (infra/resources.bicep)
        "fo_latency_ms": 12.5,
        "duration_ms": 30,
        "storage_ms": 4.2,
    }.items():
        assert getattr(record, name) == value
    points = [p for m in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics for p in m.data.data_points]
    assert [(p.value, dict(p.attributes)) for p in points] == [(1, {"flow": "material_consumed", "reason": "rejected"})]


@pytest.mark.parametrize("zone", [dt.UTC, None])
def test_queue_age_is_measured_from_the_enqueued_time_with_or_without_a_zone(zone):
    now = dt.datetime(2026, 11, 23, 10, 20, tzinfo=dt.UTC)
    enqueued = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC).replace(tzinfo=zone)
    assert queue_age_s(Delivery(b"{}", "m-1", "q", enqueued_at=enqueued), now) == 1200
    assert queue_age_s(Delivery(b"{}", "m-1", "q"), now) is None
