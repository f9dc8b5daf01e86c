import threading
from typing import Any

import pytest
from azure.data.tables import UpdateMode

from shared.ops import cli
from shared.store import tables
from shared.store.ledger import Ledger, LedgerEntry, LostRace, State, _to_entity, held_index_row
from shared.store.tables import table
from tests.fakes import InMemoryLineage, ports, unit_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(table_service, table_prefix):
    return Ledger(table(table_service, table_prefix + "Ledger"))


def entry(message_id="m-1", **changes):
    values = {"company": "USMF", "message_id": message_id, "state": State.FORWARDING, "flow": "material_consumed"}
    values.update(changes)
    return LedgerEntry(**values)


def test_eight_workers_racing_for_one_message_exactly_one_wins(ledger):
    barrier = threading.Barrier(8)
    winners, losers = [], []

    def race(n):
        barrier.wait()
        try:
            winners.append(ledger.create(entry("race-1", attempts=1, detail=f"worker {n}")))
        except LostRace:
            losers.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    stored = ledger.get("USMF", "race-1")
    assert stored is not None and stored.detail == winners[0].detail


def test_eight_workers_racing_to_move_one_row_exactly_one_wins(ledger):
    waiting = ledger.create(entry("race-2", state=State.WAITING))
    barrier = threading.Barrier(8)
    outcomes = []

    def race():
        barrier.wait()
        try:
            ledger.transition(waiting, State.FORWARDING)
            outcomes.append("won")
        except LostRace:
            outcomes.append("lost")

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1


def test_a_stale_etag_is_refused(ledger):
    first = ledger.create(entry("stale"))
    moved = ledger.transition(first, State.FORWARDED, reason="ok")
    with pytest.raises(LostRace):
        ledger.transition(first, State.PARKED, reason="late")
    assert ledger.get("USMF", "stale").state is State.FORWARDED
    ledger.transition(moved, State.PROCESSED)
    assert ledger.get("USMF", "stale").state is State.PROCESSED


@pytest.mark.parametrize(
    "message_id", ["a/b\\c#d?e", "tab\there", "quote'and\"double", "pct%2F", "ünïcødé-✓", "~empty", "x" * 900]
)
def test_keys_with_forbidden_characters_round_trip(ledger, message_id):
    ledger.create(entry(message_id, production_order="P0'01*"))
    stored = ledger.get("USMF", message_id)
    assert stored is not None
    assert stored.message_id == message_id and stored.production_order == "P0'01*"


def test_large_sequence_numbers_are_stored_as_int64(ledger):
    ledger.create(entry("seq", sequence=2**40 + 3))
    assert ledger.get("USMF", "seq").sequence == 2**40 + 3


def test_history_and_payload_are_kept(ledger):
    payload = b'{"big": "' + b"x" * 200_000 + b'"}'
    created = ledger.create(entry("hist", state=State.PARKED, reason="invalid", detail="bad"), payload=payload)
    ledger.transition(created, State.CANCELLED, reason="operator", detail="not needed")
    stored = ledger.get("USMF", "hist")
    assert [h["state"] for h in stored.history] == ["Parked", "Cancelled"]
    assert ledger.payload("USMF", "hist") == payload


def test_query_by_state_and_order_is_parameterised(ledger):
    ledger.create(entry("q1", state=State.PARKED, production_order="P1"))
    ledger.create(entry("q2", state=State.PARKED, production_order="P2"))
    ledger.create(entry("q3", state=State.FORWARDED, production_order="P1"))
    assert {e.message_id for e in ledger.query(state=State.PARKED)} == {"q1", "q2"}
    assert {e.message_id for e in ledger.query(production_order="P1")} == {"q1", "q3"}
    assert list(ledger.query(production_order="P1' or 'a' eq 'a")) == []


def test_rows_moved_together_move_all_or_none_and_the_first_changed_one_is_named(ledger):
    from shared.store.ledger import content_index_row

    rows = [ledger.create(entry(f"m-{n}", state=State.WAITING)) for n in range(3)]
    index = [content_index_row("USMF", "h" * 64, r.message_id, "ProdProductionOrderPickingList") for r in rows]
    # Somebody moves the second row meanwhile: nothing of the group is written, and it is named.
    ledger.transition(rows[1], State.WAITING, reason="ordering", detail="its own copy came back")
    moves = [(r, State.FORWARDING, {"detail": "taken along"}) for r in rows]
    with pytest.raises(LostRace) as lost:
        ledger.transition_together(moves, index)
    assert lost.value.args[1] == 1
    assert [ledger.get("USMF", r.message_id).state for r in rows] == [State.WAITING] * 3
    assert ledger.messages_with_content("USMF", "h" * 64) == []
    # Without it, the rest moves at once with the index rows.
    moved = ledger.transition_together([(rows[0], State.FORWARDING, {"detail": "taken along"})], index[:1])
    assert moved[0].state is State.FORWARDING and moved[0].etag != rows[0].etag
    assert ledger.get("USMF", "m-0").detail == "taken along"
    assert ledger.messages_with_content("USMF", "h" * 64) == ["m-0"]


