"""The F&O client's contract, as the pipeline, the in-doubt check and the business-event handlers rely
on it, run against the real `FoClient` over HTTP to the F&O emulator and against `FakeFo`
(tests/fakes.py): each case arranges the same situation in both (F&O rejects the content, does not
answer a send, is down, does not know the app) and asserts the same classification, so what the
unit tests script is what the client raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from shared.errors import AuthError, BusinessRejection, InDoubt, NotFound, Transient
from shared.fo import odata
from shared.fo.client import BatchOperation, FoApi
from shared.fo.production_order import HEADERS
from shared.inbound import in_doubt
from shared.inbound.order_gate import Step
from shared.settings import load_settings
from tests.conftest import bridge_env, make_client
from tests.fakes import FakeFo

#: What F&O says when a picking list line names no item (the emulator's check, as F&O's validation).
NO_ITEM = "ItemNumber must be filled in"
REJECTED = ("ProdProductionOrderPickingList", {"ProductionOrderNumber": "P000001", "PickingListLines": [{}]})
START = ("ProdProductionOrderStart", {"ProductionOrderNumber": "P000001"})


@dataclass
class World:
    """F&O and a way to put it in each situation, real (the emulator) or fake."""

    fo: FoApi
    emulator: Any = None
    settings: Any = None

    def rejecting_next(self) -> None:
        if self.emulator is None:
            assert isinstance(self.fo, FakeFo)
            self.fo.answer(BusinessRejection(f"F&O rejected POST (HTTP 400): {NO_ITEM}", infolog=NO_ITEM, status=400))

    def header_exists_on_the_second_batch(self) -> None:
        if self.emulator is None:
            assert isinstance(self.fo, FakeFo)
            exists = BusinessRejection(
                "$batch operation 1 failed: F&O rejected POST /data/$batch (HTTP 400): the record already exists",
                infolog="Cannot create a record in Journal table (InventJournalTable). The record already exists.",
                status=400,
            )
            exists.operation = "1"
            self.fo.answer(None, exists)

    def not_answering(self) -> None:
        if self.emulator is not None:
            self.emulator.set_faults(drop_rate=1.0)
        else:
            assert isinstance(self.fo, FakeFo)
            self.fo.answer(InDoubt("no answer from F&O after sending (ConnectionError); it may have been applied"))
            self.fo.fail_reads(Transient("F&O connection failed: ConnectionError"))

    def down(self) -> None:
        if self.emulator is not None:
            self.emulator.set_faults(error_5xx_rate=1.0)
        else:
            assert isinstance(self.fo, FakeFo)
            self.fo.answer(Transient("F&O unavailable (HTTP 503)", status=503))
            self.fo.fail_reads(Transient("F&O unavailable (HTTP 503)", status=503))

    def app_unknown_to_fo(self) -> None:
        if self.emulator is not None:
            self.emulator.entra.apps[self.settings.fo_client_id].registered_in_fo = False
        else:
            assert isinstance(self.fo, FakeFo)
            self.fo.token_error = AuthError("F&O refused the token (401)", status=401)

    def order_status(self, order: str, status: str) -> None:
        if self.emulator is not None:
            self.emulator.app.change_status("usmf", order, status)
        else:
            assert isinstance(self.fo, FakeFo)
            [row] = [r for r in self.fo.rows[HEADERS] if (r["dataAreaId"], r["ProductionOrderNumber"]) == ("usmf", order)]
            row["ProductionOrderStatus"] = status


def fake_rows() -> dict[str, list[dict[str, Any]]]:
    def header(company: str, order: str, status: str) -> dict[str, Any]:
        return {"dataAreaId": company, "ProductionOrderNumber": order, "ProductionOrderStatus": status, "ItemNumber": "FG-0001"}

    return {
        HEADERS: [
            header("usmf", "P000001", "Released"),
            header("usmf", "P000002", "Released"),
            header("demf", "P000001", "Released"),
        ]
    }


@pytest.fixture(params=["memory", pytest.param("emulator", marks=pytest.mark.integration)])
def world(request) -> World:
    if request.param == "memory":
        return World(FakeFo(fake_rows()))
    emulator, azurite, prefix = (request.getfixturevalue(name) for name in ("emulator", "azurite", "table_prefix"))
    settings = load_settings(bridge_env(emulator, azurite, prefix, FO_CALL_DEADLINE_S="1"))
    emulator.app.change_status("usmf", "P000001", "Released")
    emulator.app.change_status("usmf", "P000002", "Released")
    return World(make_client(settings)[0], emulator, settings)


def test_an_accepted_send_returns(world):
    world.fo.send_message("USMF", *START)


def test_content_f_and_o_refuses_is_a_business_rejection_with_its_infolog(world):
    world.rejecting_next()
    with pytest.raises(BusinessRejection) as caught:
        world.fo.send_message("USMF", *REJECTED)
    assert NO_ITEM in caught.value.infolog and NO_ITEM in caught.value.message
    assert not isinstance(caught.value, Transient)  # the pipeline parks it; a retry changes nothing


def test_a_changeset_whose_header_exists_names_its_first_operation(world):
    # The pipeline reads this as "an earlier attempt was applied" (changesets are atomic).
    header = {"dataAreaId": "usmf", "JournalNumber": "MES-C1", "JournalNameId": "ITrf"}
    world.header_exists_on_the_second_batch()
    assert [r.status for r in world.fo.batch([BatchOperation("POST", "InventoryTransferJournalHeaders", header)])] == [201]
    with pytest.raises(BusinessRejection) as caught:
        world.fo.batch([BatchOperation("POST", "InventoryTransferJournalHeaders", header)])
    assert caught.value.operation == "1" and "already exists" in caught.value.infolog


def test_a_send_without_an_answer_is_in_doubt_and_a_read_without_one_is_transient(world):
    world.not_answering()
    with pytest.raises(InDoubt) as caught:
        world.fo.send_message("USMF", *START)
    assert isinstance(caught.value, Transient)  # an InDoubt is a Transient the pipeline must not blindly retry
    with pytest.raises(Transient) as read:
        list(world.fo.query(HEADERS, company="USMF"))
    assert not isinstance(read.value, InDoubt)


def test_f_and_o_down_is_transient_for_sends_and_reads_never_in_doubt(world):
    world.down()
    with pytest.raises(Transient) as sent:
        world.fo.send_message("USMF", *START)
    assert not isinstance(sent.value, InDoubt) and sent.value.status == 503
    with pytest.raises(Transient) as read:
        list(world.fo.query(HEADERS, company="USMF"))
    assert not isinstance(read.value, InDoubt)


def test_an_app_f_and_o_does_not_know_is_an_auth_error_on_every_call(world):
    world.app_unknown_to_fo()
    with pytest.raises(AuthError) as sent:
        world.fo.send_message("USMF", *START)
    assert sent.value.status == 401
    with pytest.raises(AuthError):
        list(world.fo.query(HEADERS, company="USMF"))


def test_a_query_reads_the_company_s_matching_rows_with_the_selected_fields(world):
    select = ("dataAreaId", "ProductionOrderNumber", "ProductionOrderStatus")
    rows = list(world.fo.query(HEADERS, company="USMF", where=odata.eq("ProductionOrderNumber", "P000001"), select=select))
    assert rows == [{"dataAreaId": "usmf", "ProductionOrderNumber": "P000001", "ProductionOrderStatus": "Released"}]
    assert list(world.fo.query(HEADERS, company="USMF", where=odata.eq("ProductionOrderNumber", "P0'9*"))) == []
    assert {r["dataAreaId"] for r in world.fo.query(HEADERS, company="DEMF", select=select)} == {"demf"}
    assert len(list(world.fo.query(HEADERS, company="USMF", top=1))) == 1


def test_get_by_key_and_not_found(world):
    row = world.fo.get(HEADERS, {"dataAreaId": "usmf", "ProductionOrderNumber": "P000002"})
    assert row["ProductionOrderNumber"] == "P000002"
    with pytest.raises(NotFound):
        world.fo.get(HEADERS, {"dataAreaId": "usmf", "ProductionOrderNumber": "P0'9*"})


@pytest.mark.parametrize(
    ("step", "status", "applied"),
    [
        (Step.START, "Released", False),
        (Step.START, "StartedUp", True),
        (Step.START, "Completed", True),
        (Step.END, "ReportedFinished", False),
        (Step.END, "Completed", True),
    ],
)
def test_the_in_doubt_check_reads_the_order_s_status(world, step, status, applied):
    for reached in ("StartedUp", "ReportedFinished", "Completed"):
        if status == "Released":
            break
        world.order_status("P000001", reached)
        if reached == status:
            break
    reading = in_doubt.read(world.fo, "USMF", step, "P000001")
    assert reading.applied is applied and reading.checked.endswith(f"ProductionOrderStatus = {status}")
    assert in_doubt.read(world.fo, "USMF", step, "P0'9*").checked.endswith("= no such order")
