"""Operations over HTTP (function keys required): trace a message or an order, list and resubmit
parked messages, cancel, release an order-gate gap, ask the lineage, check health.
`python -m shared.cli` does the same from a shell; both call shared/operations.py."""

import json
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared import operations, runtime
from shared.health import health as health_of

bp = func.Blueprint()


def _answer(action: Callable[[], Any], *, status: int = 200) -> func.HttpResponse:
    try:
        body = action()
    except operations.OperationError as exc:
        return func.HttpResponse(
            json.dumps({"error": str(exc)}), status_code=404 if "no message" in str(exc) else 400, mimetype="application/json"
        )
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def _need(req: func.HttpRequest, *names: str) -> list[str]:
    missing = [n for n in names if not req.params.get(n)]
    if missing:
        raise operations.OperationError(f"query parameter(s) {', '.join(missing)} required")
    return [req.params[n] for n in names]


def _who(req: func.HttpRequest) -> str:
    return req.headers.get("x-ms-client-principal-name") or req.headers.get("x-operator") or "operator"


def _field(req: func.HttpRequest, name: str) -> str:
    """A text field of the JSON body ("" when absent or not JSON)."""
    try:
        body = req.get_json()
    except ValueError:
        body = {}
    return str(body.get(name, "")) if isinstance(body, dict) else ""


def _reason(req: func.HttpRequest) -> str:
    return _field(req, "reason")


def _filter(values: dict[str, Any]) -> operations.ParkedFilter:
    def number(name: str, kind: type) -> Any:
        raw = values.get(name)
        try:
            return kind(raw) if raw not in (None, "") else None
        except ValueError:
            raise operations.OperationError(f"{name} must be a number") from None

    return operations.ParkedFilter(
        company=values.get("company") or None,
        flow=values.get("flow") or None,
        reason=values.get("reason") or None,
        production_order=values.get("order") or None,
        older_than_s=number("older_than_s", float),
        max_attempts=number("max_attempts", int),
    )


@bp.route(route="ops/message", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def trace_message(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: operations.trace(runtime.ports().ledger, *_need(req, "company", "id")))


@bp.route(route="ops/order", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def trace_order(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: operations.order_story(runtime.ports().ledger, *_need(req, "company", "order")))


@bp.route(route="ops/parked", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_parked(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: operations.parked(runtime.ports().ledger, _filter(dict(req.params))))


@bp.route(route="ops/dead-lettered", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_dead_lettered(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: operations.dead_lettered(runtime.ports().dead_letters, req.params.get("flow") or None))


@bp.route(route="ops/dead-lettered/resubmit", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def resubmit_dead_lettered(req: func.HttpRequest) -> func.HttpResponse:
    def act() -> Any:
        flow, sequence = _need(req, "flow", "sequence")
        if not sequence.isdigit():
            raise operations.OperationError("sequence must be the message's sequence number")
        return operations.resubmit_dead_lettered(runtime.ports().dead_letters, flow, int(sequence))

    return _answer(act, status=202)


@bp.route(route="ops/resubmit", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def resubmit(req: func.HttpRequest) -> func.HttpResponse:
    """One message (?company=&id=, body = an edited payload, optional) or every parked message a JSON filter selects."""
    ports = runtime.ports()
    if req.params.get("id"):
        company, message_id = _need(req, "company", "id")
        edited = req.get_body() or None
        return _answer(
            lambda: operations.describe(
                operations.resubmit(ports.ledger, ports.requeue, company, message_id, payload=edited, who=_who(req)).entry
            ),
            status=202,
        )
    try:
        criteria = req.get_json() if req.get_body() else {}
    except ValueError:
        return _answer(lambda: (_ for _ in ()).throw(operations.OperationError("the filter must be JSON")))
    return _answer(
        lambda: operations.resubmit_matching(ports.ledger, ports.requeue, _filter(criteria), who=_who(req)), status=202
    )


@bp.route(route="ops/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def cancel(req: func.HttpRequest) -> func.HttpResponse:
    def act() -> Any:
        company, message_id = _need(req, "company", "id")
        return operations.cancel(runtime.ports().ledger, company, message_id, reason=_reason(req), who=_who(req))

    return _answer(act)


@bp.route(route="ops/confirm", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def confirm_applied(req: func.HttpRequest) -> func.HttpResponse:
    """An in-doubt message found in F&O: record it as forwarded (body: {"note": "..."})."""

    def act() -> Any:
        company, message_id = _need(req, "company", "id")
        ports = runtime.ports()
        note = _field(req, "note")
        return operations.confirm_applied(ports.ledger, ports.gate, ports.lineage, company, message_id, note, who=_who(req))

    return _answer(act)


@bp.route(route="ops/release-gap", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def release_gap(req: func.HttpRequest) -> func.HttpResponse:
    def act() -> Any:
        company, order, missing = _need(req, "company", "order", "missing")
        if not missing.isdigit():
            raise operations.OperationError("missing must be a sequence number")
        ports = runtime.ports()
        progress, resubmitted = operations.release_gap(
            ports.gate, ports.ledger, ports.requeue, company, order, int(missing), _reason(req), _who(req)
        )
        return {
            "watermark": progress.watermark,
            "skipped": list(progress.skipped),
            "resubmitted": [r.entry.message_id for r in resubmitted],
        }

    return _answer(act)


@bp.route(route="ops/lineage", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def lineage(req: func.HttpRequest) -> func.HttpResponse:
    def act() -> Any:
        company, item, batch = _need(req, "company", "item", "batch")
        depth = req.params.get("depth", "5")
        if not depth.isdigit():
            raise operations.OperationError("depth must be a whole number")
        return operations.lineage(
            runtime.ports().lineage, company, item, batch, req.params.get("direction", "upstream"), int(depth)
        )

    return _answer(act)


@bp.route(route="ops/health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:  # noqa: ARG001 - the trigger binds `req` by name
    report = health_of(runtime.ports())
    return func.HttpResponse(json.dumps(report), status_code=200 if report["ok"] else 503, mimetype="application/json")
