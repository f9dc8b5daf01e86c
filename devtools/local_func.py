"""The real Functions host on a laptop (`func start`): the pieces Core Tools needs around it.

    python -m devtools.local_func emulator-config   write devtools/local/Config.json (Service Bus emulator)
    python -m devtools.local_func settings          write local.settings.json: the F&O emulator, Azurite,
                                                    the Service Bus emulator
    python -m devtools.local_func send              one MES event onto its queue in the Service Bus emulator
    python -m devtools.local_func relay             Event Grid for the local host: fan F&O's business events
                                                    out to /runtime/webhooks/eventgrid?functionName=<each>
    python -m devtools.local_func post FILE         post the Event Grid events in FILE (a JSON array, or one
                                                    event) to the local host's webhook, like relay does

README "Running on Azure Functions Core Tools" walks through them. The Service Bus emulator's
config is generated from shared/topology.json (names) and mirrors infra/ (sessions, duplicate
detection, dead-lettering, delivery count, lock), within the emulator's documented limits; a test
keeps the committed file in step.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from devtools.mes import event
from shared.topology import INBOUND_QUEUES, MES_SUBSCRIPTION, MES_TOPIC, SERVICEBUS_CONNECTION

ROOT = Path(__file__).resolve().parents[1]
LOCAL = Path(__file__).resolve().parent / "local"
CONFIG_PATH = LOCAL / "Config.json"

#: The emulator's one namespace name and its fixed development connection string
#: (learn.microsoft.com/azure/service-bus-messaging/overview-emulator).
EMULATOR_NAMESPACE = "sbemulatorns"
EMULATOR_CONNECTION = (
    "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
)
#: The Event Grid functions of function_app (the ones infra/ subscribes to the topic).
EVENT_FUNCTIONS = ("order_released", "order_status_changed", "message_processed")

# What infra/resources.bicep sets on the queues and the subscription, where the emulator allows it.
# The emulator caps a time-to-live at PT1H, duplicate detection at PT5M and a lock at PT5M
# (Config-schema.json in github.com/Azure/azure-service-bus-emulator-installer).
_QUEUE = {
    "RequiresSession": True,
    "RequiresDuplicateDetection": True,
    "DuplicateDetectionHistoryTimeWindow": "PT5M",  # Azure: PT1H
    "MaxDeliveryCount": 10,
    "DeadLetteringOnMessageExpiration": True,
    "LockDuration": "PT5M",
    "DefaultMessageTimeToLive": "PT1H",  # Azure: P14D
    "ForwardTo": "",
    "ForwardDeadLetteredMessagesTo": "",
}
_SUBSCRIPTION = {
    "RequiresSession": True,
    "MaxDeliveryCount": 10,
    "DeadLetteringOnMessageExpiration": True,
    "LockDuration": "PT1M",
    "DefaultMessageTimeToLive": "PT1H",
    "ForwardTo": "",
    "ForwardDeadLetteredMessagesTo": "",
}


def emulator_config() -> dict[str, Any]:
    """The Service Bus emulator's Config.json: the inbound session queues, the MES topic and its subscription."""
    return {
        "UserConfig": {
            "Namespaces": [
                {
                    "Name": EMULATOR_NAMESPACE,
                    "Queues": [{"Name": name, "Properties": dict(_QUEUE)} for name in INBOUND_QUEUES.values()],
                    "Topics": [
                        {
                            "Name": MES_TOPIC,
                            "Properties": {
                                "RequiresDuplicateDetection": True,
                                "DuplicateDetectionHistoryTimeWindow": "PT5M",
                                "DefaultMessageTimeToLive": "PT1H",
                            },
                            "Subscriptions": [{"Name": MES_SUBSCRIPTION, "Properties": dict(_SUBSCRIPTION)}],
                        }
                    ],
                }
            ],
            "Logging": {"Type": "File"},
        }
    }


def render_config() -> str:
    return json.dumps(emulator_config(), indent=2) + "\n"


def local_settings(sample: Mapping[str, Any], emulator_values: Mapping[str, str]) -> dict[str, Any]:
    """local.settings.json for `func start`: the sample, pointed at the F&O emulator, Azurite and the
    Service Bus emulator. Identity-based Service Bus settings are emptied: the emulator takes the
    connection string only, and an empty setting counts as unset."""
    values = dict(sample["Values"])
    values.update(emulator_values)
    values.update(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true",
            "TABLES_ENDPOINT": "",
            SERVICEBUS_CONNECTION: EMULATOR_CONNECTION,
            f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace": "",
            f"{SERVICEBUS_CONNECTION}__credential": "",
            f"{SERVICEBUS_CONNECTION}__clientId": "",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
            "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "false",
            # host.json keeps "Function" at Warning for Azure's bill; on a laptop the console should
            # show the bridge's INFO outcome lines (an app setting overrides host.json:
            # learn.microsoft.com/azure/azure-functions/functions-host-json#override-hostjson-values).
            "AzureFunctionsJobHost__logging__logLevel__Function": "Information",
        }
    )
    return {"IsEncrypted": False, "Values": values}


