"""An operator's decision on an in-doubt message covers the F&O message it travelled in (issue 20,
items 3 and 4): F&O holds the merged message or not, so confirming or resubmitting one member acts
on every member still in doubt under it, in MES sequence. Over the fakes of tests/fakes.py, through
the pipeline's one entry point, as tests/unit/test_pipeline.py does."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import InDoubt
from shared.fo.production_order import HEADERS
from shared.inbound.attempt import Outcome
from shared.inbound.servicebus import RESUBMIT
from shared.ops import operations
from shared.reasons import ParkReason
from shared.store.ledger import State
from tests.fakes import FakeBridge, Scheduled, fake_bridge
from tests.unit.test_pipeline import ORDER, again, deliver, held_consumptions, message, row, start, woken


@pytest.fixture
def bridge() -> FakeBridge:
    return fake_bridge(
        fo_rows={HEADERS: [{"dataAreaId": "usmf", "ProductionOrderNumber": ORDER, "ProductionOrderStatus": "Released"}]}
    )


def merged_in_doubt(bridge: FakeBridge, *sequences: int) -> list[str]:
    """Consumptions the gate held, sent as one F&O message that got no answer: all parked in doubt."""
    ids = held_consumptions(bridge, *sequences)
    start(bridge)
    bridge.fo.answer(InDoubt("no answer from F&O after sending (ReadTimeout)"))
    assert woken(bridge, ids[0]).reason == ParkReason.IN_DOUBT
    for message_id in ids:
        entry = row(bridge, message_id)
        assert (entry.state, entry.reason) == (State.PARKED, ParkReason.IN_DOUBT)
        assert entry.extra["FoMessage"]["Members"] == ids
    return ids


def confirm(bridge: FakeBridge, message_id: str, *, alone: bool = False) -> dict[str, Any]:
    ports = bridge.ports
    return operations.confirm_applied(
        ports.ledger, ports.gate, ports.lineage, ports.requeue, "USMF", message_id, "Message processor messages: 12", alone=alone
    )


def consumed_items(bridge: FakeBridge) -> set[str]:
    return {ref.item for ref in bridge.lineage.batches_of_order("USMF", ORDER, "consumed")}


def resubmitted_copies(bridge: FakeBridge, before: int) -> list[Scheduled]:
    return [c for c in bridge.requeue.scheduled[before:] if RESUBMIT in c.properties]


# --- confirm ----------------------------------------------------------------------------------------


def test_confirming_one_member_confirms_every_member_with_its_genealogy_and_moves_the_watermark_past_the_last(bridge):
    ids = merged_in_doubt(bridge, 2, 3, 4)
    assert consumed_items(bridge) == set()
    # The operator found the merged message in F&O; they act on the member the console named (any of them).
    answer = confirm(bridge, "m-3")
    assert [a["message_id"] for a in answer["acted_on"]] == ids and answer["left_alone"] == []
    assert answer["message_id"] == "m-3" and answer["state"] == "Forwarded"
    for message_id in ids:
        entry = row(bridge, message_id)
        assert entry.state is State.FORWARDED and entry.detail.startswith("confirmed in F&O by operator")
    assert bridge.gate.read("USMF", ORDER).watermark == 4
    assert consumed_items(bridge) == {"RM-0001", "RM-0007"}
    # The order resumes: the next message goes to F&O at once.
    assert deliver(bridge, "material_consumed", message("material_consumed", "m-5", sequence=5)).outcome is Outcome.FORWARDED


def test_confirming_one_member_alone_leaves_its_siblings_in_doubt(bridge):
    merged_in_doubt(bridge, 2, 3, 4)
    answer = confirm(bridge, "m-2", alone=True)
    assert [a["message_id"] for a in answer["acted_on"]] == ["m-2"]
    assert row(bridge, "m-2").state is State.FORWARDED
    assert [row(bridge, m).reason for m in ("m-3", "m-4")] == [ParkReason.IN_DOUBT] * 2
    assert bridge.gate.read("USMF", ORDER).watermark == 2


def test_a_member_settled_already_is_left_alone_and_the_answer_says_so(bridge):
    merged_in_doubt(bridge, 2, 3, 4)
    confirm(bridge, "m-4", alone=True)
    settled = row(bridge, "m-4")
    answer = confirm(bridge, "m-2")
    assert [a["message_id"] for a in answer["acted_on"]] == ["m-2", "m-3"]
    [left] = answer["left_alone"]
    assert (left["message_id"], left["state"], left["why"]) == ("m-4", "Forwarded", "settled already")
    assert row(bridge, "m-4") == settled  # not touched again
    assert bridge.gate.read("USMF", ORDER).watermark == 4


def test_a_message_that_went_alone_is_confirmed_alone_as_before(bridge):
    start(bridge)
    bridge.fo.answer(InDoubt("no answer from F&O after sending (ReadTimeout)"))
    assert deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2)).reason == ParkReason.IN_DOUBT
    deliver(bridge, "material_consumed", message("material_consumed", "m-3", sequence=3))
    answer = confirm(bridge, "m-2")
    assert [a["message_id"] for a in answer["acted_on"]] == ["m-2"] and answer["left_alone"] == []
    assert row(bridge, "m-2").state is State.FORWARDED and answer["fo_message"] is None
    assert bridge.gate.read("USMF", ORDER).watermark == 2


# --- resubmit ---------------------------------------------------------------------------------------


def test_resubmitting_one_member_sends_every_member_again_in_sequence_each_admitted_once(bridge):
    ids = merged_in_doubt(bridge, 2, 3, 4)
    before, sent_before = len(bridge.requeue.scheduled), len(bridge.fo.applied)
    done = operations.resubmit(bridge.ledger, bridge.requeue, "USMF", "m-4", note="not in F&O")
    answer = operations.resubmission_reply(done)
    assert [a["message_id"] for a in answer["acted_on"]] == ids and answer["message_id"] == "m-4"
    copies = resubmitted_copies(bridge, before)
    assert [c.message_id.split("|")[0] for c in copies] == ids  # in MES sequence, on the order's session
    assert {c.session_id for c in copies} == {ORDER}
    # The broker delivers them in order, and each copy again (a redelivery): each is admitted once.
    for copy in copies:
        assert again(bridge, copy).outcome is Outcome.FORWARDED
        assert again(bridge, copy).outcome is Outcome.DUPLICATE
    for message_id in ids:
        entry = row(bridge, message_id)
        assert entry.state is State.FORWARDED and "ResubmitToken" not in entry.extra
        assert entry.extra["EarlierFoMessage"]["Members"] == ids
    resent = bridge.fo.applied[sent_before:]
    assert [len(c.body["content"]["PickingListLines"]) for c in resent] == [2, 2, 2]
    assert bridge.gate.read("USMF", ORDER).watermark == 4


def test_resubmitted_members_that_arrive_out_of_order_wait_for_the_first_and_may_merge_again(bridge):
    ids = merged_in_doubt(bridge, 2, 3, 4)
    before, sent_before = len(bridge.requeue.scheduled), len(bridge.fo.applied)
    operations.resubmit(bridge.ledger, bridge.requeue, "USMF", "m-2")
    first, *later = resubmitted_copies(bridge, before)
    for copy in later:
        assert again(bridge, copy).outcome is Outcome.WAITING  # the gate holds them behind m-2
    assert again(bridge, first).outcome is Outcome.FORWARDED
    [resent] = bridge.fo.applied[sent_before:]
    assert len(resent.body["content"]["PickingListLines"]) == 6  # merged again: one F&O message for the three
    assert [row(bridge, m).state for m in ids] == [State.FORWARDED] * 3
    # Every copy delivered again (the resubmitted ones, their look-again copies) finds them forwarded.
    for copy in bridge.requeue.scheduled[before:]:
        assert again(bridge, copy).outcome is Outcome.DUPLICATE
    assert len(bridge.fo.applied) == sent_before + 1


def test_resubmitting_one_member_alone_leaves_its_siblings_in_doubt(bridge):
    merged_in_doubt(bridge, 2, 3, 4)
    before = len(bridge.requeue.scheduled)
    answer = operations.resubmission_reply(operations.resubmit(bridge.ledger, bridge.requeue, "USMF", "m-2", alone=True))
    assert [a["message_id"] for a in answer["acted_on"]] == ["m-2"]
    assert [c.message_id.split("|")[0] for c in resubmitted_copies(bridge, before)] == ["m-2"]
    assert [row(bridge, m).reason for m in ("m-3", "m-4")] == [ParkReason.IN_DOUBT] * 2
    assert all("ResubmitToken" not in row(bridge, m).extra for m in ("m-3", "m-4"))


def test_a_resubmission_leaves_a_settled_member_alone(bridge):
    merged_in_doubt(bridge, 2, 3, 4)
    confirm(bridge, "m-2", alone=True)
    before = len(bridge.requeue.scheduled)
    answer = operations.resubmission_reply(operations.resubmit(bridge.ledger, bridge.requeue, "USMF", "m-3"))
    assert [a["message_id"] for a in answer["acted_on"]] == ["m-3", "m-4"]
    assert [(x["message_id"], x["why"]) for x in answer["left_alone"]] == [("m-2", "settled already")]
    assert [c.message_id.split("|")[0] for c in resubmitted_copies(bridge, before)] == ["m-3", "m-4"]
    assert "ResubmitToken" not in row(bridge, "m-2").extra and row(bridge, "m-2").state is State.FORWARDED


def test_a_message_that_went_alone_is_resubmitted_alone_as_before(bridge):
    start(bridge)
    bridge.fo.answer(InDoubt("no answer from F&O after sending (ReadTimeout)"))
    assert deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2)).reason == ParkReason.IN_DOUBT
    before = len(bridge.requeue.scheduled)
    answer = operations.resubmission_reply(operations.resubmit(bridge.ledger, bridge.requeue, "USMF", "m-2"))
    assert [a["message_id"] for a in answer["acted_on"]] == ["m-2"] and answer["left_alone"] == []
    [copy] = resubmitted_copies(bridge, before)
    assert again(bridge, copy).outcome is Outcome.FORWARDED and again(bridge, copy).outcome is Outcome.DUPLICATE


def test_a_bulk_resubmit_of_one_member_counts_and_sends_its_whole_f_and_o_message_once(bridge):
    ids = merged_in_doubt(bridge, 2, 3, 4)
    selection = operations.Selection(ids=(("USMF", "m-3"),), include_in_doubt=True)
    dry = operations.bulk(bridge.ledger, bridge.requeue, selection, "resubmit", dry_run=True)
    assert [m["message_id"] for m in dry["messages"]] == ids and dry["count"] == 3
    before = len(bridge.requeue.scheduled)
    done = operations.bulk(bridge.ledger, bridge.requeue, selection, "resubmit", dry_run=False, expect=3)
    assert done["failed"] == []
    assert [c.message_id.split("|")[0] for c in resubmitted_copies(bridge, before)] == ids
    # Selected one by one, the three members are still sent once each.
    every = operations.Selection(ids=tuple(("USMF", m) for m in reversed(ids)), include_in_doubt=True)
    assert operations.bulk(bridge.ledger, bridge.requeue, every, "resubmit", dry_run=True)["count"] == 3


def test_a_member_in_doubt_under_another_f_and_o_message_since_is_left_alone(bridge):
    """Only the members still in doubt under the same F&O message (head and merged content) go with
    it: one sent again since and in doubt in another F&O message is that message's decision."""
    from shared.inbound.aggregate import story

    merged_in_doubt(bridge, 2, 3, 4)
    m4 = row(bridge, "m-4")
    other = story("m-4", ["m-4", "m-5"], 4, "another-merged-content")
    bridge.ledger.transition(
        m4, State.PARKED, reason=ParkReason.IN_DOUBT, detail=m4.detail, extra={**m4.extra, "FoMessage": other, "ContentHash": "x"}
    )
    answer = confirm(bridge, "m-2")
    assert [a["message_id"] for a in answer["acted_on"]] == ["m-2", "m-3"]
    assert [(x["message_id"], x["state"]) for x in answer["left_alone"]] == [("m-4", "Parked")]
    assert "another F&O message" in answer["left_alone"][0]["why"]
    assert row(bridge, "m-4").reason == ParkReason.IN_DOUBT


