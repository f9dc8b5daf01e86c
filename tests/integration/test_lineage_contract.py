"""The genealogy's contract, run against the Table Storage `Lineage` (Azurite) and the in-memory fake
(tests/fakes.py): the same edges give the same answers and the same trees in both."""

import pytest

from shared.store.lineage import BatchRef, Edge, Lineage, LineageStore
from shared.store.tables import LEDGER_TABLE, table
from tests.fakes import InMemoryLineage


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.integration)])
def lineage(request) -> LineageStore:
    if request.param == "memory":
        return InMemoryLineage()
    service, prefix = request.getfixturevalue("table_service"), request.getfixturevalue("table_prefix")
    return Lineage(table(service, prefix + LEDGER_TABLE))


def edge(order, direction, item, batch, quantity, message_id, **more):
    return Edge("usmf", order, direction, item, batch, quantity, message_id, **more)


SHIFT = [
    # P1 consumed two raw batches (one named on two lines of one message) and produced FG batch F1.
    edge("P1", "consumed", "RM-1", "R1", 2.0, "m1"),
    edge("P1", "consumed", "RM-1", "R1", 1.5, "m1"),
    edge("P1", "consumed", "RM-2", "R2", 4.0, "m2"),
    edge("P1", "produced", "FG-1", "F1", 10.0, "m3"),
    # F1 was moved and re-batched as F1b in another warehouse, then consumed by P2, which produced F2.
    edge("T1", "consumed", "FG-1", "F1", 10.0, "m4", kind="transfer", warehouse="WH-A"),
    edge("T1", "produced", "FG-1", "F1b", 10.0, "m4", kind="transfer", warehouse="WH-B"),
    edge("P2", "consumed", "FG-1", "F1b", 6.0, "m5"),
    edge("P2", "produced", "FG-2", "F2", 3.0, "m6"),
]


def test_what_an_order_consumed_and_produced_summed_per_batch(lineage):
    lineage.record(SHIFT)
    assert lineage.batches_of_order("USMF", "P1", "consumed") == {BatchRef("RM-1", "R1"): 3.5, BatchRef("RM-2", "R2"): 4.0}
    assert lineage.batches_of_order("usmf", "P1", "produced") == {BatchRef("FG-1", "F1"): 10.0}
    assert lineage.orders_of_batch("USMF", "RM-1", "R1", "consumed") == {"P1"}
    assert lineage.orders_of_batch("USMF", "FG-1", "F1", "consumed") == set()  # a transfer is not a production order
    assert lineage.batches_of_order("USMF", "P9", "consumed") == {}


def test_a_redelivered_message_is_recorded_once(lineage):
    lineage.record(SHIFT)
    lineage.record(SHIFT[:2])
    assert lineage.batches_of_order("USMF", "P1", "consumed")[BatchRef("RM-1", "R1")] == 3.5


def test_the_trees_through_a_transfer(lineage):
    lineage.record(SHIFT)
    down = lineage.downstream("USMF", "RM-1", "R1")
    [p1] = down["orders"]
    [f1] = p1["produced"]
    [t1] = f1["transfers"]
    assert (t1["transfer"], t1["from_warehouse"], t1["to_warehouse"]) == ("T1", "WH-A", "WH-B")
    [f1b] = t1["produced"]
    assert (f1b["batch"], f1b["quantity"], f1b["warehouse"]) == ("F1b", 10.0, "WH-B")
    assert [o["order"] for o in f1b["orders"]] == ["P2"]
    up = lineage.upstream("USMF", "FG-2", "F2")
    [p2] = up["orders"]
    [consumed] = p2["consumed"]
    assert consumed["batch"] == "F1b" and consumed["transfers"][0]["consumed"][0]["batch"] == "F1"
    assert lineage.upstream("USMF", "FG-2", "F2", depth=1)["orders"][0]["consumed"][0]["truncated"] is True


@pytest.mark.integration
def test_the_fake_and_the_table_give_the_same_trees(table_service, table_prefix):
    real, fake = Lineage(table(table_service, table_prefix + "LineageTwin")), InMemoryLineage()
    for store in (real, fake):
        store.record(SHIFT)
    for item, batch in [("RM-1", "R1"), ("RM-2", "R2"), ("FG-1", "F1"), ("FG-1", "F1b"), ("FG-2", "F2")]:
        assert fake.downstream("USMF", item, batch) == real.downstream("USMF", item, batch)
        assert fake.upstream("USMF", item, batch) == real.upstream("USMF", item, batch)
