"""Fuzz of the stored-state side (issue 16): hypothesis over sizes and unicode (astral characters,
lone surrogates, controls, the key-forbidden characters) for every field that reaches a Table
property, against Azurite with the store's limit check on. Each write either fits, or is kept whole
in parts, or (free text past the row's 1 MiB only) is cut with a note; a read gives back what was
stored, and nothing raises."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.inbound.order_gate import OrderGate, Step
from shared.outbound.mes_publisher import envelope
from shared.outbound.messages import MessageOutcome
from shared.store.event_log import RELEASE, STATUS, STATUS_UNITS, EventLog
from shared.store.ledger import Ledger, LedgerEntry, State
from shared.store.lineage import BatchRef, Edge, Lineage
from shared.store.progress import TableProgressStore
from shared.store.tables import ENTITY_BYTES, STRING_UNITS, cut_text, entity_size, table, utf16_units

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Every code point, lone surrogates included (JSON carries them as \\udXXX escapes).
characters = st.characters(blacklist_categories=())
awkward = st.sampled_from(
    ["😀", "\ud800", "\udfff", "é", "警", "/", "\\", "#", "?", "%", "~", "\x00", "\x7f", "\u202e", "'", '"']
)
short_text = st.text(st.one_of(characters, awkward), max_size=40)


@st.composite
def sized_text(draw: st.DrawFn, max_repeat: int = 6000) -> str:
    """A text of any size up to about 240,000 UTF-16 units: a fuzzed unit, repeated."""
    unit = draw(short_text)
    return unit * draw(st.integers(0, max_repeat)) if unit else ""


@pytest.fixture(scope="module")
def stores(azurite):
    from shared.store.tables import connect

    service = connect(azurite.connection_string)
    return (
        Ledger(table(service, "fuzzLedger")),
        Lineage(table(service, "fuzzLineage")),
        EventLog(table(service, "fuzzEvents")),
        OrderGate(TableProgressStore(table(service, "fuzzLedger")), gap_timeout_s=60),
        table(service, "fuzzLedger"),  # the raw rows, to check them as Azure would store them
    )


def _known(text: str) -> bool:
    return "[... cut:" in text


@FUZZ
@given(
    message_id=st.text(st.one_of(characters, awkward), min_size=1, max_size=300),
    company=short_text,
    order=short_text,
    correlation=short_text,
    detail=sized_text(),
    infolog=sized_text(),
    # Extra is what the bridge keeps (genealogy of at most 500 lines of 20-character ids, hashes):
    # up to a few hundred KB here; past the row's room the store refuses it (test_entity_limits.py).
    extra_text=sized_text(max_repeat=300),
    payload=st.binary(max_size=2000).map(lambda b: b * 400),
)
def test_a_ledger_row_of_any_size_and_text_is_written_and_read_back(
    stores, message_id, company, order, correlation, detail, infolog, extra_text, payload
):
    ledger = stores[0]
    message_id += uuid.uuid4().hex[:8]  # the table outlives one example: a fresh row each time
    entry = LedgerEntry(
        company=company,
        message_id=message_id,
        state=State.FORWARDING,
        flow="material_consumed",
        production_order=order,
        correlation_id=correlation,
        detail=detail,
        payload_size=len(payload),
        attempts=1,
    )
    created = ledger.create(entry, payload=payload)
    extra: dict[str, Any] = {"Lineage": [{"item": extra_text[:50], "batch": extra_text}], "Note": extra_text}
    parked = ledger.transition(created, State.PARKED, reason="in_doubt", detail=detail, infolog=infolog, extra=extra)
    stored = ledger.get(company, message_id)
    assert stored is not None and stored.unreadable == ()
    assert (stored.company, stored.message_id, stored.production_order) == (company, message_id, order)
    assert stored.extra == json.loads(json.dumps(extra))  # structured data: always whole
    for given_text, kept in ((detail, stored.detail), (infolog, stored.infolog)):
        assert kept == given_text or (_known(kept) and given_text.startswith(kept[: kept.index(" [... cut:")]))
    assert ledger.payload(company, message_id) == payload[: 600 * 1024]
    assert stored.state is State.PARKED and parked.etag
    raw = stores[4].get_entity(stored_key(stored), ledger_key(stored))
    assert entity_size(raw) <= ENTITY_BYTES
    assert all(utf16_units(v) <= STRING_UNITS for v in raw.values() if isinstance(v, str))
    listed = [
        e for e in ledger.query(company=company or None, state=State.PARKED) if (e.company, e.message_id) == (company, message_id)
    ]
    assert [e.extra for e in listed] == [stored.extra]


def stored_key(entry: LedgerEntry) -> str:
    from shared.store.tables import safe_key

    return safe_key(entry.company)


def ledger_key(entry: LedgerEntry) -> str:
    from shared.store.tables import safe_key

    return safe_key(entry.message_id)


@FUZZ
@given(
    order=short_text,
    lines=st.lists(st.tuples(short_text, short_text, st.floats(0.001, 1e6)), min_size=1, max_size=30),
    message_id=short_text,
)
def test_genealogy_of_any_text_is_recorded_and_found_again(stores, order, lines, message_id):
    lineage = stores[1]
    order = order + uuid.uuid4().hex[:8]  # a fresh order each example
    edges = [Edge("USMF", order, "consumed", item, batch, quantity, message_id) for item, batch, quantity in lines]
    lineage.record(edges)
    lineage.record(edges)  # idempotent
    expected: dict[BatchRef, float] = {}
    for item, batch, quantity in lines:
        expected[BatchRef(item, batch)] = expected.get(BatchRef(item, batch), 0.0) + quantity
    found = lineage.batches_of_order("USMF", order, "consumed")
    assert found.keys() == expected.keys()
    assert all(abs(found[ref] - expected[ref]) <= 1e-9 * max(1.0, expected[ref]) for ref in expected)
    item, batch, _ = lines[0]
    assert order in lineage.orders_of_batch("USMF", item, batch, "consumed")


@FUZZ
@given(order=st.text(st.one_of(characters, awkward), max_size=600), company=short_text, status=sized_text(max_repeat=3000))
def test_an_order_number_and_a_status_of_any_text_keep_their_progress(stores, order, company, status):
    gate, events = stores[3], stores[2]
    order += uuid.uuid4().hex[:8]
    assert gate.advance(company, order, Step.START, 1).watermark == 1
    assert gate.read(company, order).watermark == 1 and gate.read(company, order).started
    assert events.apply_control_number(STATUS, company, order, 5, status)
    applied = events.applied(STATUS, company, order)
    assert (applied.control_number, applied.status) == (5, cut_text(status, STATUS_UNITS, "the order's event row"))
    assert not events.apply_control_number(STATUS, company, order, 4, status, since=applied)


@FUZZ
@given(event_id=st.text(st.one_of(characters, awkward), min_size=1, max_size=2000))
def test_an_event_id_of_any_text_is_recognised_on_the_guard_it_moved(stores, event_id):
    events = stores[2]
    order = "P" + uuid.uuid4().hex[:8]
    assert events.apply_control_number(RELEASE, "USMF", order, 5, "Released", event_id=event_id)
    applied = events.applied(RELEASE, "USMF", order)
    assert applied.brought_by(event_id) and not applied.brought_by(event_id + "x")


@settings(max_examples=60, deadline=None)
@given(infolog=sized_text(max_repeat=20000), message_id=st.text(st.one_of(characters, awkward), max_size=200))
def test_an_outcome_to_mes_stays_inside_a_service_bus_message_whatever_the_infolog(infolog, message_id):
    outcome = MessageOutcome(
        company="USMF",
        production_order=None,
        fo_event_id="E",
        fo_control_number=1,
        occurred_at=None,
        mes_message_id=message_id,
        outcome="rejected",
        fo_message_type="ProdProductionOrderStart",
        infolog=cut_text(infolog, 32 * 1024, "the MES message"),
    )
    message = envelope(outcome, f"outcome|USMF|{message_id}|rejected")
    assert len(message.body) <= 200 * 1024 and len(message.message_id) <= 128
    # Whole, but for a lone surrogate (not encodable in UTF-8), which becomes "?".
    expected = message_id.encode("utf-8", "replace").decode()
    assert json.loads(message.body)["mes_message_id"] == expected
