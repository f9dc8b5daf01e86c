"""An early message's first waits kept on the queue only (`settlement.look_again_unrecorded`): copies
after half a second, doubling, `GATE_UNRECORDED_WAIT_S` in all, and no ledger row; still early after
that, the wait is written as any other and the watermark move wakes it."""

from __future__ import annotations

from shared.errors import Transient
from shared.fo.production_order import HEADERS
from shared.inbound.attempt import Outcome
from shared.inbound.servicebus import ATTEMPT, UNRECORDED
from shared.store.ledger import State
from tests.fakes import FakeBridge, Scheduled, fake_bridge
from tests.unit.test_pipeline import ORDER, again, deliver, message, row, start


def bridge(**settings: str) -> FakeBridge:
    released = {HEADERS: [{"dataAreaId": "usmf", "ProductionOrderNumber": ORDER, "ProductionOrderStatus": "Released"}]}
    return fake_bridge(fo_rows=released, **{"GATE_UNRECORDED_WAIT_S": "4", **settings})


def consumption(sequence: int | None, message_id: str | None = None) -> bytes:
    return message("material_consumed", message_id or f"m-{sequence}", sequence=sequence)


def last_copy(fakes: FakeBridge, message_id: str) -> Scheduled:
    return next(c for c in reversed(fakes.requeue.scheduled) if c.message_id.startswith(f"{message_id}|"))


def test_an_early_message_waits_on_the_queue_without_a_row_and_goes_when_its_predecessor_came():
    fakes = bridge()
    start(fakes)
    result = deliver(fakes, "material_consumed", consumption(3))
    assert result.outcome is Outcome.WAITING and result.detail.endswith("looks again in 0.5 s (not recorded)")
    assert fakes.ledger.get("USMF", "m-3") is None
    [copy] = fakes.requeue.scheduled
    assert (copy.message_id, copy.delay_s, copy.properties.get(UNRECORDED)) == ("m-3|early-0.5", 0.5, 0.5)
    assert ATTEMPT not in copy.properties  # admitted as the MES's own message: its row is written now
    assert not fakes.gate.read("USMF", ORDER).waiting_for  # nothing noted on the order's row either
    assert deliver(fakes, "material_consumed", consumption(2)).outcome is Outcome.FORWARDED
    assert fakes.requeue.scheduled == [copy]  # nothing to wake
    assert again(fakes, copy).outcome is Outcome.FORWARDED
    assert (row(fakes, "m-3").state, row(fakes, "m-3").attempts) == (State.FORWARDED, 1)
    assert [c.body["content"].get("PickingListLines") is not None for c in fakes.fo.applied[1:]] == [True, True]
    assert fakes.gate.read("USMF", ORDER).watermark == 3


def test_still_early_after_the_unrecorded_waits_it_waits_in_the_ledger_and_is_woken():
    fakes = bridge()
    start(fakes)
    result = deliver(fakes, "material_consumed", consumption(3))
    delays = []
    while fakes.ledger.get("USMF", "m-3") is None:
        copy = last_copy(fakes, "m-3")
        delays.append(copy.delay_s)
        result = again(fakes, copy)
    assert delays == [0.5, 0.5, 1.0, 2.0]  # each as long as all before it, 4 s in all
    assert result.outcome is Outcome.WAITING and not result.detail.endswith("(not recorded)")
    assert row(fakes, "m-3").state is State.WAITING and ATTEMPT in last_copy(fakes, "m-3").properties
    # Its predecessor of another flow (one of the same flow would take it along in one F&O message).
    assert deliver(fakes, "output_reported", message("output_reported", "o-2", sequence=2)).outcome is Outcome.FORWARDED
    woken = last_copy(fakes, "m-3")
    assert woken.message_id.startswith("m-3|wake-") and woken.delay_s == 0
    assert again(fakes, woken).outcome is Outcome.FORWARDED


def test_a_repeat_of_the_same_wait_after_a_crash_has_the_same_broker_id():
    fakes = bridge()
    start(fakes)
    deliver(fakes, "material_consumed", consumption(3))
    deliver(fakes, "material_consumed", consumption(3))  # the broker's redelivery: its completion was lost
    first, second = fakes.requeue.scheduled
    assert first.message_id == second.message_id  # duplicate detection drops the second


def test_a_message_without_a_sequence_number_writes_its_wait_at_once():
    fakes = bridge()
    result = deliver(fakes, "material_consumed", consumption(None, "m-1"))
    assert result.outcome is Outcome.WAITING and row(fakes, "m-1").state is State.WAITING


def test_with_no_unrecorded_wait_every_wait_is_written():
    fakes = bridge(GATE_UNRECORDED_WAIT_S="0")
    start(fakes)
    assert deliver(fakes, "material_consumed", consumption(3)).outcome is Outcome.WAITING
    assert row(fakes, "m-3").state is State.WAITING


def test_the_successors_of_a_message_that_stepped_aside_wait_in_the_ledger_to_be_taken_along():
    fakes = bridge()
    fakes.fo.budget_wait = 2.0  # F&O's budget is spent: a send gives its turn back to its successors
    start(fakes)
    assert deliver(fakes, "material_consumed", consumption(2)).outcome is Outcome.WAITING
    aside = last_copy(fakes, "m-2")
    for sequence in (3, 4):
        result = deliver(fakes, "material_consumed", consumption(sequence))
        assert result.outcome is Outcome.WAITING and row(fakes, f"m-{sequence}").state is State.WAITING
    assert again(fakes, aside).outcome is Outcome.FORWARDED
    [picking] = [c for c in fakes.fo.calls if c.what == "ProdProductionOrderPickingList"]
    assert row(fakes, "m-4").extra["FoMessage"]["Members"] == ["m-2", "m-3", "m-4"]
    assert len(picking.body["content"]["PickingListLines"]) == 6


def test_a_successor_of_another_flow_behind_a_message_that_stepped_aside_waits_on_the_queue():
    fakes = bridge()
    fakes.fo.budget_wait = 2.0
    start(fakes)
    assert deliver(fakes, "material_consumed", consumption(2)).outcome is Outcome.WAITING  # stepped aside
    result = deliver(fakes, "output_reported", message("output_reported", "o-3", sequence=3))
    # It could not go in the consumption's F&O message anyway.
    assert result.outcome is Outcome.WAITING and result.detail.endswith("(not recorded)")
    assert fakes.ledger.get("USMF", "o-3") is None


def test_the_successors_of_a_message_waiting_out_an_outage_wait_in_the_ledger_and_go_with_it():
    fakes = bridge()
    start(fakes)
    fakes.fo.answer(Transient("F&O unavailable (HTTP 503)"))
    assert deliver(fakes, "material_consumed", consumption(2)).outcome is Outcome.RETRYING
    retry = last_copy(fakes, "m-2")
    assert deliver(fakes, "material_consumed", consumption(3)).outcome is Outcome.WAITING
    assert row(fakes, "m-3").state is State.WAITING
    assert again(fakes, retry).outcome is Outcome.FORWARDED
    assert row(fakes, "m-3").extra["FoMessage"]["Members"] == ["m-2", "m-3"]
