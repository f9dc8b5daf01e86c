"""Every branch of the inbound pipeline through its one entry point, `process(delivery, flow, ports)`,
in milliseconds: the ledger, the gate's progress rows, F&O, lineage and the queues are the fakes of
tests/fakes.py (held to the real stores and the real client by tests/integration/test_*_contract.py).
Each test arranges the situation in the fakes, delivers one message, and reads the outcome, the row
and what was sent to F&O or scheduled on the queue."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from devtools.schemas import example
from shared.errors import AuthError, BusinessRejection, ConfigError, InDoubt, NotFound, Transient
from shared.fo.client import message_content
from shared.fo.production_order import HEADERS
from shared.inbound.attempt import Outcome, Result
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.pipeline import process
from shared.inbound.servicebus import ATTEMPT, IN_DOUBT_CHECK, RESUBMIT, Delivery
from shared.inbound.wakeup import requeue_parked
from shared.ops import operations
from shared.reasons import NotParked, ParkReason
from shared.store.ledger import LedgerEntry, LostRace, State, payload_hash
from shared.store.lineage import BatchRef
from shared.topology import INBOUND_QUEUES
from tests.fakes import FakeBridge, Scheduled, fake_bridge

ORDER = "P000123"


@pytest.fixture
def bridge() -> FakeBridge:
    return fake_bridge(
        fo_rows={HEADERS: [{"dataAreaId": "usmf", "ProductionOrderNumber": ORDER, "ProductionOrderStatus": "Released"}]}
    )


def message(kind: str, message_id: str | None = None, **fields: Any) -> bytes:
    document = example(kind)
    document["message_id"] = message_id or f"{kind}-1"
    for name, value in fields.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    return json.dumps(document).encode()


def deliver(bridge: FakeBridge, kind: str, body: bytes, **properties: Any) -> Result:
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    delivery = Delivery(
        body=body,
        message_id=str(document.get("message_id", "broker-1")),
        queue=INBOUND_QUEUES[kind],
        session_id=document.get("production_order"),
        properties=properties,
    )
    return process(delivery, INBOUND_FLOWS[kind], bridge.ports)


def again(bridge: FakeBridge, copy: Scheduled) -> Result:
    """Deliver a copy the bridge scheduled, as the queue would."""
    kind = next(name for name, queue in INBOUND_QUEUES.items() if queue == copy.queue)
    delivery = Delivery(copy.body, copy.message_id, copy.queue, copy.session_id, properties=copy.properties)
    return process(delivery, INBOUND_FLOWS[kind], bridge.ports)


def row(bridge: FakeBridge, message_id: str) -> LedgerEntry:
    entry = bridge.ledger.get("USMF", message_id)
    assert entry is not None, f"no ledger row for {message_id}"
    return entry


def start(bridge: FakeBridge, sequence: int | None = 1, message_id: str = "start-1") -> Result:
    result = deliver(bridge, "production_started", message("production_started", message_id, sequence=sequence))
    assert result.outcome is Outcome.FORWARDED, result
    return result


# --- decoding and the ledger claim ------------------------------------------------------------


def test_a_message_that_does_not_decode_is_parked_with_its_payload_and_f_and_o_is_not_called(bridge):
    result = deliver(bridge, "material_consumed", b'{"message_id": "m-1", "company": "USMF", "type": ')
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.INVALID_JSON
    parked = next(bridge.ledger.query(state=State.PARKED))
    assert parked.reason == ParkReason.INVALID_JSON and bridge.ledger.payload(parked.company, parked.message_id).startswith(
        b'{"message_id"'
    )
    assert bridge.fo.calls == []


def test_a_message_of_another_flow_on_this_queue_is_parked_as_such(bridge):
    result = deliver(bridge, "material_consumed", message("production_started", "m-2"))
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.WRONG_QUEUE and bridge.fo.calls == []


def test_the_same_refused_message_again_is_a_duplicate(bridge):
    body = b'{"message_id": "m-3", "company": "USMF"}'
    first, second = deliver(bridge, "material_consumed", body), deliver(bridge, "material_consumed", body)
    assert first.outcome is Outcome.PARKED and second.outcome is Outcome.DUPLICATE
    assert len(list(bridge.ledger.query(state=State.PARKED))) == 1


def test_a_second_delivery_of_a_forwarded_message_is_a_duplicate_and_f_and_o_sees_it_once(bridge):
    body = message("production_started", sequence=1)
    assert deliver(bridge, "production_started", body).outcome is Outcome.FORWARDED
    again_ = deliver(bridge, "production_started", body)
    assert again_.outcome is Outcome.DUPLICATE and "already Forwarded" in again_.detail
    assert len(bridge.fo.calls) == 1


def test_a_changed_copy_under_a_used_message_id_is_kept_apart_and_not_sent(bridge):
    start(bridge)
    changed = message("production_started", "start-1", sequence=1, body={"started_quantity": 41.0, "bom_consumption": "never"})
    result = deliver(bridge, "production_started", changed)
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.CONFLICT
    [kept] = list(bridge.ledger.query(state=State.PARKED))
    assert kept.message_id.startswith("start-1|conflict-") and kept.extra["ConflictsWith"] == "start-1"
    assert bridge.ledger.payload("USMF", kept.message_id) == changed and row(bridge, "start-1").state is State.FORWARDED
    assert deliver(bridge, "production_started", changed).outcome is Outcome.DUPLICATE  # its redelivery finds its row
    assert len(bridge.fo.calls) == 1


def test_the_same_content_written_differently_is_a_duplicate_not_a_conflict(bridge):
    start(bridge)
    document = json.loads(message("production_started", "start-1", sequence=1))
    respaced = json.dumps(dict(reversed(list(document.items()))), indent=2).encode()
    assert deliver(bridge, "production_started", respaced).outcome is Outcome.DUPLICATE


# --- parked rows and the operator's resubmission ---------------------------------------------


def rejected(bridge: FakeBridge, message_id: str = "s-1") -> bytes:
    body = message("production_started", message_id, sequence=None)
    bridge.fo.answer(
        BusinessRejection("F&O rejected POST (HTTP 400): no such order", infolog="Production order P000123 does not exist.")
    )
    result = deliver(bridge, "production_started", body)
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.REJECTED
    return body


def test_a_business_rejection_is_parked_with_f_and_o_s_infolog(bridge):
    rejected(bridge)
    parked = row(bridge, "s-1")
    assert (parked.state, parked.reason, parked.infolog) == (
        State.PARKED,
        ParkReason.REJECTED,
        "Production order P000123 does not exist.",
    )
    assert bridge.requeue.scheduled == [] and not bridge.gate.read("USMF", ORDER).started


def test_not_found_is_parked_as_rejected(bridge):
    bridge.fo.answer(NotFound("F&O has no POST /api/services/x", status=404))
    result = deliver(bridge, "quality_result", message("quality_result", "q-1"))
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.REJECTED and row(bridge, "q-1").infolog == ""


def test_a_redelivery_of_a_parked_message_does_not_move_it(bridge):
    body = rejected(bridge)
    before = row(bridge, "s-1")
    result = deliver(bridge, "production_started", body)
    assert result.outcome is Outcome.DUPLICATE and "already Parked" in result.detail
    assert row(bridge, "s-1") == before and len(bridge.fo.calls) == 1


def test_the_operator_s_resubmission_is_admitted_once_and_only_with_the_row_s_token(bridge):
    body = rejected(bridge)
    resubmitted = requeue_parked(bridge.ledger, bridge.requeue, row(bridge, "s-1"), body, "resubmitted by ana")
    [copy] = bridge.requeue.scheduled
    assert deliver(bridge, "production_started", body, **{RESUBMIT: "an-old-token"}).outcome is Outcome.DUPLICATE
    assert again(bridge, copy).outcome is Outcome.FORWARDED
    assert row(bridge, "s-1").state is State.FORWARDED and resubmitted.entry.extra["Resubmissions"] == 1
    assert again(bridge, copy).outcome is Outcome.DUPLICATE  # the same copy twice: F&O sees it once more, not twice
    assert len(bridge.fo.applied) == 1


def test_a_resubmission_s_token_is_spent_once_admitted_so_its_copies_never_send_it_again(bridge):
    """The token admits one copy. A copy that carries it later (the broker's redelivery, a copy the
    bridge scheduled from it) must not claim the row again once that admission ended in doubt:
    F&O may have it, and only a new resubmission (a new token) may send it again."""
    body = rejected(bridge)
    requeue_parked(bridge.ledger, bridge.requeue, row(bridge, "s-1"), body, "resubmitted by ana")
    [copy] = bridge.requeue.scheduled
    bridge.fo.answer(InDoubt("no answer from F&O after sending (ReadTimeout); it may have been applied"))
    assert again(bridge, copy).reason == ParkReason.IN_DOUBT
    sent = len(bridge.fo.calls)
    assert "ResubmitToken" not in row(bridge, "s-1").extra
    later = [c for c in bridge.requeue.scheduled if c is not copy and IN_DOUBT_CHECK not in c.properties]
    for redelivered in [copy, *later]:
        assert again(bridge, redelivered).outcome is Outcome.DUPLICATE
    assert len(bridge.fo.calls) == sent and row(bridge, "s-1").reason == ParkReason.IN_DOUBT


def test_a_woken_gap_s_token_is_spent_by_the_wait_it_enters(bridge):
    """A gap-parked message put back by the wake-up goes back to the gate; the token does not
    outlive that admission (its look-again copies carry it along)."""
    start(bridge, sequence=1)
    body = message("material_consumed", "m-3", sequence=3)
    parked = bridge.ledger.create(
        LedgerEntry(
            company="USMF",
            message_id="m-3",
            state=State.PARKED,
            flow="material_consumed",
            reason=ParkReason.GAP,
            production_order=ORDER,
            sequence=3,
            payload_hash=payload_hash(body),
            payload_size=len(body),
        ),
        payload=body,
    )
    requeue_parked(bridge.ledger, bridge.requeue, parked, body, "resumed by the bridge")
    [copy] = bridge.requeue.scheduled
    assert again(bridge, copy).outcome is Outcome.WAITING
    assert "ResubmitToken" not in row(bridge, "m-3").extra


# --- a row another delivery is working on -----------------------------------------------------


def forwarding(bridge: FakeBridge, kind: str, body: bytes, lease_s: float) -> LedgerEntry:
    document = json.loads(body)
    return bridge.ledger.create(
        LedgerEntry(
            company="USMF",
            message_id=document["message_id"],
            state=State.FORWARDING,
            flow=kind,
            attempts=1,
            production_order=document.get("production_order") or "",
            sequence=document.get("sequence"),
            payload_hash=payload_hash(body),
            payload_size=len(body),
            lease_until=bridge.clock() + timedelta(seconds=lease_s),
        ),
        payload=body,
    )


def test_a_message_another_worker_is_forwarding_waits_for_its_lease(bridge):
    body = message("material_consumed", "m-1", sequence=None)
    forwarding(bridge, "material_consumed", body, lease_s=120)
    result = deliver(bridge, "material_consumed", body)
    assert result.outcome is Outcome.WAITING and result.reason == "in_flight"
    [copy] = bridge.requeue.scheduled
    assert copy.delay_s == bridge.ports.settings.retry_first_wait_s  # the lease is longer: the retry cadence
    assert copy.properties[ATTEMPT] == 1 and bridge.fo.calls == []


def test_a_lease_about_to_end_is_looked_at_just_after_it(bridge):
    body = message("material_consumed", "m-1", sequence=None)
    forwarding(bridge, "material_consumed", body, lease_s=3)
    deliver(bridge, "material_consumed", body)
    assert bridge.requeue.scheduled[0].delay_s == 4  # the lease (3 s on the clock) and one second


def test_a_lapsed_send_that_f_and_o_would_not_make_harmless_is_in_doubt_not_repeated(bridge):
    body = message("material_consumed", "m-1", sequence=None)
    forwarding(bridge, "material_consumed", body, lease_s=-1)
    result = deliver(bridge, "material_consumed", body)
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.IN_DOUBT
    parked = row(bridge, "m-1")
    assert parked.extra["ContentHash"] and bridge.ledger.messages_with_content("USMF", parked.extra["ContentHash"]) == ["m-1"]
    assert bridge.fo.calls == [] and bridge.requeue.scheduled == []  # a consumption: no read can decide it


def test_a_lapsed_send_that_f_and_o_makes_harmless_is_sent_again(bridge):
    body = message("inventory_moved", "t-1")
    forwarding(bridge, "inventory_moved", body, lease_s=-1)
    result = deliver(bridge, "inventory_moved", body)
    assert result.outcome is Outcome.FORWARDED and row(bridge, "t-1").attempts == 2 and len(bridge.fo.calls) == 1


# --- the order gate ---------------------------------------------------------------------------


def test_the_next_in_sequence_is_forwarded_and_moves_the_watermark(bridge):
    start(bridge)
    progress = bridge.gate.read("USMF", ORDER)
    assert (progress.watermark, progress.started) == (1, True)


def test_a_message_after_a_gap_waits_to_be_woken_looks_again_by_the_gap_timeout_then_parks_naming_the_missing_number(bridge):
    settings = bridge.ports.settings
    body = message("material_consumed", "m-3", sequence=3)
    first = deliver(bridge, "material_consumed", body)
    assert first.outcome is Outcome.WAITING and first.detail == f"waiting for sequence 1 of {ORDER}"
    assert row(bridge, "m-3").state is State.WAITING and bridge.fo.calls == []
    second = again(bridge, bridge.requeue.scheduled[0])
    assert second.outcome is Outcome.WAITING
    # The forward of sequence 1 would wake it at once: its own copies only look for the gap timeout.
    look_again = min(settings.gate_max_wait_s, settings.gate_gap_timeout_s)
    assert [c.delay_s for c in bridge.requeue.scheduled] == [look_again, look_again]
    bridge.clock.advance(settings.gate_gap_timeout_s)
    parked = again(bridge, bridge.requeue.scheduled[-1])
    assert parked.outcome is Outcome.PARKED and parked.reason == ParkReason.GAP
    assert row(bridge, "m-3").extra["Missing"] == 1 and bridge.gate.read("USMF", ORDER).held
    assert bridge.fo.calls == []


def test_a_forward_wakes_the_next_message_the_gate_parked(bridge):
    deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2))
    bridge.clock.advance(bridge.ports.settings.gate_gap_timeout_s)
    assert again(bridge, bridge.requeue.scheduled[-1]).reason == ParkReason.GAP
    start(bridge)
    woken = bridge.requeue.scheduled[-1]
    assert woken.message_id.startswith("m-2|resubmit-") and woken.delay_s == 0 and RESUBMIT in woken.properties
    assert again(bridge, woken).outcome is Outcome.FORWARDED
    assert bridge.gate.read("USMF", ORDER).watermark == 2 and [c.what for c in bridge.fo.applied] == [
        "ProdProductionOrderStart",
        "ProdProductionOrderPickingList",
    ]


def test_without_sequence_nothing_overtakes_the_start(bridge):
    result = deliver(bridge, "material_consumed", message("material_consumed", "m-1", sequence=None))
    assert result.outcome is Outcome.WAITING and result.detail == f"waiting for the production start of {ORDER}"
    bridge.clock.advance(bridge.ports.settings.gate_gap_timeout_s)
    parked = again(bridge, bridge.requeue.scheduled[-1])
    assert parked.outcome is Outcome.PARKED and parked.reason == ParkReason.NO_START


def test_a_resend_under_a_new_id_below_the_watermark_is_a_duplicate(bridge):
    start(bridge)
    resent = message("production_started", "start-1-resent", sequence=1)
    result = deliver(bridge, "production_started", resent)
    assert result.outcome is Outcome.DUPLICATE and result.reason == "below_watermark" and "start-1" in result.detail
    assert row(bridge, "start-1-resent").state is State.DUPLICATE and len(bridge.fo.calls) == 1


def test_other_content_under_a_used_sequence_number_is_a_conflict_naming_its_holder(bridge):
    start(bridge)
    other = message("material_consumed", "m-1", sequence=1)
    result = deliver(bridge, "material_consumed", other)
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.CONFLICT
    assert row(bridge, "m-1").extra["ConflictsWith"] == "start-1" and len(bridge.fo.calls) == 1


def test_a_sequence_number_released_as_a_gap_is_a_conflict_when_its_message_comes_after_all(bridge):
    start(bridge)
    bridge.gate.release_gap("USMF", ORDER, 2, "never sent", "ana")
    result = deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2))
    assert (
        result.outcome is Outcome.PARKED and result.reason == ParkReason.CONFLICT and "released as a gap by ana" in result.detail
    )


def test_an_end_without_sequence_overtakes_no_message_still_waiting(bridge):
    start(bridge, sequence=None)
    waiting = message("material_consumed", "m-1", sequence=None)
    forwarding(bridge, "material_consumed", waiting, lease_s=-1)
    bridge.ledger.transition(row(bridge, "m-1"), State.WAITING, reason="transient")
    result = deliver(bridge, "production_ended", message("production_ended", "end-1", sequence=None))
    assert result.outcome is Outcome.WAITING and result.detail == f"waiting for 1 earlier message(s) of {ORDER}"
    assert [c.what for c in bridge.fo.calls] == ["ProdProductionOrderStart"]


def test_a_message_outside_any_order_passes_no_gate(bridge):
    result = deliver(bridge, "inventory_moved", message("inventory_moved", "t-1"))
    assert result.outcome is Outcome.FORWARDED and result.order == ""


# --- the forward ------------------------------------------------------------------------------


def test_a_forward_records_the_genealogy_the_content_index_and_the_watermark_together(bridge):
    start(bridge)
    body = message("material_consumed", "m-2", sequence=2)
    result = deliver(bridge, "material_consumed", body)
    assert result.outcome is Outcome.FORWARDED
    forwarded = row(bridge, "m-2")
    [sent] = [c for c in bridge.fo.applied if c.what == "ProdProductionOrderPickingList"]
    digest = forwarded.extra["ContentHash"]
    assert (forwarded.state, forwarded.fo_message_type) == (State.FORWARDED, "ProdProductionOrderPickingList")
    assert bridge.ledger.messages_with_content("USMF", digest) == ["m-2"]
    assert digest == payload_hash(message_content(sent.body["content"]).encode())  # the hash of what F&O echoes
    assert bridge.gate.read("USMF", ORDER).watermark == 2
    lines = json.loads(body)["body"]["lines"]
    assert set(bridge.lineage.batches_of_order("USMF", ORDER, "consumed")) == {
        BatchRef(line["item_number"], line["batch_number"]) for line in lines
    }


def test_a_forward_whose_row_moved_on_meanwhile_still_keeps_the_genealogy_fo_has(bridge):
    start(bridge)
    body = message("material_consumed", "m-2", sequence=2)
    send = bridge.fo.send_message

    def operator_moves_the_row_during_the_call(*args: Any) -> None:
        send(*args)
        claimed = row(bridge, "m-2")  # e.g. its lease ran out and another delivery parked it in doubt
        bridge.ledger.transition(claimed, State.PARKED, reason=ParkReason.IN_DOUBT, detail="lease ran out")

    bridge.fo.send_message = operator_moves_the_row_during_the_call
    result = deliver(bridge, "material_consumed", body)
    assert result.outcome is Outcome.DUPLICATE and row(bridge, "m-2").state is State.PARKED
    lines = json.loads(body)["body"]["lines"]
    assert set(bridge.lineage.batches_of_order("USMF", ORDER, "consumed")) == {
        BatchRef(line["item_number"], line["batch_number"]) for line in lines
    }


def test_a_progress_row_moved_by_another_flow_meanwhile_is_advanced_as_it_is_now(bridge):
    start(bridge)
    send = bridge.fo.send_message

    def another_flow_moves_the_order_first(*args: Any) -> None:
        if not bridge.requeue.scheduled:  # a later message of the order notes its wait on the order's row
            waiting = deliver(bridge, "output_reported", message("output_reported", "m-4", sequence=4))
            assert waiting.outcome is Outcome.WAITING
        send(*args)

    bridge.fo.send_message = another_flow_moves_the_order_first
    result = deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2))
    assert result.outcome is Outcome.FORWARDED
    progress = bridge.gate.read("USMF", ORDER)
    # Advanced on the row as it is now, not replaced by the one read: the wait noted meanwhile stays.
    assert (progress.watermark, progress.behind) == (2, 4)
    assert bridge.ledger.messages_with_content("USMF", row(bridge, "m-2").extra["ContentHash"]) == ["m-2"]


# --- F&O's answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [Transient("F&O unavailable (HTTP 503)", status=503)])
def test_a_transient_fault_is_retried_with_a_growing_delay(bridge, error):
    settings = bridge.ports.settings
    bridge.fo.answer(error, error, None)
    body = message("quality_result", "q-1")
    first = deliver(bridge, "quality_result", body)
    assert first.outcome is Outcome.RETRYING and first.reason == "transient"
    waiting = row(bridge, "q-1")
    assert (waiting.state, waiting.reason, waiting.extra["Retries"]) == (State.WAITING, "transient", 1)
    second = again(bridge, bridge.requeue.scheduled[-1])
    assert second.outcome is Outcome.RETRYING and row(bridge, "q-1").extra["Retries"] == 2
    assert [c.delay_s for c in bridge.requeue.scheduled] == [settings.retry_first_wait_s, 2 * settings.retry_first_wait_s]
    assert len({c.message_id for c in bridge.requeue.scheduled}) == 2  # fresh broker ids: duplicate detection keeps both
    assert again(bridge, bridge.requeue.scheduled[-1]).outcome is Outcome.FORWARDED and len(bridge.fo.calls) == 3


def test_a_fault_past_the_retry_window_parks_the_message(bridge):
    body = message("quality_result", "q-1")
    bridge.fo.answer(Transient("F&O unavailable (HTTP 503)", status=503))
    deliver(bridge, "quality_result", body)
    bridge.clock.advance(bridge.ports.settings.retry_give_up_after_s + 1)
    bridge.fo.answer(Transient("F&O unavailable (HTTP 503)", status=503))
    result = again(bridge, bridge.requeue.scheduled[-1])
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.RETRIES_EXHAUSTED
    assert "still failing after" in row(bridge, "q-1").detail and len(bridge.requeue.scheduled) == 1


@pytest.mark.parametrize("error", [AuthError("F&O refused the token (401)", status=401), ConfigError("FO_BASE_URL is wrong")])
def test_credentials_or_settings_f_and_o_refuses_wait_the_longest_delay(bridge, error):
    bridge.fo.answer(error)
    result = deliver(bridge, "quality_result", message("quality_result", "q-1"))
    assert result.outcome is Outcome.RETRYING and result.reason == error.reason
    assert bridge.requeue.scheduled[-1].delay_s == bridge.ports.settings.retry_max_wait_s


def test_a_send_without_an_answer_is_parked_in_doubt_and_the_bridge_schedules_its_own_check(bridge):
    start(bridge, sequence=None)
    bridge.fo.answer(InDoubt("no answer from F&O after sending (ReadTimeout); it may have been applied"))
    result = deliver(bridge, "production_ended", message("production_ended", "end-1", sequence=None))
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.IN_DOUBT
    parked = row(bridge, "end-1")
    assert bridge.ledger.messages_with_content("USMF", parked.extra["ContentHash"]) == ["end-1"]
    [check] = [c for c in bridge.requeue.scheduled if IN_DOUBT_CHECK in c.properties]
    assert check.delay_s == bridge.ports.settings.in_doubt_check_after_s
    assert not bridge.gate.read("USMF", ORDER).ended  # the forward's bookkeeping waits for the settlement


def test_a_send_without_an_answer_that_f_and_o_makes_harmless_is_retried(bridge):
    bridge.fo.answer(InDoubt("no answer"))
    result = deliver(bridge, "inventory_moved", message("inventory_moved", "t-1"))
    assert result.outcome is Outcome.RETRYING and row(bridge, "t-1").state is State.WAITING


# --- the bridge's own check of an in-doubt message ---------------------------------------------


def in_doubt_start(bridge: FakeBridge) -> Scheduled:
    bridge.fo.answer(InDoubt("no answer"))
    assert (
        deliver(bridge, "production_started", message("production_started", "start-1", sequence=1)).reason == ParkReason.IN_DOUBT
    )
    [check] = [c for c in bridge.requeue.scheduled if IN_DOUBT_CHECK in c.properties]
    return check


def set_status(bridge: FakeBridge, status: str) -> None:
    bridge.fo.rows[HEADERS][0]["ProductionOrderStatus"] = status


def test_a_check_that_finds_the_start_applied_confirms_it_and_records_the_forward(bridge):
    check = in_doubt_start(bridge)
    deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2))  # waits behind it
    set_status(bridge, "StartedUp")
    result = again(bridge, check)
    assert result.outcome is Outcome.FORWARDED and "confirmed" in result.detail
    confirmed = row(bridge, "start-1")
    assert confirmed.state is State.FORWARDED and "ProductionOrderStatus = StartedUp" in confirmed.detail
    assert bridge.gate.read("USMF", ORDER).watermark == 1
    assert bridge.requeue.scheduled[-1].message_id.startswith("m-2|wake-")  # what waited behind it resumes
    assert len(bridge.fo.calls) == 1  # read, never re-sent


def test_a_check_that_cannot_tell_keeps_it_parked_with_what_was_read(bridge):
    check = in_doubt_start(bridge)
    result = again(bridge, check)
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.IN_DOUBT
    kept = row(bridge, "start-1")
    assert kept.extra["Checked"] == f"{HEADERS}({ORDER}).ProductionOrderStatus = Released" and "Message processor" in kept.detail
    assert bridge.gate.read("USMF", ORDER).watermark == 0 and len(bridge.fo.calls) == 1


def test_a_check_whose_read_fails_is_tried_again_later(bridge):
    check = in_doubt_start(bridge)
    bridge.fo.fail_reads(Transient("F&O unavailable (HTTP 503)", status=503))
    result = again(bridge, check)
    assert result.outcome is Outcome.RETRYING and "checking F&O" in result.detail
    retry = bridge.requeue.scheduled[-1]
    assert IN_DOUBT_CHECK in retry.properties and retry.delay_s == bridge.ports.settings.retry_first_wait_s
    assert row(bridge, "start-1").reason == ParkReason.IN_DOUBT


def test_a_check_of_a_message_settled_meanwhile_changes_nothing(bridge):
    check = in_doubt_start(bridge)
    parked = row(bridge, "start-1")
    bridge.ledger.transition(parked, State.PROCESSED, detail="F&O message processor: Processed")
    result = again(bridge, check)
    assert result.outcome is Outcome.DUPLICATE and row(bridge, "start-1").state is State.PROCESSED


# --- races between workers ----------------------------------------------------------------------
# Arranged in the fakes at the moment the pipeline reads or writes, as two instances would meet.


def test_a_claim_lost_to_a_worker_that_forwarded_it_meanwhile_is_a_duplicate(bridge: FakeBridge, monkeypatch):
    body = message("material_consumed", "m-1", sequence=None)
    real_create = bridge.ledger.create

    def another_worker_first(entry: LedgerEntry, payload: bytes | None = None, **options: Any) -> LedgerEntry:
        real_create(replace(entry, state=State.FORWARDED), payload)
        return real_create(entry, payload, **options)  # LostRace: the row exists now

    monkeypatch.setattr(bridge.ledger, "create", another_worker_first)
    result = deliver(bridge, "material_consumed", body)
    assert result.outcome is Outcome.DUPLICATE and "already Forwarded" in result.detail and bridge.fo.calls == []


def test_a_claim_lost_to_a_row_gone_again_comes_back_later(bridge, monkeypatch):
    def lost(entry: LedgerEntry, payload: bytes | None = None, **options: Any) -> LedgerEntry:
        raise LostRace(entry.message_id)

    monkeypatch.setattr(bridge.ledger, "create", lost)
    result = deliver(bridge, "material_consumed", message("material_consumed", "m-1", sequence=None))
    assert result.outcome is Outcome.RETRYING and "vanished" in result.detail
    assert bridge.requeue.scheduled[-1].message_id == "m-1|storage-1" and bridge.fo.calls == []


def test_a_waiting_row_another_delivery_moved_first_is_left_to_it(bridge, monkeypatch):
    deliver(bridge, "material_consumed", message("material_consumed", "m-1", sequence=None))  # waits for the start
    stale = row(bridge, "m-1")
    assert stale.state is State.WAITING
    bridge.ledger.transition(stale, State.WAITING, reason=NotParked.ORDERING, detail="moved by another delivery")
    real_get = bridge.ledger.get
    monkeypatch.setattr(
        bridge.ledger, "get", lambda company, message_id: stale if message_id == "m-1" else real_get(company, message_id)
    )
    start(bridge, sequence=None)
    # The copy reads its row from the ledger, not the one the wake-up kept for its own copy.
    assert bridge.ports.recent.take_woken("USMF", "m-1") is not None
    result = again(bridge, bridge.requeue.scheduled[0])
    assert result.outcome is Outcome.DUPLICATE and result.detail == "another delivery moved it first"
    assert [c.what for c in bridge.fo.calls] == ["ProdProductionOrderStart"]


def test_an_end_without_sequence_waits_for_a_message_whose_row_was_written_while_the_gate_decided(bridge, monkeypatch):
    start(bridge, sequence=None)
    real_plan = bridge.gate.plan
    consumed = message("material_consumed", "m-1", sequence=None)

    def another_flow_meanwhile(*args: Any, **kwargs: Any) -> Any:
        decided = real_plan(*args, **kwargs)
        if bridge.ledger.get("USMF", "m-1") is None:  # taken in by another worker after the first count
            forwarding(bridge, "material_consumed", consumed, lease_s=120)
        return decided

    monkeypatch.setattr(bridge.gate, "plan", another_flow_meanwhile)
    result = deliver(bridge, "production_ended", message("production_ended", "end-1", sequence=None))
    assert result.outcome is Outcome.WAITING and result.detail == f"waiting for 1 earlier message(s) of {ORDER}"
    assert row(bridge, "end-1").state is State.WAITING and [c.what for c in bridge.fo.calls] == ["ProdProductionOrderStart"]


def journal_header_exists(operation: str) -> BusinessRejection:
    refused = BusinessRejection("changeset refused", infolog="The record already exists.", status=400)
    refused.operation = operation  # the Content-ID of the operation F&O refused, as the client sets it
    return refused


def test_a_journal_whose_header_f_and_o_already_has_was_applied_by_an_earlier_attempt(bridge):
    bridge.fo.answer(journal_header_exists("1"))
    result = deliver(bridge, "inventory_moved", message("inventory_moved", "t-1"))
    assert result.outcome is Outcome.FORWARDED and row(bridge, "t-1").state is State.FORWARDED


def test_already_exists_on_a_journal_line_is_a_rejection(bridge):
    bridge.fo.answer(journal_header_exists("2"))
    result = deliver(bridge, "inventory_moved", message("inventory_moved", "t-1"))
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.REJECTED


@pytest.mark.parametrize("status", ["StartedUp", "Released"])  # the check confirms it, or cannot tell
def test_a_check_that_meets_f_and_o_s_own_answer_while_it_reads_leaves_the_row_to_it(bridge: FakeBridge, monkeypatch, status):
    check = in_doubt_start(bridge)
    set_status(bridge, status)
    parked, real_transition = row(bridge, "start-1"), bridge.ledger.transition

    def processed_meanwhile(entry: LedgerEntry, state: State, **changes: Any) -> LedgerEntry:
        if entry.message_id == "start-1" and row(bridge, "start-1").state is State.PARKED:
            real_transition(parked, State.PROCESSED, detail="F&O message processor: Processed")
        return real_transition(entry, state, **changes)  # LostRace for the check's own move

    monkeypatch.setattr(bridge.ledger, "transition", processed_meanwhile)
    result = again(bridge, check)
    assert result.outcome is Outcome.DUPLICATE and result.detail == "settled during the bridge's check"
    assert row(bridge, "start-1").state is State.PROCESSED and len(bridge.fo.calls) == 1


def test_an_operator_s_resubmission_of_a_message_that_still_does_not_decode_parks_it_again(bridge):
    body = b'{"message_id": "m-3", "company": "USMF", "type": "material_consumed"}'
    assert deliver(bridge, "material_consumed", body).reason == ParkReason.INVALID_MESSAGE
    operations.resubmit(bridge.ledger, bridge.requeue, "USMF", "m-3", who="ana")
    resubmitted = row(bridge, "m-3")
    result = again(bridge, bridge.requeue.scheduled[-1])
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.INVALID_MESSAGE
    parked = row(bridge, "m-3")  # moved again, with why it still does not decode
    assert parked.etag != resubmitted.etag and parked.detail == result.detail != resubmitted.detail
    assert bridge.fo.calls == []


def test_a_changed_copy_of_a_refused_message_is_kept_apart(bridge):
    first = b'{"message_id": "m-3", "company": "USMF", "type": "material_consumed"}'
    changed = b'{"message_id": "m-3", "company": "USMF", "type": "material_consumed", "quantity": 1}'
    deliver(bridge, "material_consumed", first)
    result = deliver(bridge, "material_consumed", changed)
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.CONFLICT and result.message_id != "m-3"
    assert bridge.ledger.payload("USMF", "m-3") == first


# --- per-order aggregation (shared/inbound/aggregate.py) ----------------------------------------


def held_consumptions(bridge: FakeBridge, *sequences: int) -> list[str]:
    """Consumptions that arrive before their order's start: the gate holds them (Waiting)."""
    ids = []
    for sequence in sequences:
        result = deliver(bridge, "material_consumed", message("material_consumed", f"m-{sequence}", sequence=sequence))
        assert result.outcome is Outcome.WAITING
        ids.append(f"m-{sequence}")
    return ids


