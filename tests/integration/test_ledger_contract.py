"""The ledger's contract, run against the Table Storage `Ledger` (Azurite) and the in-memory fake the
unit tests use (tests/fakes.py): the same cases, so the fake cannot drift from the real store. The
order's progress row shares the ledger's table and transaction, so both stores are built on one table."""

from dataclasses import dataclass
from datetime import timedelta

import pytest

from shared.inbound.order_gate import OrderGate, Step
from shared.store.ledger import (
    CompanionConflict,
    Ledger,
    LedgerEntry,
    LedgerStore,
    LostRace,
    State,
    content_index_row,
)
from shared.store.progress import TableProgressStore
from shared.store.tables import LEDGER_TABLE, table
from tests.fakes import InMemoryLedger, InMemoryProgress, InMemoryTable


@dataclass
class Stores:
    ledger: LedgerStore
    gate: OrderGate


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.integration)])
def stores(request) -> Stores:
    if request.param == "memory":
        rows = InMemoryTable()
        return Stores(InMemoryLedger(rows), OrderGate(InMemoryProgress(rows), gap_timeout_s=600))
    service, prefix = request.getfixturevalue("table_service"), request.getfixturevalue("table_prefix")
    client = table(service, prefix + LEDGER_TABLE)
    return Stores(Ledger(client), OrderGate(TableProgressStore(client), gap_timeout_s=600))


def entry(message_id="m-1", **changes) -> LedgerEntry:
    values = {
        "company": "USMF",
        "message_id": message_id,
        "state": State.FORWARDING,
        "flow": "material_consumed",
        "production_order": "P1",
        "sequence": 1,
        "attempts": 1,
    }
    values.update(changes)
    return LedgerEntry(**values)


def test_a_created_row_reads_back_with_its_history_its_payload_and_an_etag(stores):
    ledger = stores.ledger
    created = ledger.create(entry(correlation_id="c-1", extra={"Retries": 2}), payload=b'{"a": 1}')
    read = ledger.get("USMF", "m-1")
    assert read is not None and read.etag == created.etag and created.etag
    assert (read.state, read.flow, read.production_order, read.sequence, read.correlation_id, read.attempts) == (
        State.FORWARDING,
        "material_consumed",
        "P1",
        1,
        "c-1",
        1,
    )
    assert read.extra == {"Retries": 2} and read.received_at is not None and read.updated_at is not None
    assert [h["state"] for h in read.history] == ["Forwarding"]
    assert ledger.payload("USMF", "m-1") == b'{"a": 1}'
    assert ledger.get("USMF", "m-2") is None and ledger.payload("USMF", "m-2") is None
    assert ledger.get("usmf", "m-1") is None  # keys are case-sensitive, as Table Storage's are


def test_a_second_create_of_one_message_loses_the_race_and_writes_nothing(stores):
    ledger = stores.ledger
    ledger.create(entry(detail="first"), payload=b"first")
    with pytest.raises(LostRace):
        ledger.create(entry(detail="second"), payload=b"second")
    read = ledger.get("USMF", "m-1")
    assert read is not None and read.detail == "first" and ledger.payload("USMF", "m-1") == b"first"


def test_a_row_moves_only_from_the_version_that_was_read(stores):
    ledger = stores.ledger
    first = ledger.create(entry(), payload=b"original")
    moved = ledger.transition(first, State.WAITING, reason="transient", detail="F&O unavailable", extra={"Retries": 1})
    assert moved.etag != first.etag and moved.state is State.WAITING
    with pytest.raises(LostRace):
        ledger.transition(first, State.PARKED, reason="late")  # a stale ETag
    read = ledger.get("USMF", "m-1")
    assert read is not None and (read.state, read.reason, read.extra, read.etag) == (
        State.WAITING,
        "transient",
        {"Retries": 1},
        moved.etag,
    )
    assert [h["state"] for h in read.history] == ["Forwarding", "Waiting"]
    assert ledger.payload("USMF", "m-1") == b"original"  # kept when the move gives none
    ledger.transition(read, State.PARKED, reason="rejected", payload=b"resubmitted copy")
    assert ledger.payload("USMF", "m-1") == b"resubmitted copy"


def test_a_row_that_is_not_there_cannot_be_moved(stores):
    with pytest.raises(LostRace):
        stores.ledger.transition(entry(etag='W/"1"'), State.FORWARDED)


