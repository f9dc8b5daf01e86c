"""The ledger row within Azure's limits whatever it is given: texts measured in UTF-16 code units,
kept whole where they fit, History bounded by compaction, the payload's share reserved."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.store.ledger import Ledger, LedgerEntry, State
from shared.store.tables import ENTITY_BYTES, entity_size, table, utf16_units

pytestmark = pytest.mark.integration


@pytest.fixture
def rows(table_service, table_prefix):
    """The ledger's table itself, to read or plant rows as stored (the Ledger keeps its client to itself)."""
    return table(table_service, table_prefix + "Ledger")


@pytest.fixture
def ledger(rows):
    return Ledger(rows)


def entry(message_id: str, **changes: Any) -> LedgerEntry:
    values: dict[str, Any] = {
        "company": "USMF",
        "message_id": message_id,
        "state": State.FORWARDING,
        "flow": "production_started",
    }
    values.update(changes)
    return LedgerEntry(**values)


def test_a_long_outage_with_non_ascii_errors_keeps_history_bounded_and_the_newest_entries(ledger):
    row = ledger.create(entry("outage-1", attempts=1))
    for attempt in range(120):
        detail = f"attempt {attempt}: " + "Сервис недоступен 😀 503 " * 120  # about 3,000 UTF-16 units each
        row = ledger.transition(row, State.WAITING, reason="transient", detail=detail)
        row = ledger.transition(row, State.FORWARDING, detail=f"attempt {attempt + 1}")
    stored = ledger.get("USMF", "outage-1")
    assert stored is not None and stored.state is State.FORWARDING and stored.unreadable == ()
    assert utf16_units(json.dumps(list(stored.history))) <= 16_000 and len(stored.history) <= 40
    assert stored.history[0]["state"] == "Forwarding"  # the first entry stays
    assert stored.history[1]["reason"] == "compacted" and int(stored.history[1]["detail"].split()[0]) > 100
    assert stored.history[-1]["detail"] == "attempt 120" and stored.history[-2]["detail"].startswith("attempt 119:")


def test_texts_are_kept_whole_where_they_fit_and_cut_with_a_note_where_the_row_would_pass_1_mib(ledger, rows):
    infolog = "😀" * 40_000  # 80,000 UTF-16 units: three string properties
    row = ledger.create(entry("texts-1", attempts=1))
    row = ledger.transition(row, State.FAILED, reason="fo_failed", detail="d" * 50_000, infolog=infolog)
    stored = ledger.get("USMF", "texts-1")
    assert stored.infolog == infolog and stored.detail == "d" * 50_000
    # With a 600 KiB payload the row has no room for 2 x 160 KB of texts: both are cut, and say so.
    payload = b"x" * (700 * 1024)
    big = ledger.create(entry("texts-2", attempts=1, payload_size=len(payload)), payload=payload)
    big = ledger.transition(big, State.FAILED, detail="é" * 200_000, infolog="😀" * 100_000)
    stored = ledger.get("USMF", "texts-2")
    assert "did not fit in the ledger row's 1 MiB" in stored.detail and "did not fit" in stored.infolog
    assert stored.detail.startswith("é" * 1000) and stored.infolog.startswith("😀" * 1000)
    whole = rows.get_entity("USMF", "texts-2")
    assert entity_size(whole) <= ENTITY_BYTES and whole["PayloadTruncated"] is True
    assert ledger.payload("USMF", "texts-2") == payload[: 600 * 1024]


def test_structured_data_is_stored_whole_and_a_shorter_rewrite_leaves_no_stale_part(ledger):
    lineage = [{"company": "USMF", "order": "P1", "item": f"RM-{n}", "batch": f"B{n}", "quantity": 1.0} for n in range(500)]
    row = ledger.create(entry("extra-1", attempts=1))
    row = ledger.transition(row, State.PARKED, reason="in_doubt", extra={"Lineage": lineage})
    assert ledger.get("USMF", "extra-1").extra["Lineage"] == lineage
    row = ledger.transition(row, State.FORWARDED, extra={"FoReference": "x"})
    stored = ledger.get("USMF", "extra-1")
    assert stored.extra == {"FoReference": "x"} and stored.unreadable == ()
    assert [row.extra for row in ledger.query(company="USMF") if row.message_id == "extra-1"] == [{"FoReference": "x"}]


def test_a_message_id_starting_above_ascii_is_listed(ledger):
    for message_id in ("ö-1", "😀-2", "警-3", "a-4"):
        ledger.create(entry(message_id, state=State.PARKED, reason="invalid_message"))
    listed = {e.message_id for e in ledger.query(company="USMF", state=State.PARKED)}
    assert listed == {"ö-1", "😀-2", "警-3", "a-4"}


def test_a_row_with_an_unknown_state_or_a_non_numeric_count_is_read_as_parked_and_says_why(ledger, rows):
    rows.create_entity(
        {
            "PartitionKey": "USMF",
            "RowKey": "odd-1",
            "Company": "USMF",
            "MessageId": "odd-1",
            "State": "Bogus",
            "Attempts": "many",
            "History": "{}",
            "Extra": "[1, 2]",
        }
    )
    stored = ledger.get("USMF", "odd-1")
    assert stored is not None and stored.state is State.PARKED and stored.attempts == 0
    assert {u.name for u in stored.unreadable} == {"State", "Attempts", "History", "Extra"}
    assert [e.message_id for e in ledger.query(company="USMF", state=State.PARKED)] == []  # stored as Bogus
    assert "odd-1" in {e.message_id for e in ledger.query(company="USMF")}