# --- the chaos run's operator (devtools/chaos.py) -----------------------------------------------------


@pytest.mark.parametrize("in_fo", [True, False], ids=["F&O has it", "F&O lacks it"])
def test_the_chaos_operator_takes_one_action_per_f_and_o_message_and_lists_every_member(bridge, in_fo):
    from collections import Counter

    from devtools.chaos import Resolution, decide_in_doubt

    ids = merged_in_doubt(bridge, 2, 3, 4)
    in_doubt = [e for e in bridge.ports.ledger.query(state=State.PARKED) if e.reason == ParkReason.IN_DOUBT]
    merged_hash = row(bridge, "m-2").extra["ContentHash"]
    resolution = Resolution()
    decide_in_doubt(bridge.ports, in_doubt, Counter({merged_hash: 1}) if in_fo else Counter(), resolution)
    assert resolution.operator_actions == resolution.in_doubt_decisions == 1
    listed = resolution.in_doubt_confirmed if in_fo else resolution.in_doubt_resubmitted
    assert sorted(listed) == ids and (resolution.in_doubt_resubmitted if in_fo else resolution.in_doubt_confirmed) == []
    expected = State.FORWARDED if in_fo else State.PARKED
    assert [row(bridge, m).state for m in ids] == [expected] * 3


# --- the two front ends -----------------------------------------------------------------------------


