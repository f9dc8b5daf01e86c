"""Lineage queries against Azurite: correct trees, depth limits, cycles; a generated month measured."""

import pytest

from devtools.lineage_bench import generate_year, run
from shared.lineage import BatchRef, Edge, Lineage
from shared.tables import table

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


def test_a_generated_month_of_production_is_answered_and_measured(azurite, capsys):
    _edges, finished, raw = generate_year(30, 4, seed=3)
    assert len(finished) == 120 and raw
    report = run(30, 4, samples=5, seed=3, connection_string=azurite.connection_string)
    with capsys.disabled():
        print("\n" + report)
    assert "upstream" in report and "downstream" in report


def test_one_message_naming_the_same_batch_twice_is_one_edge_with_the_summed_quantity(lineage):
    twice = [edge("P1", "consumed", "RM-1", "R1", 1.0), edge("P1", "consumed", "RM-1", "R1", 2.5)]
    lineage.record(twice)
    lineage.record(twice)  # and recording it again (a settlement after a crash) changes nothing
    assert lineage.batches_of_order("USMF", "P1", "consumed") == {BatchRef("RM-1", "R1"): 3.5}
    assert lineage.orders_of_batch("USMF", "RM-1", "R1", "consumed") == {"P1"}
