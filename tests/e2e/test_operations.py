"""Operations against the local stack: HTTP and CLI agree, a fixed message takes effect once."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

import function_app
from devtools import mes
from devtools.operator_cases import rejected_move
from functions import console
from functions import inventory_moved as inventory_fn
from functions import material_consumed as consumed_fn
from functions import operations_http as http
from functions import production_started as started_fn
from functions.operations_actions import ACTIONS
from shared.ops import cli
from shared.ops.principal import OPERATOR_ROLE, encode_principal
from shared.store.ledger import LedgerEntry, State

pytestmark = pytest.mark.e2e


def trigger(document: dict[str, Any] | bytes) -> ServiceBusMessage:
    body = document if isinstance(document, bytes) else mes.encode(document)
    session = document.get("production_order", "x") if isinstance(document, dict) else "x"
    return ServiceBusMessage(
        body=body,
        message_id=uuid.uuid4().hex,
        session_id=session or "x",
        delivery_count=1,
        enqueued_time_utc=datetime.now(UTC),
        application_properties={},
        user_properties={},
    )


def request(
    method: str,
    route: str,
    params: dict[str, str],
    body: Any = None,
    headers: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    # A caller may set any header it likes: x-operator must not name the operator in the audit trail.
    sent = {"x-operator": "mallory", **(headers or {})}
    return func.HttpRequest(
        method=method, url=f"http://localhost/api/{route}", params=params, body=raw, headers=sent, route_params=route_params
    )


def call_cli(stack, *argv: str) -> Any:
    out = io.StringIO()
    cli.main(list(argv), ports=stack.ports, out=out)
    return json.loads(out.getvalue())


def test_http_and_cli_answers_agree(stack):
    started_fn.production_started(trigger(mes.event("production_started", "P000041", {}, sequence=1)))
    consumed_fn.material_consumed(
        trigger(
            mes.event(
                "material_consumed",
                "P000041",
                {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-003", "quantity": 2}]},
                sequence=2,
            )
        )
    )
    move = rejected_move()
    inventory_fn.inventory_moved(trigger(move))
    consumed_fn.material_consumed(trigger(b"not json"))

    pairs = [
        (
            http.trace_message(request("GET", "ops/message", {"company": "USMF", "id": move["message_id"]})),
            call_cli(stack, "trace", "--company", "USMF", "--id", move["message_id"]),
        ),
        (
            http.trace_order(request("GET", "ops/order", {"company": "USMF", "order": "P000041"})),
            call_cli(stack, "order", "--company", "USMF", "--order", "P000041"),
        ),
        (
            http.list_parked(request("GET", "ops/parked", {"reason": "rejected"})),
            call_cli(stack, "parked", "--reason", "rejected"),
        ),
        (
            http.lineage(
                request(
                    "GET", "ops/lineage", {"company": "USMF", "item": "RM-0001", "batch": "B0001-003", "direction": "downstream"}
                )
            ),
            call_cli(
                stack, "lineage", "--company", "USMF", "--item", "RM-0001", "--batch", "B0001-003", "--direction", "downstream"
            ),
        ),
    ]
    for response, from_cli in pairs:
        assert response.status_code == 200
        assert json.loads(response.get_body()) == from_cli
    story = call_cli(stack, "order", "--company", "USMF", "--order", "P000041")
    assert [row["sequence"] for row in story] == [1, 2] and all(row["state"] == "Forwarded" for row in story)
    [rejected] = call_cli(stack, "parked", "--reason", "rejected")
    assert "Warehouse 99 does not belong to site 1" in rejected["infolog"]
    assert [h["state"] for h in rejected["history"]] == ["Forwarding", "Parked"]
    assert len(call_cli(stack, "parked")) == 2
    assert (
        call_cli(stack, "lineage", "--company", "USMF", "--item", "RM-0001", "--batch", "B0001-003", "--direction", "downstream")[
            "root"
        ]["orders"][0]["order"]
        == "P000041"
    )
    missing = http.trace_message(request("GET", "ops/message", {"company": "USMF", "id": "nope"}))
    assert missing.status_code == 404


def test_a_fixed_and_resubmitted_message_takes_effect_exactly_once(stack):
    move = rejected_move()
    inventory_fn.inventory_moved(trigger(move))
    fixed = {**move, "body": {**move["body"], "from_warehouse": "11"}}
    for _ in range(2):  # an impatient operator presses twice
        response = http.resubmit(
            request("POST", "ops/resubmit", {"company": "USMF", "id": move["message_id"]}, mes.encode(fixed))
        )
        assert response.status_code == 202
    with stack.host:
        assert stack.host.wait_idle(30)
    entry = stack.ports.ledger.get("USMF", move["message_id"])
    assert entry.state is State.FORWARDED and entry.extra["EditedBy"] == "function key"  # not x-operator's "mallory"
    assert len(stack.emulator.app.tables["InventoryTransferJournalHeaders"]) == 1
    assert stack.ports.ledger.payload("USMF", move["message_id"]) == mes.encode(move)  # the original is kept for audit
    again = http.resubmit(request("POST", "ops/resubmit", {"company": "USMF", "id": move["message_id"]}))
    assert again.status_code == 400 and "only parked messages" in json.loads(again.get_body())["error"]


def test_resubmit_by_filter_and_cancel_with_a_reason(stack):
    first, second = rejected_move(), rejected_move()
    for document in (first, second):
        inventory_fn.inventory_moved(trigger(document))
    cancelled = http.cancel(
        request("POST", "ops/cancel", {"company": "USMF", "id": first["message_id"]}, {"reason": "sent by mistake"})
    )
    assert json.loads(cancelled.get_body())["state"] == "Cancelled"
    refused = http.cancel(request("POST", "ops/cancel", {"company": "USMF", "id": second["message_id"]}, {}))
    assert refused.status_code == 400 and "reason" in json.loads(refused.get_body())["error"]
    dry = json.loads(http.resubmit(request("POST", "ops/resubmit", {}, {"reason": "rejected", "dry_run": True})).get_body())
    assert dry["count"] == 1 and [m["message_id"] for m in dry["messages"]] == [second["message_id"]]
    resubmitted = json.loads(http.resubmit(request("POST", "ops/resubmit", {}, {"reason": "rejected", "expect": 1})).get_body())
    assert [r["message_id"] for r in resubmitted["done"]] == [second["message_id"]]


def park_in_doubt(stack, order: str = "P000043") -> dict[str, Any]:
    """A consumption parked in doubt, as the pipeline leaves one whose send got no answer."""
    document = mes.event(
        "material_consumed",
        order,
        {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-003", "quantity": 2.5}]},
        sequence=2,
    )
    entry = LedgerEntry(
        company="USMF",
        message_id=document["message_id"],
        state=State.PARKED,
        flow="material_consumed",
        reason="in_doubt",
        detail="no answer from F&O; check F&O before resubmitting",
        production_order=order,
        sequence=2,
    )
    stack.ports.ledger.create(entry, payload=mes.encode(document))
    return document


def bulk(route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    handler = http.resubmit if route == "ops/resubmit" else http.cancel
    response = handler(request("POST", route, {}, body))
    return response.status_code, json.loads(response.get_body())


def test_a_bulk_action_needs_a_filter_a_dry_run_count_and_a_named_flag_for_in_doubt_rows(stack):
    doubtful = park_in_doubt(stack)
    rejected = rejected_move()
    inventory_fn.inventory_moved(trigger(rejected))

    status, empty = bulk("ops/resubmit", {})
    assert status == 400 and "empty filter selects nothing" in empty["error"]
    status, empty = bulk("ops/cancel", {"cancel_reason": "clean up"})
    assert status == 400 and "empty filter selects nothing" in empty["error"]

    status, dry = bulk("ops/resubmit", {"company": "USMF", "dry_run": True})
    assert status == 202 and dry["count"] == 1 and dry["messages"][0]["message_id"] == rejected["message_id"]
    assert dry["left_out"] == [
        {"company": "USMF", "message_id": doubtful["message_id"], "why": "in doubt (include_in_doubt not set)"}
    ]
    assert "1 message(s) will be resubmitted (inventory_moved 1)" in dry["summary"]
    status, blind = bulk("ops/resubmit", {"company": "USMF"})
    assert status == 400 and "expect" in blind["error"]
    status, stale = bulk("ops/resubmit", {"company": "USMF", "expect": 2})
    assert status == 400 and "the selection changed: 1 message(s) now, 2 expected" in stale["error"]
    assert stack.ports.ledger.get("USMF", doubtful["message_id"]).extra.get("Resubmissions") is None  # nothing moved yet

    status, named = bulk("ops/resubmit", {"reason": "in_doubt", "dry_run": True, "include_in_doubt": True})
    assert named["count"] == 1 and named["messages"][0]["message_id"] == doubtful["message_id"]
    status, done = bulk("ops/resubmit", {"company": "USMF", "expect": 1})
    assert status == 202 and [d["message_id"] for d in done["done"]] == [rejected["message_id"]]
    assert stack.ports.ledger.get("USMF", doubtful["message_id"]).extra.get("Resubmissions") is None

    ids = [{"company": "USMF", "message_id": doubtful["message_id"]}]
    status, ticked = bulk("ops/cancel", {"ids": ids, "cancel_reason": "F&O has it twice", "dry_run": True})
    assert ticked["count"] == 0 and ticked["left_out"][0]["why"] == "in doubt (include_in_doubt not set)"
    status, ticked = bulk("ops/cancel", {"ids": ids, "cancel_reason": "F&O has it twice", "include_in_doubt": True, "expect": 1})
    assert status == 200 and ticked["done"][0]["state"] == "Cancelled"
    assert "F&O has it twice" in ticked["done"][0]["detail"]


def test_an_edited_resubmission_may_not_change_message_id_company_or_order(stack):
    parked = park_in_doubt(stack, order="P000044")
    params = {"company": "USMF", "id": parked["message_id"]}
    fixed_line = {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-003", "quantity": 2.0}]}
    for field, value in (("message_id", "someone-else-1"), ("company", "DEMF"), ("production_order", "P000045")):
        edited = {**parked, field: value, "body": fixed_line}
        response = http.resubmit(request("POST", "ops/resubmit", params, mes.encode(edited)))
        assert response.status_code == 400, field
        assert "may not change the" in json.loads(response.get_body())["error"]
    assert stack.ports.ledger.get("USMF", parked["message_id"]).extra.get("Resubmissions") is None
    same_company_in_lower_case = {**parked, "company": "usmf", "body": fixed_line}
    response = http.resubmit(request("POST", "ops/resubmit", params, mes.encode(same_company_in_lower_case)))
    assert response.status_code == 202
    assert stack.ports.ledger.get("USMF", parked["message_id"]).extra["EditedBy"] == "function key"


def test_the_operator_is_the_principal_app_service_validated_never_a_header(stack, monkeypatch):
    move = rejected_move()
    inventory_fn.inventory_moved(trigger(move))
    signed_in = {"x-ms-client-principal": encode_principal("ada@contoso.com", [OPERATOR_ROLE])}
    # Without App Service authentication in front, a principal header is just another header anyone can send.
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    cancel_params = {"company": "USMF", "id": move["message_id"]}
    refused = console.console_api(
        request("GET", "console-api/overview", {}, headers=signed_in, route_params={"action": "overview"})
    )
    assert refused.status_code == 401
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")
    assert console.console_api(request("GET", "console-api/overview", {}, route_params={"action": "overview"})).status_code == 401
    no_role = {"x-ms-client-principal": encode_principal("eve@contoso.com", [])}
    forbidden = console.console_api(
        request("POST", "console-api/cancel", cancel_params, {"reason": "x"}, headers=no_role, route_params={"action": "cancel"})
    )
    assert forbidden.status_code == 403 and "MesBridge.Operator" in json.loads(forbidden.get_body())["error"]
    forged = console.console_api(
        request(
            "POST", "console-api/cancel", cancel_params, {"reason": "x"}, headers=signed_in, route_params={"action": "cancel"}
        )
    )
    assert forged.status_code == 403  # no x-requested-with: a cross-site form post
    done = console.console_api(
        request(
            "POST",
            "console-api/cancel",
            cancel_params,
            {"reason": "sent by mistake"},
            headers={**signed_in, "x-requested-with": "mes-bridge-console"},
            route_params={"action": "cancel"},
        )
    )
    assert done.status_code == 200, done.get_body()
    assert json.loads(done.get_body())["detail"] == "cancelled by ada@contoso.com: sent by mistake"
    assert "default-src 'none'" in done.headers["Content-Security-Policy"]


def test_health_reports_every_check(stack):
    response = http.health(request("GET", "ops/health", {}))
    report = json.loads(response.get_body())
    assert response.status_code == 200 and report["ok"], report
    assert [c["name"] for c in report["checks"]] == ["settings", "token", "fo", "table_storage", "service_bus"]
    stack.emulator.entra.apps[stack.ports.settings.fo_client_id].registered_in_fo = False
    broken = json.loads(http.health(request("GET", "ops/health", {})).get_body())
    assert not broken["ok"] and not next(c for c in broken["checks"] if c["name"] == "fo")["ok"]


def test_every_operation_needs_a_function_key_and_only_the_console_is_anonymous():
    from devtools.local_host.host import discover

    discover(function_app.app)  # indexes the app once
    triggers: list[Any] = [builder._function._trigger for builder in function_app.app._function_builders]
    http_triggers = {t.route: t for t in triggers if t is not None and t.type == "httpTrigger"}
    ops = {route for route in http_triggers if route.startswith("ops/")}
    assert ops == {f"ops/{name}" for name in ACTIONS}
    assert all(http_triggers[r].auth_level == func.AuthLevel.FUNCTION for r in ops)  # the host refuses calls without a key
    # The console sits behind App Service authentication and checks the operator role itself.
    assert set(http_triggers) - ops == {"console/{*path}", "console-api/{*action}"}


def test_dead_lettered_messages_are_listed_and_resubmitted(stack):
    document = mes.event("production_started", "P000042", {}, sequence=1)
    flow_queue = "mes-production-started"
    stack.broker.send(flow_queue, mes.encode(document), session_id="P000042")
    session, token = stack.broker.accept_session(flow_queue)
    lease = stack.broker.receive(flow_queue, session, token)
    stack.broker.dead_letter(lease, "MaxDeliveryCountExceeded", "delivered 10 times")
    stack.broker.release_session(flow_queue, session, token)

    listed = json.loads(http.list_dead_lettered(request("GET", "ops/dead-lettered", {})).get_body())
    assert listed == call_cli(stack, "dead-lettered")
    [entry] = listed
    assert (entry["flow"], entry["reason"], entry["message_id"]) == (
        "production_started",
        "MaxDeliveryCountExceeded",
        lease.message.message_id,
    )
    params = {"flow": "production_started", "sequence": str(entry["sequence_number"])}
    response = http.resubmit_dead_lettered(request("POST", "ops/dead-lettered/resubmit", params))
    assert response.status_code == 202 and stack.ports.dead_letters.dead_lettered(flow_queue) == []
    with stack.host:
        assert stack.host.wait_idle(30)
    assert stack.ports.ledger.get("USMF", document["message_id"]).state is State.FORWARDED
    missing = http.resubmit_dead_lettered(
        request("POST", "ops/dead-lettered/resubmit", {"flow": "production_started", "sequence": "999"})
    )
    assert missing.status_code == 404, "no such dead-lettered message is not found, not a bad request"


def test_an_in_doubt_message_found_in_fo_is_confirmed_and_what_waited_behind_it_goes_on(stack):
    emulator = stack.emulator  # no business events here: F&O's processed event never comes
    started_fn.production_started(trigger(mes.event("production_started", "P000043", {}, sequence=1)))
    emulator.set_faults(drop_rate=1.0)
    for attempt in range(20):  # until a dropped connection hides a consumption F&O did apply
        consume = mes.event(
            "material_consumed",
            "P000043",
            {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-004", "quantity": 1.0 + attempt}]},
            sequence=2,
        )
        sends = emulator.app.send_message_calls
        consumed_fn.material_consumed(trigger(consume))
        if emulator.app.send_message_calls > sends:
            break
    emulator.set_faults(drop_rate=0.0)
    assert stack.ports.ledger.get("USMF", consume["message_id"]).reason == "in_doubt"
    refused = json.loads(
        http.confirm_applied(request("POST", "ops/confirm", {"company": "USMF", "id": consume["message_id"]}, {})).get_body()
    )
    assert "needs a note" in refused["error"]

    confirmed = call_cli(
        stack, "confirm", "--company", "USMF", "--id", consume["message_id"], "--note", "processor message 2, Processed"
    )
    assert confirmed["state"] == "Forwarded" and "confirmed in F&O" in confirmed["detail"]
    assert stack.ports.gate.read("USMF", "P000043").watermark == 2
    assert {r.batch for r in stack.ports.lineage.batches_of_order("USMF", "P000043", "consumed")} == {"B0001-004"}
    again = json.loads(
        http.confirm_applied(
            request("POST", "ops/confirm", {"company": "USMF", "id": consume["message_id"]}, {"note": "twice"})
        ).get_body()
    )
    assert "only in-doubt messages" in again["error"]
