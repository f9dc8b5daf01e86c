"""The operator console, served by the function app itself: its static pages (console/), the MES
schemas the page validates an edit against (from the same models as schemas/mes/, which a test
keeps in step), and its data API over the operations.

Anonymous at the Functions host, because App Service authentication (Entra ID) stands in front
and a browser has no function key: every data call is authorized here, from the principal the
platform validated, and must carry the operator app role. Without App Service authentication
(or the local stand-in, devtools/console_server.py) the data API refuses every call.
"""

import json
import mimetypes
from pathlib import Path

import azure.functions as func

from shared.ops.principal import OPERATOR_ROLE, operator_of, platform_auth_enabled
from shared.topology import INBOUND_QUEUES

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "console"

#: Nothing external, no inline script or style, no framing: the console talks to its own origin only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

bp = func.Blueprint()


def _refuse(status: int, message: str) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps({"error": message}), status_code=status, mimetype="application/json", headers=SECURITY_HEADERS
    )


def _asset(path: str) -> Path | None:
    """A file under console/, never a path that climbs out of it."""
    candidate = (STATIC / (path or "index.html")).resolve()
    if not candidate.is_relative_to(STATIC) or not candidate.is_file():
        return None
    return candidate


def _schema(path: str) -> bytes | None:
    """`schemas/<type>.schema.json`: the JSON schema the pipeline validates that MES event with."""
    from shared.inbound.messages import MES_EVENTS  # the message models load on first use, not at a cold start

    kind = path.removeprefix("schemas/").removesuffix(".schema.json")
    model = MES_EVENTS.get(kind)
    return json.dumps(model.model_json_schema()).encode() if model is not None else None


@bp.route(route="console/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    path = req.route_params.get("path") or ""
    if path.startswith("schemas/"):
        schema = _schema(path)
        if schema is None:
            return func.HttpResponse("no such MES event type", status_code=404, headers=SECURITY_HEADERS)
        return func.HttpResponse(schema, headers={**SECURITY_HEADERS, "Content-Type": "application/schema+json"})
    found = _asset(path)
    if found is None:
        # The console is one page: its own paths (#/message/...) are routed in the browser.
        found = STATIC / "index.html" if "." not in path.rsplit("/", 1)[-1] else None
    if found is None:
        return func.HttpResponse("not found", status_code=404, headers=SECURITY_HEADERS)
    kind = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    return func.HttpResponse(
        found.read_bytes(), status_code=200, headers={**SECURITY_HEADERS, "Content-Type": kind, "Cache-Control": "no-cache"}
    )


@bp.route(route="console-api/{*action}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def console_api(req: func.HttpRequest) -> func.HttpResponse:
    if not platform_auth_enabled():
        return _refuse(401, "the console needs App Service authentication (locally: make console)")
    operator = operator_of(dict(req.headers))
    if operator is None:
        return _refuse(401, "sign in first")
    name = req.route_params.get("action") or ""
    if name == "me":
        return func.HttpResponse(
            json.dumps(
                {"name": operator.name, "may_operate": operator.may_operate, "role": OPERATOR_ROLE, "flows": list(INBOUND_QUEUES)}
            ),
            mimetype="application/json",
            headers=SECURITY_HEADERS,
        )
    if not operator.may_operate:
        return _refuse(403, f"{operator.name} does not have the {OPERATOR_ROLE} app role")
    from functions.operations_actions import ACTIONS, answer  # loads on first use, as in functions/operations_http.py

    action = ACTIONS.get(name)
    if action is None:
        return _refuse(404, f"no operation {name!r}")
    if req.method.upper() != action.method:
        return _refuse(405, f"{name} takes {action.method}")
    if action.method == "POST" and req.headers.get("x-requested-with") != "mes-bridge-console":
        # A cross-site form cannot set this header: a forged POST from another page is refused.
        return _refuse(403, "console actions come from the console")
    response = answer(action, req, operator.name)
    return func.HttpResponse(
        response.get_body(),
        status_code=response.status_code,
        headers={**SECURITY_HEADERS, "Content-Type": "application/json", "Cache-Control": "no-store"},
    )