def test_the_cli_and_http_act_on_the_f_and_o_message_alike_and_on_one_message_when_asked(bridge):
    import io
    import json

    import azure.functions as func

    from functions.operations_actions import ACTIONS, answer
    from shared import runtime
    from shared.ops import cli

    merged_in_doubt(bridge, 2, 3, 4)

    def http(**params: str) -> func.HttpResponse:
        request = func.HttpRequest("POST", "/api/ops/confirm", params=params, body=json.dumps({"note": "seen: 12"}).encode())
        return answer(ACTIONS["confirm"], request, "ana")

    runtime.install(bridge.ports)
    try:
        refused = http(company="USMF", id="m-2", alone="maybe")
        assert refused.status_code == 400 and json.loads(refused.get_body()) == {"error": "alone must be true or false"}
        alone = json.loads(http(company="USMF", id="m-2", alone="true").get_body())
    finally:
        runtime.install(None)
    assert [a["message_id"] for a in alone["acted_on"]] == ["m-2"]
    out = io.StringIO()
    assert cli.main(["confirm", "--company", "USMF", "--id", "m-4", "--note", "seen: 12"], ports=bridge.ports, out=out) == 0
    together = json.loads(out.getvalue())
    assert [a["message_id"] for a in together["acted_on"]] == ["m-3", "m-4"]
    assert [(x["message_id"], x["why"]) for x in together["left_alone"]] == [("m-2", "settled already")]


# --- the overview -----------------------------------------------------------------------------------


class NoDeadLetters:
    def dead_lettered(self, queue: str) -> list[Any]:
        return []

    def resubmit_dead_lettered(self, queue: str, sequence_number: int) -> None:
        raise LookupError(queue)


def test_the_overview_counts_in_doubt_messages_and_the_f_and_o_messages_an_operator_decides(bridge):
    ids = merged_in_doubt(bridge, 2, 3, 4)
    view = operations.overview(bridge.ledger, NoDeadLetters(), now=bridge.clock())
    consumed = next(f for f in view["flows"] if f["flow"] == "material_consumed")
    assert (consumed["in_doubt"], consumed["in_doubt_decisions"]) == (3, 1)
    confirm(bridge, ids[1], alone=True)
    consumed = next(
        f
        for f in operations.overview(bridge.ledger, NoDeadLetters(), now=bridge.clock())["flows"]
        if f["flow"] == "material_consumed"
    )
    assert (consumed["in_doubt"], consumed["in_doubt_decisions"]) == (2, 1)
