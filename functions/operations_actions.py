"""The operations themselves: each is one entry of `ACTIONS`, which functions/operations_http.py
(`/api/ops/<name>`, function keys) and functions/console.py (`/api/console-api/<name>`, signed-in
operators) route requests to. Imported on the first such request, not at a cold start."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared import runtime
from shared.ops import operations
from shared.ops.health import health as health_of
from shared.ops.principal import operator_of


@dataclass(frozen=True)
class Action:
    method: str
    run: Callable[["Call"], Any]
    status: int = 200


@dataclass(frozen=True)
class Call:
    req: func.HttpRequest
    who: str  # the operator, for the audit trail


class _Unhealthy(Exception):
    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__("unhealthy")
        self.report = report


def answer(action: Action, req: func.HttpRequest, who: str) -> func.HttpResponse:
    try:
        body = action.run(Call(req, who))
        status = action.status
    except operations.OperationError as exc:
        body, status = operations.error_reply(exc), 404 if isinstance(exc, operations.NoSuchMessage) else 400
    except _Unhealthy as exc:
        body, status = exc.report, 503
    return func.HttpResponse(
        json.dumps(body, default=str),
        status_code=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def key_holder(req: func.HttpRequest) -> str:
    """The operator behind a function-key call: the signed-in principal when App Service
    authentication is on, otherwise only "a function key" can be said (x-operator is not trusted)."""
    operator = operator_of(dict(req.headers))
    return operator.name if operator is not None else "function key"


def _need(req: func.HttpRequest, *names: str) -> list[str]:
    missing = [n for n in names if not req.params.get(n)]
    if missing:
        raise operations.OperationError(f"query parameter(s) {', '.join(missing)} required")
    return [req.params[n] for n in names]


def _body(req: func.HttpRequest) -> dict[str, Any]:
    """The JSON object of the body ({} when empty); an error for anything else."""
    if not req.get_body():
        return {}
    try:
        body = req.get_json()
    except ValueError:
        raise operations.OperationError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise operations.OperationError("the body must be a JSON object")
    return body


def _text(req: func.HttpRequest, name: str) -> str:
    try:
        value = _body(req).get(name, "")
    except operations.OperationError:
        return ""
    return value if isinstance(value, str) else ""


def _selection(body: dict[str, Any]) -> operations.Selection:
    ids = body.get("ids") or []
    if not isinstance(ids, list) or not all(
        isinstance(i, dict) and isinstance(i.get("company"), str) and isinstance(i.get("message_id"), str) for i in ids
    ):
        raise operations.OperationError('ids must be a list of {"company": …, "message_id": …}')
    flag = body.get("include_in_doubt", False)
    if not isinstance(flag, bool):
        raise operations.OperationError("include_in_doubt must be true or false")
    criteria = body.get("filter", body)
    if not isinstance(criteria, dict):
        raise operations.OperationError("filter must be a JSON object")
    return operations.Selection(
        where=operations.parked_filter(criteria),
        ids=tuple((i["company"], i["message_id"]) for i in ids),
        include_in_doubt=flag,
    )


def _bulk(call: Call, action: str) -> Any:
    body = _body(call.req)
    expect = body.get("expect")
    if expect is not None and (not isinstance(expect, int) or isinstance(expect, bool)):
        raise operations.OperationError("expect must be the number of messages the dry run counted")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise operations.OperationError("dry_run must be true or false")
    ports = runtime.ports()
    return operations.bulk(
        ports.ledger,
        ports.requeue,
        _selection(body),
        action,
        dry_run=dry_run,
        expect=expect,
        reason=str(body.get("cancel_reason", "")) if action == "cancel" else "",
        who=call.who,
    )


# --- the operations ---------------------------------------------------------------------------------


def _trace(call: Call) -> Any:
    return operations.trace(runtime.ports().ledger, *_need(call.req, "company", "id"))


def _detail(call: Call) -> Any:
    ports = runtime.ports()
    company, message_id = _need(call.req, "company", "id")
    return operations.message_detail(ports.ledger, company, message_id, options=ports.options)


def _order(call: Call) -> Any:
    return operations.order_story(runtime.ports().ledger, *_need(call.req, "company", "order"))


def _ladder(call: Call) -> Any:
    ports = runtime.ports()
    return operations.order_view(ports.ledger, ports.gate, *_need(call.req, "company", "order"))


def _parked(call: Call) -> Any:
    return operations.parked(runtime.ports().ledger, operations.parked_filter(dict(call.req.params)))


def _dead_lettered(call: Call) -> Any:
    return operations.dead_lettered(runtime.ports().dead_letters, call.req.params.get("flow") or None)


def _resubmit_dead_lettered(call: Call) -> Any:
    flow, sequence = _need(call.req, "flow", "sequence")
    number = operations.whole_number(sequence, operations.SEQUENCE_REFUSAL)
    return operations.resubmit_dead_lettered(runtime.ports().dead_letters, flow, number)


def _resubmit(call: Call) -> Any:
    """One message (?company=&id=, body = an edited payload, optional; with the other in-doubt members
    of its merged F&O message unless ?alone=true), or a bulk selection
    ({"ids": [...]} or a filter, "dry_run", "expect", "include_in_doubt")."""
    if not call.req.params.get("id"):
        return _bulk(call, "resubmit")
    company, message_id = _need(call.req, "company", "id")
    ports = runtime.ports()
    edited = call.req.get_body() or None
    resubmitted = operations.resubmit(
        ports.ledger, ports.requeue, company, message_id, payload=edited, who=call.who, alone=_alone(call.req)
    )
    return operations.resubmission_reply(resubmitted)


def _cancel(call: Call) -> Any:
    """One message (?company=&id=, body {"reason": ...}), or a bulk selection with "cancel_reason"."""
    if not call.req.params.get("id"):
        return _bulk(call, "cancel")
    company, message_id = _need(call.req, "company", "id")
    return operations.cancel(runtime.ports().ledger, company, message_id, reason=_text(call.req, "reason"), who=call.who)


def _confirm(call: Call) -> Any:
    company, message_id = _need(call.req, "company", "id")
    ports = runtime.ports()
    note = _text(call.req, "note")
    return operations.confirm_applied(
        ports.ledger, ports.gate, ports.lineage, ports.requeue, company, message_id, note, who=call.who, alone=_alone(call.req)
    )


def _alone(req: func.HttpRequest) -> bool:
    """?alone=true: the named MES message only, not the merged F&O message it travelled in (the default)."""
    raw = (req.params.get("alone") or "").strip().lower()
    if raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise operations.OperationError("alone must be true or false")


def _release_gap(call: Call) -> Any:
    company, order, missing = _need(call.req, "company", "order", "missing")
    number = operations.whole_number(missing, operations.MISSING_REFUSAL)
    ports = runtime.ports()
    progress, resubmitted = operations.release_gap(
        ports.gate, ports.ledger, ports.requeue, company, order, number, _text(call.req, "reason"), call.who
    )
    return operations.gap_released_reply(progress, resubmitted)


def _lineage(call: Call) -> Any:
    company, item, batch = _need(call.req, "company", "item", "batch")
    depth = operations.whole_number(call.req.params.get("depth", "5"), operations.DEPTH_REFUSAL)
    return operations.lineage(runtime.ports().lineage, company, item, batch, call.req.params.get("direction", "upstream"), depth)


def _health(_: Call) -> Any:
    report = health_of(runtime.ports())
    if not report["ok"]:
        raise _Unhealthy(report)
    return report


def _overview(_: Call) -> Any:
    ports = runtime.ports()
    return operations.overview(ports.ledger, ports.dead_letters, answered_429_here=ports.fo.stats.throttled)


ACTIONS: dict[str, Action] = {
    "message": Action("GET", _trace),
    "message-detail": Action("GET", _detail),
    "order": Action("GET", _order),
    "order-ladder": Action("GET", _ladder),
    "parked": Action("GET", _parked),
    "dead-lettered": Action("GET", _dead_lettered),
    "dead-lettered/resubmit": Action("POST", _resubmit_dead_lettered, 202),
    "resubmit": Action("POST", _resubmit, 202),
    "cancel": Action("POST", _cancel),
    "confirm": Action("POST", _confirm),
    "release-gap": Action("POST", _release_gap),
    "lineage": Action("GET", _lineage),
    "health": Action("GET", _health),
    "overview": Action("GET", _overview),
}
