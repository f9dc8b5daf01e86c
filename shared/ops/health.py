"""Health: settings, token, F&O reachability, Table Storage, Service Bus, each with a verdict."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.errors import BridgeError
from shared.runtime import Ports


def _check(name: str, probe: Callable[[], str]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        detail = probe()
        ok = True
    except BridgeError as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc.message}"
    except Exception as exc:
        ok, detail = False, f"{type(exc).__name__}: {str(exc)[:300]}"
    return {"name": name, "ok": ok, "detail": detail, "ms": round((time.monotonic() - started) * 1000, 1)}


def health(ports: Ports) -> dict[str, Any]:
    s = ports.settings
    company = s.fo_default_company

    def settings() -> str:
        return f"{s.fo_base_url}, auth {s.fo_auth_mode.value}, companies {', '.join(sorted(s.companies))}"

    def token() -> str:
        ports.fo.token_check()
        return "a token for " + s.fo_scope

    def fo() -> str:
        rows = list(ports.fo.query("OperationalSites", company=company, top=1))
        return f"OData answers ({len(rows)} site read in {company})"

    def tables() -> str:
        ports.ledger.get(company, "health-check")
        return "ledger table reachable"

    def service_bus() -> str:
        probe = getattr(ports.requeue, "check", None)
        return str(probe()) if probe else "in-process broker"

    checks = [
        _check("settings", settings),
        _check("token", token),
        _check("fo", fo),
        _check("table_storage", tables),
        _check("service_bus", service_bus),
    ]
    return {"ok": all(c["ok"] for c in checks), "checks": checks}
