"""Park reasons are an enum in the code and the same strings in stored rows and in the console."""

import re
from pathlib import Path

from shared.reasons import Closed, NotParked, ParkReason

ROOT = Path(__file__).resolve().parents[2]


def test_the_stored_values_are_the_strings_rows_already_hold():
    # Changing one would strand every parked row that holds the old value (filters, bulk actions).
    assert {r.value for r in ParkReason} == {
        "too_large", "empty", "invalid_json", "too_deep", "invalid_message", "wrong_queue", "unknown_type",
        "sequence_out_of_range", "unsupported_version", "clock_skew", "unknown_company", "gap", "no_start",
        "conflict", "rejected", "in_doubt", "retries_exhausted", "fo_failed", "invalid_work_order",
    }  # fmt: skip
    assert f"{ParkReason.IN_DOUBT}" == "in_doubt" and ParkReason("gap") is ParkReason.GAP


def test_the_console_filters_only_on_reasons_the_bridge_sets():
    [listed] = re.findall(r"const REASONS = \[([^\]]*)\]", (ROOT / "console" / "app.js").read_text())
    offered = set(re.findall(r'"(\w+)"', listed))
    assert offered and offered <= {r.value for r in ParkReason}, offered - {r.value for r in ParkReason}


def test_a_closed_row_keeps_the_reasons_cancelled_rows_already_hold():
    assert {r.value for r in Closed} == {"cancelled", "rerouted"}
    every = [r.value for enum in (ParkReason, NotParked, Closed) for r in enum]
    assert len(every) == len(set(every)), "one string, one meaning: a reason in two enums would read as either"
