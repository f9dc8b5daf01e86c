"""The function app's HTTP functions on a local port, with a stand-in for App Service authentication.

`make console` and the browser tests use it. Each request is routed to the HTTP function whose
route template matches, as the Functions host does:

- `authLevel: function` routes need the local function key (`?code=` or `x-functions-key`);
- in front of everything sits what App Service authentication does in Azure: it removes any
  `X-MS-CLIENT-PRINCIPAL*` header the caller sent, and for a signed-in session (a dev login at
  `/.auth/login/dev`, the stand-in for Entra ID) writes the principal itself; unauthenticated
  browsers asking for the console are redirected to the login page. `WEBSITE_AUTH_ENABLED` is
  set while it runs, as the platform sets it when authentication is on.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import azure.functions as func

from devtools.local_host.host import HttpFunction, discover
from shared.ops.principal import OPERATOR_ROLE, encode_principal

SESSION_COOKIE = "AppServiceAuthSession"
_PRINCIPAL_HEADERS = (
    "x-ms-client-principal",
    "x-ms-client-principal-name",
    "x-ms-client-principal-id",
    "x-ms-client-principal-idp",
)


@dataclass(frozen=True)
class Route:
    function: HttpFunction
    pattern: re.Pattern[str]


def compile_route(template: str) -> re.Pattern[str]:
    """A Functions route template as a regex: `{name}` is one segment, `{*name}` the rest, which may be
    empty (`console/{*path}` answers `console` too, as the host's routing does)."""
    pattern = ""
    for piece in re.split(r"(\{[^}]+\})", template.strip("/")):
        if piece.startswith("{*"):
            pattern = pattern.removesuffix("/") + f"(?:/(?P<{piece[2:-1]}>.*))?"
        elif piece.startswith("{"):
            pattern += f"(?P<{piece[1:-1]}>[^/]+)"
        else:
            pattern += re.escape(piece)
    return re.compile(f"^{pattern}$")


@dataclass
class DevLogin:
    name: str
    operator: bool


class ConsoleServer:
    def __init__(self, app: func.FunctionApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.routes = [Route(f, compile_route(f.route)) for f in discover(app).http]
        self.function_key = secrets.token_urlsafe(24)
        self.sessions: dict[str, DevLogin] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._saved_env: str | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def console_url(self) -> str:
        return f"{self.url}/api/console/"

    def start(self) -> ConsoleServer:
        self._saved_env = os.environ.get("WEBSITE_AUTH_ENABLED")
        os.environ["WEBSITE_AUTH_ENABLED"] = "true"
        self._thread = threading.Thread(target=self._server.serve_forever, name="console-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._saved_env is None:
            os.environ.pop("WEBSITE_AUTH_ENABLED", None)
        else:
            os.environ["WEBSITE_AUTH_ENABLED"] = self._saved_env

    def __enter__(self) -> ConsoleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- App Service authentication, locally ---------------------------------------------------------
    def login(self, name: str, operator: bool = True) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.sessions[token] = DevLogin(name, operator)
        return token

    def session_of(self, cookie_header: str) -> DevLogin | None:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(cookie_header or "")
        except Exception:
            return None
        morsel = cookie.get(SESSION_COOKIE)
        with self._lock:
            return self.sessions.get(morsel.value) if morsel is not None else None

    def match(self, path: str, method: str) -> tuple[Route, dict[str, str]] | None:
        relative = path.removeprefix("/api/")
        for route in self.routes:
            found = route.pattern.match(relative)
            if found and method in route.function.methods:
                return route, {k: v or "" for k, v in found.groupdict().items()}
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the console polls
                return

            def do_GET(self) -> None:
                server.handle(self, "GET")

            def do_POST(self) -> None:
                server.handle(self, "POST")

        return Handler

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        if parts.path in ("/", "/api/console"):
            return self._send(request, 302, b"", {"Location": "/api/console/"})
        if parts.path == "/.auth/login/dev":
            return self._login(request, method, parts.query, body)
        if parts.path == "/.auth/logout":
            return self._send(
                request, 302, b"", {"Location": "/.auth/login/dev", "Set-Cookie": f"{SESSION_COOKIE}=; Max-Age=0; Path=/"}
            )
        # What App Service authentication does before the app sees a request.
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in _PRINCIPAL_HEADERS}
        session = self.session_of(request.headers.get("Cookie", ""))
        if session is not None:
            roles = [OPERATOR_ROLE] if session.operator else []
            headers["x-ms-client-principal"] = encode_principal(session.name, roles, provider="dev")
            headers["x-ms-client-principal-name"] = session.name
        elif parts.path.startswith("/api/console/"):
            target = quote(parts.path + (f"?{parts.query}" if parts.query else ""), safe="")
            return self._send(request, 302, b"", {"Location": f"/.auth/login/dev?post_login_redirect_uri={target}"})
        found = self.match(parts.path, method)
        if found is None:
            return self._send(request, 404, b"no function answers this route", {"Content-Type": "text/plain"})
        route, route_params = found
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if route.function.auth_level != "anonymous":
            key = params.pop("code", None) or headers.get("x-functions-key")
            if not key or not secrets.compare_digest(key, self.function_key):
                return self._send(request, 401, b"", {})
        http_request = func.HttpRequest(
            method=method, url=f"{self.url}{request.path}", headers=headers, params=params, route_params=route_params, body=body
        )
        try:
            response = route.function.call(http_request)
        except Exception as exc:  # the Functions host answers 500 for an unhandled exception
            return self._send(request, 500, f"{type(exc).__name__}: {exc}".encode(), {"Content-Type": "text/plain"})
        out = dict(response.headers)
        if "content-type" not in {k.lower() for k in out} and response.mimetype:
            out["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
        return self._send(request, response.status_code, response.get_body(), out)

    def _login(self, request: BaseHTTPRequestHandler, method: str, query: str, body: bytes) -> None:
        redirect = parse_qs(query).get("post_login_redirect_uri", ["/api/console/"])[-1]
        if not redirect.startswith("/") or redirect.startswith("//"):
            redirect = "/api/console/"  # only this site: no open redirect
        if method == "POST":
            form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}
            name = form.get("name", "").strip()[:100]
            if name:
                token = self.login(name, operator=form.get("operator") == "yes")
                cookie = f"{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                return self._send(request, 302, b"", {"Location": redirect, "Set-Cookie": cookie})
        page = _LOGIN_PAGE.format(action=html.escape(f"/.auth/login/dev?post_login_redirect_uri={quote(redirect, safe='')}"))
        return self._send(
            request,
            200,
            page.encode(),
            {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": "default-src 'none'; form-action 'self'"},
        )

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
        request.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in (local) - mes-bridge</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<main>
<h1>mes-bridge console: local sign-in</h1>
<p>This stands in for Entra ID sign-in through App Service authentication, for local runs only.</p>
<form method="post" action="{action}">
<p><label for="name">Your name</label> <input id="name" name="name" required autocomplete="username" autofocus></p>
<p><input id="operator" name="operator" type="checkbox" value="yes" checked>
<label for="operator">I have the MesBridge.Operator role</label></p>
<p><button type="submit">Sign in</button></p>
</form>
</main>
</body></html>
"""


@contextmanager
def serving(app: func.FunctionApp) -> Iterator[ConsoleServer]:
    with ConsoleServer(app) as server:
        yield server