def test_the_wake_up_reads_a_key_range_under_the_order_not_the_companys_partition(table_service, table_prefix):
    """Table Storage answers a filter on a property without a row key by reading the whole partition
    (every ledger row of the company); the wake-up names a key range, then the rows it needs."""
    client = table(table_service, table_prefix + "HeldIndex")
    ledger = Ledger(client)
    for n in range(30):
        ledger.create(LedgerEntry("USMF", f"done-{n}", State.FORWARDED, production_order="P9"))
    ledger.create(LedgerEntry("USMF", "held-1", State.WAITING, production_order="P1", sequence=2), payload=b"x")
    filters: list[str] = []
    real = client.query_entities

    def seen(query_filter: str, **options: Any) -> Any:
        filters.append(query_filter)
        return real(query_filter, **options)

    client.query_entities = seen  # type: ignore[method-assign]
    before = tables.TABLE_OPS.count
    assert [e.message_id for e, _ in ledger.waiting_or_parked("USMF", "P1")] == ["held-1"]
    assert filters == ["PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"]
    assert tables.TABLE_OPS.count - before == 2  # the range, then the one row it names


def test_the_held_index_alone_chooses_which_rows_to_read(table_service, table_prefix):
    """Ten messages of an order wait; the index describes them (one query), and only the one chosen
    is read. An index row written by an earlier version (without the description) is read instead."""
    client = table(table_service, table_prefix + "HeldChosen")
    ledger = Ledger(client)
    for n in range(10):
        ledger.create(LedgerEntry("USMF", f"w-{n}", State.WAITING, production_order="P1", sequence=10 + n), payload=b"x")
    before = tables.TABLE_OPS.count
    described = ledger.held_rows("USMF", "P1")
    assert sorted(e.sequence or 0 for e in described) == list(range(10, 20))
    assert tables.TABLE_OPS.count - before == 1
    chosen = [e for e in described if e.sequence == 10]
    assert [e.message_id for e, _ in ledger.read_held("USMF", chosen)] == ["w-0"]
    assert tables.TABLE_OPS.count - before == 2
    # An index row as an earlier version wrote it: the row is read to know what it is.
    ledger.create(LedgerEntry("USMF", "old", State.WAITING, production_order="P2", sequence=3), payload=b"y")
    bare = held_index_row(LedgerEntry("USMF", "old", State.WAITING, production_order="P2"))[1]
    client.upsert_entity(
        {k: bare[k] for k in ("PartitionKey", "RowKey", "ProductionOrder", "MessageId", "Held")}, mode=UpdateMode.REPLACE
    )
    before = tables.TABLE_OPS.count
    [old] = ledger.held_rows("USMF", "P2")
    assert (old.message_id, old.sequence, old.etag != "") == ("old", 3, True)
    assert tables.TABLE_OPS.count - before == 2  # the range, and the row the bare index row names


def test_upgrade_indexes_the_held_messages_an_earlier_version_left(azurite, table_service, table_prefix):
    client = table(table_service, table_prefix + "Ledger")
    ledger = Ledger(client)
    # A waiting row as an earlier version wrote it: no index row beside it.
    client.create_entity(_to_entity(LedgerEntry("USMF", "old-1", State.WAITING, production_order="P1", sequence=2)))
    assert ledger.waiting_or_parked("USMF", "P1") == []
    settings = unit_settings(TABLES_CONNECTION_STRING=azurite.connection_string, TABLES_PREFIX=table_prefix)
    answer = cli.upgrade(ports(settings=settings, lineage=InMemoryLineage()))
    assert answer == {"moved_edges": 0, "indexed_held_messages": 1}
    assert [e.message_id for e, _ in ledger.waiting_or_parked("USMF", "P1")] == ["old-1"]


@pytest.mark.parametrize("message_id", [",starts-with-a-comma", "quote',comma", ",", "a,b"])
def test_a_message_id_azurite_misreads_in_a_transaction_still_moves(ledger, message_id):
    """Azurite answers ResourceNotFound for a row addressed in a transaction whose key starts with
    "," or holds "',": `safe_key` encodes such a comma, so the held index's transactions work."""
    created = ledger.create(entry(message_id, production_order="P1"))
    parked = ledger.transition(created, State.PARKED, reason="in_doubt")  # with its held index row
    assert [e.message_id for e, _ in ledger.waiting_or_parked("USMF", "P1")] == [message_id]
    ledger.transition(parked, State.FORWARDED)
    assert ledger.waiting_or_parked("USMF", "P1") == []
