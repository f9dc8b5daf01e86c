"""Lineage queries against Azurite: correct trees, depth limits, cycles; a generated month measured."""

import pytest

from devtools import mes
from devtools.lineage_bench import generate_year, run
from shared.inbound import mapping
from shared.inbound.messages import InventoryMoved
from shared.store.lineage import BatchRef, Edge, Lineage, move_legacy
from shared.store.tables import table

pytestmark = pytest.mark.integration


@pytest.fixture
def lineage(table_service, table_prefix):
    return Lineage(table(table_service, table_prefix + "Lineage"))


def edge(order, direction, item, batch, quantity=1.0):
    return Edge("USMF", order, direction, item, batch, quantity, f"{order}-{direction}-{batch}")


def test_upstream_and_downstream_follow_several_levels_and_stop_at_the_depth(lineage):
    lineage.record(
        [
            edge("P1", "consumed", "RM-1", "R1", 2.0),
            edge("P1", "produced", "SUB-1", "S1"),
            edge("P2", "consumed", "SUB-1", "S1", 1.0),
            edge("P2", "consumed", "RM-2", "R2", 3.0),
            edge("P2", "produced", "FG-1", "F1"),
        ]
    )
    up = lineage.upstream("USMF", "FG-1", "F1", depth=5)
    [p2] = up["orders"]
    assert p2["order"] == "P2"
    assert {(c["item"], c["batch"], c["quantity"]) for c in p2["consumed"]} == {("SUB-1", "S1", 1.0), ("RM-2", "R2", 3.0)}
    sub = next(c for c in p2["consumed"] if c["batch"] == "S1")
    assert sub["orders"][0]["order"] == "P1" and sub["orders"][0]["consumed"][0]["batch"] == "R1"
    shallow = lineage.upstream("USMF", "FG-1", "F1", depth=1)
    assert shallow["orders"][0]["consumed"][0]["truncated"] is True
    down = lineage.downstream("USMF", "RM-1", "R1")
    assert down["orders"][0]["produced"][0]["orders"][0]["produced"][0]["batch"] == "F1"


def test_a_redelivered_message_does_not_double_a_quantity(lineage):
    lineage.record([edge("P1", "consumed", "RM-1", "R1", 2.0)])
    lineage.record([edge("P1", "consumed", "RM-1", "R1", 2.0)])
    assert lineage.upstream("USMF", "RM-1", "R1")["orders"] == []
    [(_ref, quantity)] = lineage.batches_of_order("USMF", "P1", "consumed").items()
    assert quantity == 2.0


def test_a_cycle_in_the_data_ends(lineage):
    lineage.record([edge("P1", "consumed", "X", "B1"), edge("P1", "produced", "X", "B1")])
    tree = lineage.upstream("USMF", "X", "B1", depth=10)
    assert tree["orders"][0]["consumed"][0]["orders"] == []  # seen before: not walked again


def moved(journal, item, batch, source, target, to_batch=None, quantity=5.0):
    body = {"item_number": item, "batch_number": batch, "quantity": quantity}
    body |= {"from_site": "1", "from_warehouse": source, "to_site": "1", "to_warehouse": target}
    if to_batch:
        body["to_batch_number"] = to_batch
    document = mes.event("inventory_moved", None, body, message_id=journal)
    return mapping.transferred_edges(InventoryMoved.model_validate(document))