def woken(bridge: FakeBridge, message_id: str) -> Result:
    """Deliver the copy the wake-up put on the queue for `message_id`."""
    copy = next(c for c in reversed(bridge.requeue.scheduled) if c.message_id.startswith(f"{message_id}|wake-"))
    return again(bridge, copy)


def test_members_settled_by_f_and_o_before_the_forward_is_recorded_each_get_their_outcome(bridge, monkeypatch, caplog):
    ids = held_consumptions(bridge, 2, 3, 4)
    start(bridge)
    real = bridge.ledger.transition_together

    def processed_first(moves: Any, companions: Any = None) -> Any:
        if moves and moves[0][1] is State.FORWARDED:  # F&O's processed event lands between the POST and the record
            for entry, _, _ in moves:
                bridge.ledger.transition(entry, State.PROCESSED, detail="F&O message processor: Processed")
        return real(moves, companions)

    monkeypatch.setattr(bridge.ledger, "transition_together", processed_first)
    with caplog.at_level("INFO", logger="mesbridge"):
        head = woken(bridge, "m-2")
    told = {r.mes_message_id: r.getMessage() for r in caplog.records if getattr(r, "mes_message_id", None) in ids}
    assert head.outcome is Outcome.DUPLICATE and set(told) == set(ids), told
    assert all("already Processed" in line for line in told.values())
    assert len([c for c in bridge.fo.applied if c.what == "ProdProductionOrderPickingList"]) == 1


