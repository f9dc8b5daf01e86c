"""`make smoke URL=https://<app>.azurewebsites.net`: after `azd up`, is the deployed bridge alive end to end?

1. GET /api/ops/health with the function key: settings, an F&O token, an OData read, Table
   Storage and Service Bus, each with its verdict.
2. One MES event (production_started for --order) onto its queue, sent with your Entra identity
   (DefaultAzureCredential: `az login`; you need Azure Service Bus Data Sender on that queue).
3. GET /api/ops/message until the ledger shows it Processed: forwarded to F&O, and F&O's message
   processor's business event came back. Parked or Failed ends the run with the reason.

Run from the deploying machine; never deployed. Exit code 0 = through to F&O and back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import requests

from devtools.local_func import mes_event

KEY_HELP = "az functionapp keys list -g <resource group> -n <app> --query functionKeys.default -o tsv"
#: States after which the message will not move by itself (shared/store/ledger.py State).
DONE = "Processed"
STOPPED = ("Parked", "Failed", "Cancelled")


class Http(Protocol):
    """What the smoke test needs of requests.Session."""

    def get(self, url: str, *, headers: dict[str, str], timeout: float) -> requests.Response: ...


@dataclass(frozen=True)
class Target:
    url: str  # https://<app>.azurewebsites.net, no trailing slash, no /api
    key: str
    namespace: str  # <name>.servicebus.windows.net
    flow: str
    order: str
    company: str
    timeout_s: float
    poll_s: float


def _url(value: str) -> str:
    parts = urlsplit(value.strip())
    local = parts.hostname in ("localhost", "127.0.0.1")
    if parts.scheme not in ("https", "http") or not parts.hostname or (parts.scheme == "http" and not local):
        raise argparse.ArgumentTypeError(
            f"{value!r}: give the app's https:// URL, e.g. https://func-mesbridge-abc.azurewebsites.net"
        )
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"{value!r}: the app's base URL, without query or fragment")
    path = parts.path.rstrip("/").removesuffix("/api")
    return f"{parts.scheme}://{parts.netloc}{path}"


def _namespace(value: str) -> str:
    value = value.strip().removeprefix("sb://").removeprefix("https://").rstrip("/")
    return value if "." in value else f"{value}.servicebus.windows.net"


def azd_value(name: str) -> str:
    try:
        done = subprocess.run(["azd", "env", "get-value", name], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make smoke URL=...", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", type=_url, required=True, help="the Function App's URL (azd: the app's default host name)")
    parser.add_argument("--key", default="", help=f"a function key (or MESBRIDGE_FUNCTION_KEY); {KEY_HELP}")
    parser.add_argument("--namespace", default="", help="Service Bus namespace (default: azd env SERVICEBUS_NAMESPACE)")
    parser.add_argument("--flow", default="production_started", choices=["production_started", "production_ended"])
    parser.add_argument("--order", required=True, help="a released production order in F&O you may start")
    parser.add_argument("--company", default="USMF")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for Processed")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between ledger reads")
    return parser


def parse(argv: Sequence[str], environ: dict[str, str] | None = None, azd: Callable[[str], str] = azd_value) -> Target:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    env = os.environ if environ is None else environ
    key = args.key or env.get("MESBRIDGE_FUNCTION_KEY", "")
    if not key:
        parser.error(f"a function key is needed: --key, KEY=... or MESBRIDGE_FUNCTION_KEY ({KEY_HELP})")
    namespace = args.namespace or azd("SERVICEBUS_NAMESPACE")
    if not namespace:
        parser.error("no Service Bus namespace: --namespace, or run from the azd environment (SERVICEBUS_NAMESPACE)")
    if args.timeout <= 0 or args.poll <= 0:
        parser.error("--timeout and --poll must be positive")
    return Target(args.url, key, _namespace(namespace), args.flow, args.order, args.company, args.timeout, args.poll)


# --- requests -----------------------------------------------------------------------------------


def health_request(target: Target) -> tuple[str, dict[str, str]]:
    return f"{target.url}/api/ops/health", {"x-functions-key": target.key}


def trace_request(target: Target, message_id: str) -> tuple[str, dict[str, str]]:
    query = urlencode({"company": target.company, "id": message_id})
    return f"{target.url}/api/ops/message?{query}", {"x-functions-key": target.key}


def send_with_identity(target: Target, queue: str, document: dict[str, Any]) -> None:
    from azure.identity import DefaultAzureCredential
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    message = ServiceBusMessage(
        json.dumps(document), message_id=document["message_id"], session_id=target.order, content_type="application/json"
    )
    with (
        ServiceBusClient(target.namespace, DefaultAzureCredential()) as client,
        client.get_queue_sender(queue) as sender,
    ):
        sender.send_messages(message)


def run(
    target: Target,
    http: Http,
    send: Callable[[Target, str, dict[str, Any]], None] = send_with_identity,
    say: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    url, headers = health_request(target)
    response = http.get(url, headers=headers, timeout=60)
    if response.status_code in (401, 403):
        say(f"FAIL health: {response.status_code}, the function key was refused ({KEY_HELP})")
        return 1
    report = _json(response)
    for check in report.get("checks", []):
        say(f"  {'ok  ' if check.get('ok') else 'FAIL'} {check.get('name')}: {check.get('detail')}")
    if response.status_code != 200 or not report.get("ok"):
        say(f"FAIL health: HTTP {response.status_code}; fix the failing check first")
        return 1
    say("health: ok")

    queue, document = mes_event(target.flow, target.order, target.company)
    send(target, queue, document)
    message_id = document["message_id"]
    say(f"sent {target.flow} {message_id} for order {target.order} to {queue}")

    deadline = clock() + target.timeout_s
    state = ""
    while clock() < deadline:
        url, headers = trace_request(target, message_id)
        response = http.get(url, headers=headers, timeout=60)
        if response.status_code == 200:
            entry = _json(response)
            if entry.get("state") != state:
                state = str(entry.get("state"))
                say(f"  {state}" + (f" ({entry.get('reason')}: {entry.get('detail')})" if entry.get("reason") else ""))
            if state == DONE:
                say(f"PASS: {message_id} went through to F&O and F&O's processed event came back")
                return 0
            if state in STOPPED:
                say(f"FAIL: {message_id} is {state}: {entry.get('reason')} {entry.get('detail')} (see README, Operations)")
                return 1
        elif response.status_code != 404:  # 404: not in the ledger yet
            say(f"FAIL: reading the ledger answered HTTP {response.status_code}: {response.text[:300]}")
            return 1
        sleep(target.poll_s)
    if state == "Forwarded":
        say(
            f"FAIL: {message_id} reached F&O but no processed event came back in {target.timeout_s:.0f} s: is the "
            "message processor batch job running, and the 'Message processor message processed' business event active?"
        )
    else:
        say(f"FAIL: {message_id} is {state or 'not in the ledger'} after {target.timeout_s:.0f} s: is the app running?")
    return 1


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def main(argv: Sequence[str] | None = None) -> int:
    target = parse(sys.argv[1:] if argv is None else argv)
    with requests.Session() as http:
        return run(target, http)


if __name__ == "__main__":
    sys.exit(main())