def test_a_batch_moved_to_another_warehouse_is_still_found_downstream_and_upstream(lineage):
    lineage.record([edge("P1", "produced", "SUB-1", "S1", 10.0)])
    lineage.record(moved("move-1", "SUB-1", "S1", "11", "12"))
    lineage.record(moved("move-1", "SUB-1", "S1", "11", "12"))  # a redelivery writes the same rows
    lineage.record([edge("P2", "consumed", "SUB-1", "S1", 4.0), edge("P2", "produced", "FG-1", "F1")])
    journal = mapping.transfer_journal_number("USMF", "move-1")

    down = lineage.downstream("USMF", "SUB-1", "S1")
    assert [o["order"] for o in down["orders"]] == ["P2"]  # the order that used it in warehouse 12
    assert down["orders"][0]["produced"][0]["batch"] == "F1"
    [transfer] = down["transfers"]
    assert (transfer["transfer"], transfer["from_warehouse"], transfer["to_warehouse"]) == (journal, "11", "12")
    [there] = transfer["produced"]
    assert (there["batch"], there["warehouse"], there["quantity"]) == ("S1", "12", 5.0)
    # Transfers are not production orders: the order-level questions are unchanged.
    assert lineage.orders_of_batch("USMF", "SUB-1", "S1", "consumed") == {"P2"}
    assert lineage.upstream("USMF", "FG-1", "F1")["orders"][0]["consumed"][0]["orders"][0]["order"] == "P1"


def test_a_batch_to_batch_transfer_links_the_old_batch_and_the_new(lineage):
    lineage.record([edge("P1", "consumed", "RM-1", "R1", 2.0), edge("P1", "produced", "SUB-1", "S1", 10.0)])
    lineage.record(moved("rebatch-1", "SUB-1", "S1", "11", "11", to_batch="S2", quantity=3.0))
    lineage.record([edge("P2", "consumed", "SUB-1", "S2", 3.0), edge("P2", "produced", "FG-1", "F1")])
    down = lineage.downstream("USMF", "SUB-1", "S1")
    [new] = down["transfers"][0]["produced"]
    assert (new["batch"], new["quantity"]) == ("S2", 3.0)
    assert new["orders"][0]["order"] == "P2" and new["orders"][0]["produced"][0]["batch"] == "F1"
    up = lineage.upstream("USMF", "FG-1", "F1")
    s2 = up["orders"][0]["consumed"][0]
    old = s2["transfers"][0]["consumed"][0]
    assert old["batch"] == "S1" and old["orders"][0]["order"] == "P1"
    assert old["orders"][0]["consumed"][0]["batch"] == "R1"


def test_a_move_without_a_batch_is_no_genealogy(lineage):
    document = mes.event(
        "inventory_moved",
        None,
        {"item_number": "RM-1", "quantity": 1.0, "from_site": "1", "from_warehouse": "11", "to_site": "1", "to_warehouse": "12"},
    )
    assert mapping.transferred_edges(InventoryMoved.model_validate(document)) == []


def expected_tree(edges, ref, depth, link, follow, seen=frozenset()):
    """The tree a lineage query must give, walked over the generated edges in memory: the same shape,
    depth limit and "seen before: not walked again" rule, none of the storage."""
    node = {"item": ref[0], "batch": ref[1], "orders": []}
    if depth <= 0 or ref in seen:
        node["truncated"] = depth <= 0
        return node
    seen = seen | {ref}
    for order in sorted({e.order for e in edges if e.direction == link and (e.item, e.batch) == ref}):
        quantities: dict[tuple[str, str], float] = {}
        for e in edges:
            if e.order == order and e.direction == follow:
                quantities[(e.item, e.batch)] = quantities.get((e.item, e.batch), 0.0) + e.quantity
        children = [
            {**expected_tree(edges, child, depth - 1, link, follow, seen), "quantity": quantity}
            for child, quantity in sorted(quantities.items())
        ]
        node["orders"].append({"order": order, follow: children})
    return node


