"""Operations over HTTP: trace a message or an order, list, resubmit and cancel parked messages (one,
or many with a dry run first), confirm an in-doubt one, release an order-gate gap, ask the lineage,
check health, and the console's overview.

Each operation is one entry of `ACTIONS`, reached two ways: `/api/ops/<name>` with a function key
(scripts), and `/api/console-api/<name>` for the console, where the caller must be a signed-in
operator (functions/console.py). The operator named in the audit trail is the principal App
Service authentication validated, never a header the caller can set. `python -m shared.ops.cli` does
the same from a shell; all of them call shared/ops/operations.py.
"""

import azure.functions as func

bp = func.Blueprint()


# --- /api/ops/*: function keys ---------------------------------------------------------------------


def _ops(name: str, req: func.HttpRequest) -> func.HttpResponse:
    # The operations and their adapters load on the first request, not when the host indexes functions.
    from functions.operations_actions import ACTIONS, answer, key_holder

    return answer(ACTIONS[name], req, key_holder(req))


@bp.route(route="ops/message", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def trace_message(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("message", req)


@bp.route(route="ops/message-detail", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def message_detail(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("message-detail", req)


@bp.route(route="ops/order", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def trace_order(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("order", req)


@bp.route(route="ops/order-ladder", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def order_ladder(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("order-ladder", req)


@bp.route(route="ops/parked", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_parked(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("parked", req)


@bp.route(route="ops/dead-lettered", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_dead_lettered(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("dead-lettered", req)


@bp.route(route="ops/dead-lettered/resubmit", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def resubmit_dead_lettered(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("dead-lettered/resubmit", req)


@bp.route(route="ops/resubmit", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def resubmit(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("resubmit", req)


@bp.route(route="ops/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def cancel(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("cancel", req)


@bp.route(route="ops/confirm", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def confirm_applied(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("confirm", req)


@bp.route(route="ops/release-gap", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def release_gap(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("release-gap", req)


@bp.route(route="ops/lineage", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def lineage(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("lineage", req)


@bp.route(route="ops/health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("health", req)


@bp.route(route="ops/overview", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def overview(req: func.HttpRequest) -> func.HttpResponse:
    return _ops("overview", req)