def mes_event(flow: str, order: str, company: str, now: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """(queue, document) of one MES event as the MES sends it (schemas/mes/), stamped a minute ago."""
    if flow not in INBOUND_QUEUES:
        raise SystemExit(f"unknown flow {flow!r}: one of {', '.join(INBOUND_QUEUES)}")
    bodies: dict[str, dict[str, Any]] = {"production_started": {}, "production_ended": {}}
    if flow not in bodies:
        raise SystemExit(f"send builds production_started and production_ended; for {flow} use devtools.mes")
    occurred = (now or datetime.now(UTC)) - timedelta(minutes=1)
    document = event(flow, order, bodies[flow], company=company, occurred_at=occurred)
    document["message_id"] = f"local-{flow}-{order}-{occurred:%Y%m%dT%H%M%S}"
    return INBOUND_QUEUES[flow], document


def send(connection: str, flow: str, order: str, company: str) -> str:
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    queue, document = mes_event(flow, order, company)
    message = ServiceBusMessage(
        json.dumps(document), message_id=document["message_id"], session_id=order, content_type="application/json"
    )
    with ServiceBusClient.from_connection_string(connection) as client, client.get_queue_sender(queue) as sender:
        sender.send_messages(message)
    return f"sent {flow} {document['message_id']} for order {order} to {queue}"


# --- Event Grid for the local host ----------------------------------------------------------------


def webhook_requests(
    events: list[dict[str, Any]], host: str, functions: Iterable[str] = EVENT_FUNCTIONS
) -> list[tuple[str, dict[str, str], bytes]]:
    """What Event Grid's three subscriptions would deliver: the events to each function's local webhook.

    Core Tools takes Event Grid events at /runtime/webhooks/eventgrid?functionName=<name> with the
    header aeg-event-type: Notification (learn.microsoft.com/azure/azure-functions/functions-bindings-event-grid-trigger,
    "Local testing")."""
    body = json.dumps(events).encode()
    headers = {"aeg-event-type": "Notification", "Content-Type": "application/json"}
    return [
        (f"{host.rstrip('/')}/runtime/webhooks/eventgrid?functionName={quote(name)}", dict(headers), body) for name in functions
    ]


def relay_server(port: int, deliver: Callable[[list[dict[str, Any]]], None]) -> ThreadingHTTPServer:
    """An HTTP endpoint for the F&O emulator's --event-sink-url that hands each batch to `deliver`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            events = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"[]")
            try:
                deliver(events if isinstance(events, list) else [events])
            except requests.RequestException as exc:
                self.send_response(502)  # the emulator retries, as Event Grid would
                self.end_headers()
                self.wfile.write(str(exc).encode())
                return
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def forward_to(
    host: str,
    session: requests.Session | None = None,
    say: Callable[[str], None] = print,
    functions: Iterable[str] = EVENT_FUNCTIONS,
) -> Callable[..., None]:
    http = session or requests.Session()
    names = tuple(functions)

    def deliver(events: list[dict[str, Any]]) -> None:
        for url, headers, body in webhook_requests(events, host, names):
            response = http.post(url, data=body, headers=headers, timeout=30)
            say(f"{response.status_code} {url.rsplit('=', 1)[-1]}: {', '.join(str(e.get('eventType')) for e in events)}")
            response.raise_for_status()

    return deliver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local_func", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("emulator-config", help="write devtools/local/Config.json from shared/topology.json")
    settings = commands.add_parser("settings", help="write local.settings.json for func start")
    settings.add_argument("--emulator-settings", type=Path, default=Path("emulator.settings.json"))
    settings.add_argument("--out", type=Path, default=Path("local.settings.json"))
    sending = commands.add_parser("send", help="send one MES event to the Service Bus emulator")
    sending.add_argument("--flow", default="production_started")
    sending.add_argument("--order", default="P000001", help="a released order of the F&O emulator (P000001..)")
    sending.add_argument("--company", default="USMF")
    sending.add_argument("--connection", default=EMULATOR_CONNECTION)
    posting = commands.add_parser("post", help="post Event Grid events from a file to the local host")
    posting.add_argument("file", type=Path, help="a JSON array of Event Grid events, or one event")
    posting.add_argument("--function", action="append", choices=EVENT_FUNCTIONS, help="only these (default: all three)")
    posting.add_argument("--host", default="http://localhost:7071")
    relay = commands.add_parser("relay", help="fan the F&O emulator's business events out to the local host")
    relay.add_argument("--port", type=int, default=7072)
    relay.add_argument("--host", default="http://localhost:7071", help="the func start host")
    args = parser.parse_args(argv)

    if args.command == "emulator-config":
        CONFIG_PATH.write_text(render_config())
        print(f"wrote {CONFIG_PATH.relative_to(ROOT)}")
    elif args.command == "settings":
        if not args.emulator_settings.is_file():
            raise SystemExit(f"{args.emulator_settings} not found: start `make emulator` first, it writes it")
        sample = json.loads((ROOT / "local.settings.sample.json").read_text())
        emulator_values = json.loads(args.emulator_settings.read_text())["Values"]
        args.out.write_text(json.dumps(local_settings(sample, emulator_values), indent=2) + "\n")
        args.out.chmod(0o600)
        print(f"wrote {args.out}: F&O emulator, Azurite, Service Bus emulator")
    elif args.command == "send":
        print(send(args.connection, args.flow, args.order, args.company))
    elif args.command == "post":
        events = json.loads(args.file.read_text())
        forward_to(args.host, functions=args.function or EVENT_FUNCTIONS)(events if isinstance(events, list) else [events])
    else:
        server = relay_server(args.port, forward_to(args.host))
        print(
            f"Event Grid relay on http://127.0.0.1:{args.port}/ -> {args.host}/runtime/webhooks/eventgrid ({', '.join(EVENT_FUNCTIONS)})"
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            thread.join()
        except KeyboardInterrupt:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