def test_a_generated_month_of_production_is_answered_and_measured(azurite, capsys):
    edges, finished, raw = generate_year(30, 4, seed=3)
    assert len(finished) == 120 and raw
    measured = run(30, 4, samples=5, seed=3, connection_string=azurite.connection_string)
    with capsys.disabled():
        print("\n" + measured.report)
    assert [a.direction for a in measured.answers] == ["upstream"] * 5 + ["downstream"] * 5
    for answer in measured.answers:
        link, follow = ("produced", "consumed") if answer.direction == "upstream" else ("consumed", "produced")
        expected = expected_tree(edges, answer.ref, answer.depth, link, follow)
        assert answer.tree == expected, (answer.direction, answer.ref)
    # Not vacuous: every finished batch has an order with at least three inputs, and raw batches went somewhere.
    assert all(len(a.tree["orders"][0]["consumed"]) >= 3 for a in measured.answers if a.direction == "upstream")
    assert any(a.tree["orders"] for a in measured.answers if a.direction == "downstream")


def test_one_message_naming_the_same_batch_twice_is_one_edge_with_the_summed_quantity(lineage):
    twice = [edge("P1", "consumed", "RM-1", "R1", 1.0), edge("P1", "consumed", "RM-1", "R1", 2.5)]
    lineage.record(twice)
    lineage.record(twice)  # and recording it again (a settlement after a crash) changes nothing
    assert lineage.batches_of_order("USMF", "P1", "consumed") == {BatchRef("RM-1", "R1"): 3.5}
    assert lineage.orders_of_batch("USMF", "RM-1", "R1", "consumed") == {"P1"}


def test_genealogy_of_the_former_lineage_table_moves_into_the_ledger_table(table_service, table_prefix, lineage):
    """Rows as the version with a Lineage table of its own wrote them (one under the order or transfer,
    one under the batch): `upgrade` writes each edge once where it is kept now, twice is harmless."""
    old = table(table_service, table_prefix + "FormerLineage")
    written = [
        ("order|USMF|P1", "consumed|RM-1|R1|m1", "production", "P1", "consumed", "RM-1", "R1", 2.5, "m1", ""),
        ("batch|USMF|RM-1|R1", "consumed|P1|m1", "production", "P1", "consumed", "RM-1", "R1", 2.5, "m1", ""),
        ("order|USMF|P1", "produced|FG-1|F1|m2", "production", "P1", "produced", "FG-1", "F1", 1.0, "m2", ""),
        ("batch|USMF|FG-1|F1", "produced|P1|m2", "production", "P1", "produced", "FG-1", "F1", 1.0, "m2", ""),
        ("transfer|USMF|TJ1", "consumed|FG-1|F1|m3", "transfer", "TJ1", "consumed", "FG-1", "F1", 1.0, "m3", "WH1"),
        ("transfer|USMF|TJ1", "produced|FG-1|F2|m3", "transfer", "TJ1", "produced", "FG-1", "F2", 1.0, "m3", "WH2"),
    ]
    for pk, rk, kind, node, direction, item, batch, quantity, message, warehouse in written:
        old.upsert_entity(
            {
                "PartitionKey": pk,
                "RowKey": rk,
                "Company": "USMF",
                "ProductionOrder": node,
                "Direction": direction,
                "ItemNumber": item,
                "BatchNumber": batch,
                "Quantity": quantity,
                "MessageId": message,
                "Kind": kind,
                "Warehouse": warehouse,
            }
        )
    assert move_legacy(old, lineage) == 4
    assert move_legacy(old, lineage) == 4  # again: the same rows, nothing doubled
    down = lineage.downstream("USMF", "RM-1", "R1", depth=3)
    [p1] = down["orders"]
    assert p1["order"] == "P1" and [(c["batch"], c["quantity"]) for c in p1["produced"]] == [("F1", 1.0)]
    [moved] = p1["produced"][0]["transfers"]
    assert (moved["transfer"], moved["from_warehouse"], moved["to_warehouse"]) == ("TJ1", "WH1", "WH2")
    assert lineage.batches_of_order("USMF", "P1", "consumed") == {BatchRef("RM-1", "R1"): 2.5}
    missing = table_service.get_table_client(table_prefix + "NeverWritten")
    assert move_legacy(missing, lineage) == 0