def test_what_a_move_leaves_empty_keeps_what_the_row_held(stores):
    # The row is merged: None writes nothing. A cleared lease stays in the row; the pipeline only
    # reads a lease on a Forwarding row, and every move into Forwarding writes a new one.
    ledger = stores.ledger
    claimed = ledger.create(entry(lease_until=None))
    leased = ledger.transition(claimed, State.FORWARDING, lease_until=claimed.updated_at + timedelta(minutes=5))
    parked = ledger.transition(leased, State.PARKED, reason="rejected", lease_until=None)
    assert parked.lease_until is None
    read = ledger.get("USMF", "m-1")
    assert read is not None and read.state is State.PARKED and read.lease_until == leased.lease_until


def test_the_progress_row_moves_with_the_ledger_row_or_neither_moves(stores):
    ledger, gate = stores.ledger, stores.gate
    claimed = ledger.create(entry())
    progress = gate.read("USMF", "P1")
    planned = gate.plan_advance(progress, Step.DURING, 1)
    assert planned is not None
    forwarded = ledger.transition(claimed, State.FORWARDED, companions=[planned])
    assert forwarded.state is State.FORWARDED and gate.read("USMF", "P1").watermark == 1


def test_a_companion_that_changed_since_it_was_read_is_a_conflict_and_nothing_is_written(stores):
    ledger, gate = stores.ledger, stores.gate
    claimed = ledger.create(entry(sequence=2))
    gate.advance("USMF", "P1", Step.DURING, 1)
    read = gate.read("USMF", "P1")
    gate.advance("USMF", "P1", Step.START, None)  # another flow moved the order meanwhile
    planned = gate.plan_advance(read, Step.DURING, 2)
    assert planned is not None
    with pytest.raises(CompanionConflict):
        ledger.transition(claimed, State.FORWARDED, companions=[planned])
    read_again = ledger.get("USMF", "m-1")
    assert read_again is not None and (read_again.state, read_again.etag) == (State.FORWARDING, claimed.etag)  # unchanged
    assert gate.read("USMF", "P1").watermark == 1
    ledger.transition(claimed, State.FORWARDED)


def test_a_companion_that_creates_a_row_another_worker_created_is_a_conflict(stores):
    ledger, gate = stores.ledger, stores.gate
    claimed = ledger.create(entry())
    never_read = gate.read("USMF", "P1")
    gate.advance("USMF", "P1", Step.START, None)
    planned = gate.plan_advance(never_read, Step.DURING, 1)
    assert planned is not None and planned[0] == "create"
    with pytest.raises(CompanionConflict):
        ledger.transition(claimed, State.FORWARDED, companions=[planned])
    assert gate.read("USMF", "P1").watermark == 0


def test_the_ledger_row_s_race_wins_over_a_companion_s(stores):
    ledger, gate = stores.ledger, stores.gate
    claimed = ledger.create(entry())
    ledger.transition(claimed, State.WAITING)
    stale = gate.read("USMF", "P1")
    gate.advance("USMF", "P1", Step.START, None)
    planned = gate.plan_advance(stale, Step.DURING, 1)
    with pytest.raises(LostRace):
        ledger.transition(claimed, State.FORWARDED, companions=[planned] if planned else None)


def test_the_content_index_finds_the_messages_oldest_first(stores):
    ledger = stores.ledger
    first = ledger.create(entry("m-1"))
    ledger.transition(first, State.FORWARDED, companions=[content_index_row("USMF", "h1", "m-1", "ProdProductionOrderStart")])
    ledger.write(content_index_row("USMF", "h1", "m-2", "ProdProductionOrderStart"))
    ledger.write(content_index_row("USMF", "h1", "m-2", "ProdProductionOrderStart"))  # an upsert: once
    ledger.write(content_index_row("USMF", "h10", "m-3", "ProdProductionOrderStart"))  # a hash with h1 as its prefix
    ledger.write(content_index_row("DEMF", "h1", "m-4", "ProdProductionOrderStart"))
    assert ledger.messages_with_content("USMF", "h1") == ["m-1", "m-2"]
    assert ledger.messages_with_content("USMF", "h2") == []
    with pytest.raises(ValueError):
        ledger.write(("create", content_index_row("USMF", "h9", "m-9", "x")[1], {}))


def test_a_query_matches_every_condition_and_returns_messages_only(stores):
    ledger, gate = stores.ledger, stores.gate
    ledger.create(entry("a", state=State.WAITING))
    ledger.create(entry("b", state=State.PARKED, flow="production_started"))
    ledger.create(entry("c", production_order="P2"))
    ledger.create(entry("d", company="DEMF"))
    gate.advance("USMF", "P1", Step.START, None)
    ledger.write(content_index_row("USMF", "h1", "a", "x"))

    def ids(**where) -> list[str]:
        return sorted(e.message_id for e in ledger.query(**where))

    assert ids() == ["a", "b", "c", "d"]
    assert ids(company="USMF", production_order="P1") == ["a", "b"]
    assert ids(state=State.PARKED) == ["b"]
    assert ids(flow="material_consumed", company="USMF") == ["a", "c"]
    assert ids(company="usmf") == []
    later = ledger.get("USMF", "c")
    assert later is not None and later.updated_at is not None
    moved = ledger.transition(later, State.FORWARDED)
    assert moved.updated_at is not None
    assert "c" in ids(updated_since=moved.updated_at)
    assert ids(updated_since=moved.updated_at + timedelta(seconds=1)) == []