def test_what_the_gate_holds_of_an_order_and_a_flow_goes_to_f_and_o_as_one_message(bridge):
    ids = held_consumptions(bridge, 2, 3, 4)
    start(bridge)
    result = woken(bridge, "m-2")
    assert result.outcome is Outcome.FORWARDED and result.message_id == "m-2"
    [picking] = [c for c in bridge.fo.applied if c.what == "ProdProductionOrderPickingList"]
    assert len(picking.body["content"]["PickingListLines"]) == 6  # two lines in each of three messages
    merged_hash = row(bridge, "m-2").extra["ContentHash"]
    for message_id in ids:
        entry = row(bridge, message_id)
        assert entry.state is State.FORWARDED and entry.extra["FoMessage"]["Members"] == ids
        assert entry.extra["ContentHash"] == merged_hash
    assert bridge.ledger.messages_with_content("USMF", merged_hash) == ids
    assert bridge.gate.read("USMF", ORDER).watermark == 4
    # Each MES message keeps its own genealogy.
    assert {ref.item for ref in bridge.lineage.batches_of_order("USMF", ORDER, "consumed")} == {"RM-0001", "RM-0007"}


def counted_held_looks(bridge: FakeBridge, monkeypatch: pytest.MonkeyPatch, then: Any = None) -> list[int]:
    """Count the held index's queries; `then` runs once, right after the first one answered."""
    real, looks = bridge.ledger.held_rows, []

    def held_rows(company: str, order: str) -> list[LedgerEntry]:
        rows = real(company, order)
        looks.append(len(rows))
        if then is not None and len(looks) == 1:
            then()
        return rows

    monkeypatch.setattr(bridge.ledger, "held_rows", held_rows)
    return looks


