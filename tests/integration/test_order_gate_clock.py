"""The order gate on a real progress row (Azurite) with its clock injected: a gap times out when the
clock says so, without a test that sleeps; the wait is noted once, at the time it started."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.inbound.order_gate import Admit, Gap, OrderGate, Wait
from shared.reasons import ParkReason
from shared.store.tables import LEDGER_TABLE, table

pytestmark = pytest.mark.integration


def test_a_gap_parks_when_the_injected_clock_passes_the_timeout(table_service, table_prefix):
    now = [datetime(2026, 11, 23, 10, 0, tzinfo=UTC)]
    gate = OrderGate(table(table_service, table_prefix + LEDGER_TABLE), gap_timeout_s=600, clock=lambda: now[0])
    started = now[0]
    assert isinstance(gate.decide("USMF", "P7", "material_consumed", 2), Wait)
    now[0] += timedelta(seconds=599)
    assert isinstance(gate.decide("USMF", "P7", "material_consumed", 2), Wait)
    assert gate.read("USMF", "P7").waiting_since == started  # noted once, when the wait began
    now[0] += timedelta(seconds=1)
    assert gate.decide("USMF", "P7", "material_consumed", 2) == Gap(ParkReason.GAP, "sequence 1 never arrived within 600 s", 1)
    assert isinstance(gate.decide("USMF", "P7", "production_started", 1), Admit)


def test_a_released_gap_is_stamped_with_the_injected_clock(table_service, table_prefix):
    at = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    gate = OrderGate(table(table_service, table_prefix + LEDGER_TABLE), gap_timeout_s=600, clock=lambda: at)
    progress = gate.release_gap("USMF", "P8", 1, "never sent", "ana")
    assert progress.watermark == 1 and progress.skipped[0]["at"] == "2026-11-23T09:30:00+00:00"