def test_the_claim_and_the_orders_row_are_one_transaction(stores):
    ledger, gate = stores.ledger, stores.gate
    known = gate.read("USMF", "P1")
    claimed = ledger.create(entry("m-1"), companions=[gate.check(known)])
    assert len(claimed.companion_etags) == 1 and claimed.companion_etags[0]
    assert gate.read("USMF", "P1").etag == claimed.companion_etags[0]
    with pytest.raises(CompanionConflict):  # the row as `known` is gone: nothing of the claim is written
        ledger.create(entry("m-2", sequence=2), companions=[gate.check(known)])
    assert ledger.get("USMF", "m-2") is None


def test_the_wake_up_finds_the_orders_waiting_and_parked_messages_with_their_payloads(stores):
    ledger = stores.ledger
    ledger.create(entry("m-1", state=State.WAITING), payload=b"one")
    ledger.create(entry("m-2", state=State.PARKED, sequence=2), payload=b"two")
    ledger.create(entry("m-3", state=State.FORWARDED, sequence=3), payload=b"three")
    ledger.create(entry("m-4", state=State.WAITING, production_order="P2"), payload=b"four")
    ledger.create(entry("m-5", state=State.WAITING, company="DEMF"), payload=b"five")
    found = sorted((e.message_id, e.state, body) for e, body in ledger.waiting_or_parked("USMF", "P1"))
    assert found == [("m-1", State.WAITING, b"one"), ("m-2", State.PARKED, b"two")]


def test_a_message_leaves_and_rejoins_what_the_wake_up_finds_with_every_move(stores):
    ledger = stores.ledger
    waiting = ledger.create(entry("m-1", state=State.WAITING, sequence=3), payload=b"one")
    claimed = ledger.transition(waiting, State.FORWARDING)
    assert ledger.waiting_or_parked("USMF", "P1") == []
    parked = ledger.transition(claimed, State.PARKED, reason="in_doubt")
    assert [(e.message_id, e.state, body) for e, body in ledger.waiting_or_parked("USMF", "P1")] == [
        ("m-1", State.PARKED, b"one")
    ]
    two = ledger.create(entry("m-2", state=State.WAITING, sequence=4), payload=b"two")
    [first, second] = ledger.transition_together([(parked, State.FORWARDED, {}), (two, State.FORWARDING, {})])
    assert ledger.waiting_or_parked("USMF", "P1") == []
    ledger.transition_together([(second, State.WAITING, {"reason": "ordering"})])
    assert [e.message_id for e, _ in ledger.waiting_or_parked("USMF", "P1")] == ["m-2"]
    assert first.state is State.FORWARDED


def test_the_held_index_describes_each_held_row_as_the_row_says_and_only_chosen_rows_are_read(stores):
    ledger = stores.ledger
    gap = ledger.create(entry("m-1", state=State.WAITING, reason="ordering", sequence=5), payload=b"one")
    ledger.transition(gap, State.PARKED, reason="gap", extra={"Missing": 4, "Other": "not indexed"})
    ledger.create(
        entry("m-2", state=State.WAITING, reason="ordering", sequence=None, flow="output_reported", extra={"MergeRefused": "no"}),
        payload=b"two",
    )
    ledger.create(entry("m-3", state=State.FORWARDED, sequence=3), payload=b"three")
    described = {e.message_id: e for e in ledger.held_rows("USMF", "P1")}
    assert sorted(described) == ["m-1", "m-2"]
    one, two = described["m-1"], described["m-2"]
    assert (one.state, one.reason, one.flow, one.sequence, str(one.extra.get("Missing"))) == (
        State.PARKED,
        "gap",
        "material_consumed",
        5,
        "4",
    )
    assert (two.state, two.reason, two.flow, two.sequence, bool(two.extra.get("MergeRefused"))) == (
        State.WAITING,
        "ordering",
        "output_reported",
        None,
        True,
    )
    assert [(e.message_id, body) for e, body in ledger.read_held("USMF", [two])] == [("m-2", b"two")]
    # A chosen row that moved on since is left out.
    ledger.transition(ledger.get("USMF", "m-2"), State.FORWARDING)
    assert ledger.read_held("USMF", [two]) == []