def counted_row_reads(bridge: FakeBridge, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the held rows the wake-up and the aggregation read from the ledger (by message id)."""
    real, reads = bridge.ledger.read_held, list[str]()

    def read_held(company: str, chosen: list[LedgerEntry]) -> list[tuple[LedgerEntry, bytes]]:
        reads.extend(e.message_id for e in chosen)
        return real(company, chosen)

    monkeypatch.setattr(bridge.ledger, "read_held", read_held)
    return reads


def test_the_waiting_rows_this_process_wrote_are_taken_along_and_woken_without_reading_them(bridge, monkeypatch):
    held_consumptions(bridge, 2, 3)
    assert deliver(bridge, "output_reported", message("output_reported", "m-4", sequence=4)).outcome is Outcome.WAITING
    start(bridge)
    reads = counted_row_reads(bridge, monkeypatch)
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    assert woken(bridge, "m-4").outcome is Outcome.FORWARDED
    # m-3 went along with m-2, m-4 was woken after them, and its copy carried its own body.
    assert reads == []
    assert row(bridge, "m-3").state is State.FORWARDED and row(bridge, "m-4").state is State.FORWARDED
    [picking] = [c for c in bridge.fo.calls if c.what == "ProdProductionOrderPickingList"]
    assert len(picking.body["content"]["PickingListLines"]) == 4


def test_waiting_rows_another_instance_wrote_are_read_from_the_ledger(bridge, monkeypatch):
    ids = held_consumptions(bridge, 2, 3)
    assert deliver(bridge, "output_reported", message("output_reported", "m-4", sequence=4)).outcome is Outcome.WAITING
    bridge.ports.recent.forget_waiting([row(bridge, m) for m in [*ids, "m-4"]])  # as another instance would know them
    reads = counted_row_reads(bridge, monkeypatch)
    start(bridge)
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    assert reads == ["m-2", "m-3", "m-4"]  # woken by the start, taken along, woken after the group
    assert row(bridge, "m-3").state is State.FORWARDED


def test_a_waiting_row_that_moved_since_this_process_wrote_it_is_read_again_by_its_copy(bridge, monkeypatch):
    held_consumptions(bridge, 2)
    # Another instance moves m-2 on (a new wait noted on it) after this process wrote it.
    bridge.ledger.transition(row(bridge, "m-2"), State.WAITING, reason=NotParked.ORDERING, detail="elsewhere")
    start(bridge)
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    assert row(bridge, "m-2").state is State.FORWARDED
    assert len([c for c in bridge.fo.calls if c.what == "ProdProductionOrderPickingList"]) == 1


def test_a_merged_forward_wakes_what_follows_from_the_look_it_took_for_its_members(bridge, monkeypatch):
    held_consumptions(bridge, 2, 3)
    assert deliver(bridge, "output_reported", message("output_reported", "m-4", sequence=4)).outcome is Outcome.WAITING
    start(bridge)
    looks = counted_held_looks(bridge, monkeypatch)
    monkeypatch.setattr(bridge.gate, "read", lambda company, order: pytest.fail(f"read the row of {order}"))
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    assert row(bridge, "m-3").state is State.FORWARDED
    # No query for the group or the wake-up: the order's row is as the start's wake-up left it, which
    # saw m-3 and m-4 held; the order's row is not read again either.
    assert looks == []
    assert any(c.message_id.startswith("m-4|wake-") for c in bridge.requeue.scheduled)


def test_an_order_whose_row_another_instance_wrote_is_looked_at_in_its_held_index(bridge, monkeypatch):
    held_consumptions(bridge, 2, 3)
    assert deliver(bridge, "output_reported", message("output_reported", "m-4", sequence=4)).outcome is Outcome.WAITING
    start(bridge)
    # What this process knows of the index is of a row the order no longer has: it is not used.
    bridge.ports.recent.looked("USMF", ORDER, "an older ETag", [])
    looks = counted_held_looks(bridge, monkeypatch)
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    assert looks == [2]  # m-3 and m-4 (m-2 is claimed by then), for the group and the wake-up alike
    assert row(bridge, "m-3").state is State.FORWARDED
    assert any(c.message_id.startswith("m-4|wake-") for c in bridge.requeue.scheduled)


def test_a_message_held_while_f_and_o_has_the_group_is_woken_all_the_same(bridge, monkeypatch):
    held_consumptions(bridge, 2, 3)
    start(bridge)
    send = bridge.fo.send_message

    def arrives_meanwhile(*args: Any) -> None:  # after the group's claim and before its forward is recorded
        send(*args)
        assert deliver(bridge, "output_reported", message("output_reported", "m-4", sequence=4)).outcome is Outcome.WAITING

    monkeypatch.setattr(bridge.fo, "send_message", arrives_meanwhile)
    looks = counted_held_looks(bridge, monkeypatch)
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    # This process noted m-4's wait on the order's row: the forward moves on from that row, and the
    # wake-up knows m-4 without a query.
    assert looks == []
    assert any(c.message_id.startswith("m-4|wake-") for c in bridge.requeue.scheduled)


def test_a_message_another_instance_held_while_f_and_o_had_the_group_is_woken_all_the_same(bridge, monkeypatch):
    held_consumptions(bridge, 2, 3)
    start(bridge)
    send = bridge.fo.send_message

    def arrives_elsewhere(*args: Any) -> None:
        send(*args)
        assert deliver(bridge, "output_reported", message("output_reported", "m-4", sequence=4)).outcome is Outcome.WAITING
        # As another instance's wait would be: this process knows nothing of it.
        bridge.gate.forget("USMF", ORDER)
        bridge.ports.recent.looked("USMF", ORDER, "another instance's ETag", [])

    monkeypatch.setattr(bridge.fo, "send_message", arrives_elsewhere)
    looks = counted_held_looks(bridge, monkeypatch)
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    # The wait noted on the order's row moved it under the forward: the wake-up looked again.
    assert looks == [1]  # m-4
    assert any(c.message_id.startswith("m-4|wake-") for c in bridge.requeue.scheduled)


def test_the_look_again_copies_of_a_merged_message_s_members_are_answered_without_reading_the_ledger(bridge, monkeypatch):
    ids = held_consumptions(bridge, 2, 3, 4)
    start(bridge)
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    monkeypatch.setattr(bridge.ledger, "get", lambda company, message_id: pytest.fail(f"read {message_id}"))
    for message_id in ids:
        # Each waited, so each has its own look-again copy on the queue, scheduled when it waited.
        [copy] = [
            c for c in bridge.requeue.scheduled if c.message_id.startswith(f"{message_id}|") and "|wake-" not in c.message_id
        ]
        result = again(bridge, copy)
        assert result.outcome is Outcome.DUPLICATE and result.detail == "already Forwarded"
    assert len([c for c in bridge.fo.calls if c.what == "ProdProductionOrderPickingList"]) == 1


def test_a_message_that_never_waited_is_sent_alone_without_a_look_in_the_ledger(bridge):
    start(bridge)
    assert deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2)).outcome is Outcome.FORWARDED
    assert row(bridge, "m-2").extra.get("FoMessage") is None and len(bridge.fo.calls) == 2


def test_a_send_f_and_o_s_budget_would_hold_steps_aside_once_and_its_copy_takes_along_what_came_behind_it(bridge):
    bridge.fo.budget_wait = 2.0  # F&O's budget is spent for the next 2 s
    start(bridge)  # a start carries no lines: it never steps aside
    result = deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2))
    # Its successors are still in the broker, on its session: it gives its turn back for them.
    assert result.outcome is Outcome.WAITING and result.reason == NotParked.ORDERING and "budget" in result.detail
    assert [c.what for c in bridge.fo.calls] == ["ProdProductionOrderStart"]
    assert row(bridge, "m-2").state is State.WAITING
    [copy] = [c for c in bridge.requeue.scheduled if c.message_id.startswith("m-2|")]
    assert copy.delay_s == 0  # at once, behind what its session holds
    ids = ["m-2", *held_consumptions(bridge, 3, 4)]
    # Its copy waits for the budget this time, and takes along what waits behind it.
    assert again(bridge, copy).outcome is Outcome.FORWARDED
    [picking] = [c for c in bridge.fo.calls if c.what == "ProdProductionOrderPickingList"]
    assert len(picking.body["content"]["PickingListLines"]) == 6
    for message_id in ids:
        assert row(bridge, message_id).extra["FoMessage"]["Members"] == ids
    assert bridge.gate.read("USMF", ORDER).watermark == 4


def test_the_copy_of_a_send_that_stepped_aside_starts_from_the_row_it_wrote(bridge, monkeypatch):
    bridge.fo.budget_wait = 2.0
    start(bridge)
    deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2))
    [copy] = [c for c in bridge.requeue.scheduled if c.message_id.startswith("m-2|")]
    monkeypatch.setattr(bridge.ledger, "get", lambda company, message_id: pytest.fail(f"read {message_id}"))
    assert again(bridge, copy).outcome is Outcome.FORWARDED
    monkeypatch.undo()
    assert row(bridge, "m-2").state is State.FORWARDED


def test_a_send_that_finds_f_and_o_s_budget_spent_once_it_waited_goes_and_does_not_step_aside_again(bridge):
    held_consumptions(bridge, 2)
    start(bridge)
    bridge.fo.budget_wait = 2.0
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    assert row(bridge, "m-2").extra.get("FoMessage") is None


def test_with_merging_off_each_message_goes_alone():
    bridge = fake_bridge(
        fo_rows={HEADERS: [{"dataAreaId": "usmf", "ProductionOrderNumber": ORDER, "ProductionOrderStatus": "Released"}]},
        FO_MERGE_MAX_MESSAGES="1",
    )
    held_consumptions(bridge, 2, 3)
    start(bridge)
    woken(bridge, "m-2")
    assert [c.what for c in bridge.fo.calls] == ["ProdProductionOrderStart", "ProdProductionOrderPickingList"]
    assert row(bridge, "m-3").state is State.WAITING


def test_a_merged_message_f_and_o_refuses_is_split_the_first_goes_alone_and_the_others_never_merge_again(bridge):
    held_consumptions(bridge, 2, 3, 4)
    start(bridge)
    bridge.fo.answer(BusinessRejection("F&O rejected POST (HTTP 400)", infolog="no"), None)
    result = woken(bridge, "m-2")
    assert result.outcome is Outcome.FORWARDED
    refused, alone = bridge.fo.calls[1:]
    assert len(refused.body["content"]["PickingListLines"]) == 6 and len(alone.body["content"]["PickingListLines"]) == 2
    assert row(bridge, "m-2").extra.get("FoMessage") is None and row(bridge, "m-2").state is State.FORWARDED
    for message_id in ("m-3", "m-4"):
        entry = row(bridge, message_id)
        assert entry.state is State.WAITING and entry.extra["MergeRefused"] and "FoMessage" not in entry.extra
    # The next goes alone when woken, although the one after it waits too.
    assert woken(bridge, "m-3").outcome is Outcome.FORWARDED
    assert len(bridge.fo.calls[-1].body["content"]["PickingListLines"]) == 2


def test_a_transient_fault_undoes_the_group_and_the_retry_merges_again(bridge):
    held_consumptions(bridge, 2, 3)
    start(bridge)
    bridge.fo.answer(Transient("F&O answered 503"))
    assert woken(bridge, "m-2").outcome is Outcome.RETRYING
    assert row(bridge, "m-2").state is State.WAITING and row(bridge, "m-3").state is State.WAITING
    assert "FoMessage" not in row(bridge, "m-3").extra
    retry = next(c for c in reversed(bridge.requeue.scheduled) if c.message_id.startswith("m-2|"))
    assert again(bridge, retry).outcome is Outcome.FORWARDED
    assert len(bridge.fo.applied[-1].body["content"]["PickingListLines"]) == 4
    assert row(bridge, "m-3").state is State.FORWARDED


def test_a_merged_message_in_doubt_parks_every_member_indexed_by_the_merged_content(bridge):
    ids = held_consumptions(bridge, 2, 3)
    start(bridge)
    bridge.fo.answer(InDoubt("no answer from F&O after sending (ReadTimeout)"))
    result = woken(bridge, "m-2")
    assert result.outcome is Outcome.PARKED and result.reason == ParkReason.IN_DOUBT
    merged_hash = row(bridge, "m-2").extra["ContentHash"]
    for message_id in ids:
        entry = row(bridge, message_id)
        assert (entry.state, entry.reason) == (State.PARKED, ParkReason.IN_DOUBT)
        assert entry.extra["ContentHash"] == merged_hash and entry.extra["Lineage"]
    assert bridge.ledger.messages_with_content("USMF", merged_hash) == ids


def test_a_processed_event_that_finds_a_merged_message_still_forwarding_settles_every_member_with_its_genealogy(bridge):
    from shared.outbound.handlers import message_processed
    from tests.unit.test_outbound_settlement import processed

    ids = held_consumptions(bridge, 2, 3)
    start(bridge)
    # The worker stops after F&O took the merged message and before it recorded the answer.
    bridge.fo.answer(RuntimeError("the worker stopped"))
    with pytest.raises(RuntimeError):
        woken(bridge, "m-2")
    assert [row(bridge, m).state for m in ids] == [State.FORWARDING] * 2
    [merged] = [c for c in bridge.fo.calls if c.what == "ProdProductionOrderPickingList"]
    content = message_content(merged.body["content"])
    handled = message_processed(processed(content, MessageType="ProdProductionOrderPickingList"), bridge.ports)
    assert handled.detail.count("Processed") == 2
    assert [row(bridge, m).state for m in ids] == [State.PROCESSED] * 2
    # Each member's outcome to MES, and each member's genealogy (kept in its row since the claim).
    outcomes = [json.loads(e.body)["mes_message_id"] for e in bridge.publisher.sent]
    assert sorted(outcomes) == ids
    assert {ref.item for ref in bridge.lineage.batches_of_order("USMF", ORDER, "consumed")} == {"RM-0001", "RM-0007"}
    assert bridge.gate.read("USMF", ORDER).watermark == 3


def test_the_redelivered_processed_event_of_a_merged_message_finishes_the_members_a_stopped_handler_left(bridge):
    from shared.outbound.handlers import Handling, message_processed
    from tests.unit.test_outbound_settlement import processed

    ids = held_consumptions(bridge, 2, 3)
    start(bridge)
    assert woken(bridge, "m-2").outcome is Outcome.FORWARDED
    [merged] = [c for c in bridge.fo.calls if c.what == "ProdProductionOrderPickingList"]
    event = processed(message_content(merged.body["content"]), MessageType="ProdProductionOrderPickingList")
    sent_before = len(bridge.publisher.sent)
    original = bridge.publisher.publish
    calls = 0

    def second_send_fails(message):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the MES topic refused the send")
        original(message)

    bridge.publisher.publish = second_send_fails
    with pytest.raises(RuntimeError):
        message_processed(event, bridge.ports)
    assert [row(bridge, m).state for m in ids] == [State.PROCESSED, State.FORWARDED]
    # Event Grid delivers the event again: the member left open is settled, the other is not touched twice.
    handled = message_processed(event, bridge.ports)
    assert handled.outcome is Handling.MATCHED
    assert [row(bridge, m).state for m in ids] == [State.PROCESSED] * 2
    outcomes = [json.loads(e.body)["mes_message_id"] for e in bridge.publisher.sent[sent_before:]]
    assert sorted(outcomes) == ids
    assert message_processed(event, bridge.ports).outcome is Handling.DUPLICATE


# --- Table Storage failing under a delivery ------------------------------------------------------


def storage_down(bridge: FakeBridge, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise Transient("Table Storage unreachable during ledger create: ServiceRequestError")

    for name in ("get", "create", "transition"):
        monkeypatch.setattr(bridge.ledger, name, unreachable)


def test_a_message_arriving_while_table_storage_fails_comes_back_later_instead_of_burning_its_deliveries(bridge, monkeypatch):
    settings = bridge.ports.settings
    start(bridge)
    body = message("material_consumed", "mc-1", sequence=2)
    with monkeypatch.context() as patched:
        storage_down(bridge, patched)
        first = deliver(bridge, "material_consumed", body)  # returns: the broker completes it, no redelivery now
        second = again(bridge, bridge.requeue.scheduled[-1])
    assert (first.outcome, first.reason, first.message_id) == (Outcome.RETRYING, NotParked.TRANSIENT, "mc-1")
    assert second.outcome is Outcome.RETRYING
    copies = bridge.requeue.scheduled[-2:]
    assert [c.delay_s for c in copies] == [settings.retry_first_wait_s, 2 * settings.retry_first_wait_s]
    assert [c.message_id for c in copies] == ["mc-1|storage-1", "mc-1|storage-2"]
    # Read as the MES's own message still (a changed copy under a used id is still caught), same session.
    assert ATTEMPT not in copies[-1].properties and copies[-1].session_id == ORDER and copies[-1].body == body
    assert bridge.ledger.get("USMF", "mc-1") is None and len(bridge.fo.calls) == 1
    back = again(bridge, copies[-1])  # Table Storage is back
    assert back.outcome is Outcome.FORWARDED and len(bridge.fo.calls) == 2 and row(bridge, "mc-1").state is State.FORWARDED


def test_table_storage_failing_past_the_retry_window_leaves_the_message_to_the_broker(bridge, monkeypatch):
    start(bridge)
    with monkeypatch.context() as patched:
        storage_down(bridge, patched)
        deliver(bridge, "material_consumed", message("material_consumed", "mc-1", sequence=2))
        bridge.clock.advance(bridge.ports.settings.retry_give_up_after_s + 1)
        # The broker's delivery count, then its dead-letter queue, keep it with the reason.
        with pytest.raises(Transient, match="Table Storage unreachable"):
            again(bridge, bridge.requeue.scheduled[-1])


def test_a_wait_after_a_storage_outage_counts_the_next_outage_afresh(bridge, monkeypatch):
    with monkeypatch.context() as patched:
        storage_down(bridge, patched)
        deliver(bridge, "material_consumed", message("material_consumed", "mc-1", sequence=2))
    waits = again(bridge, bridge.requeue.scheduled[-1])  # storage back; the start has not come: it waits
    assert waits.outcome is Outcome.WAITING
    assert not {"mesbridge-storage-failing-since", "mesbridge-storage-retries"} & set(bridge.requeue.scheduled[-1].properties)
