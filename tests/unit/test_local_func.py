"""The local recipe for `func start`: the Service Bus emulator's config (from shared/topology.json,
in step with infra/), local settings the bridge accepts, MES events, and Event Grid's webhook calls."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from pycep import BicepParser

import function_app
from devtools.local_func import (
    CONFIG_PATH,
    EMULATOR_CONNECTION,
    EVENT_FUNCTIONS,
    emulator_config,
    forward_to,
    local_settings,
    main,
    mes_event,
    relay_server,
    render_config,
    webhook_requests,
)
from devtools.local_host.host import discover
from shared.inbound.messages import MES_EVENTS
from shared.settings import load_settings
from shared.topology import INBOUND_QUEUES, MES_SUBSCRIPTION, MES_TOPIC

ROOT = Path(__file__).resolve().parents[2]


def minutes(duration: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    assert match, duration
    hours, mins, secs = (int(g or 0) for g in match.groups())
    return hours * 60 + mins + secs / 60


def test_the_committed_config_is_generated_from_the_topology():
    assert CONFIG_PATH.read_text() == render_config(), "run: python -m devtools.local_func emulator-config"


def test_the_emulator_gets_every_queue_the_app_triggers_on_with_sessions_and_the_topic():
    [namespace] = emulator_config()["UserConfig"]["Namespaces"]
    queues = {q["Name"]: q["Properties"] for q in namespace["Queues"]}
    assert set(queues) == set(INBOUND_QUEUES.values())
    for function in discover(function_app.app).queues:
        assert queues[function.queue]["RequiresSession"] is function.sessions is True
    [topic] = namespace["Topics"]
    assert topic["Name"] == MES_TOPIC and topic["Properties"]["RequiresDuplicateDetection"] is True
    [subscription] = topic["Subscriptions"]
    assert subscription["Name"] == MES_SUBSCRIPTION and subscription["Properties"]["RequiresSession"] is True


def test_the_emulator_queues_behave_like_the_azure_queues_within_the_emulator_limits():
    tree = BicepParser().parse(file_path=ROOT / "infra" / "resources.bicep")
    azure = tree["resources"]["queues"]["config"]["config"]["properties"]
    [namespace] = emulator_config()["UserConfig"]["Namespaces"]
    assert namespace["Name"] == "sbemulatorns"  # the only name the emulator accepts
    assert len(namespace["Queues"]) + len(namespace["Topics"]) <= 50
    for queue in namespace["Queues"]:
        p = queue["Properties"]
        assert p["RequiresSession"] is azure["requiresSession"]
        assert p["RequiresDuplicateDetection"] is azure["requiresDuplicateDetection"]
        assert p["DeadLetteringOnMessageExpiration"] is azure["deadLetteringOnMessageExpiration"]
        assert p["MaxDeliveryCount"] == azure["maxDeliveryCount"] <= 10
        assert p["LockDuration"] == azure["lockDuration"] and minutes(p["LockDuration"]) <= 5
        # Where Azure's value is above the emulator's cap, the cap.
        assert minutes(p["DefaultMessageTimeToLive"]) == 60 and minutes(p["DuplicateDetectionHistoryTimeWindow"]) == 5
    subscription = namespace["Topics"][0]["Subscriptions"][0]["Properties"]
    assert 1 <= minutes(subscription["LockDuration"]) <= 5
    assert subscription["MaxDeliveryCount"] == tree["resources"]["mesSubscription"]["config"]["properties"]["maxDeliveryCount"]
    assert emulator_config()["UserConfig"]["Logging"]["Type"] in ("File", "Console")


def test_the_compose_file_starts_azurite_and_the_emulator_with_this_config():
    compose = (ROOT / "devtools" / "local" / "docker-compose.yml").read_text()
    assert '"./Config.json:/ServiceBus_Emulator/ConfigFiles/Config.json"' in compose
    assert "mcr.microsoft.com/azure-messaging/servicebus-emulator" in compose
    assert "mcr.microsoft.com/azure-storage/azurite" in compose
    for port in ("5672", "10000", "10001", "10002"):
        assert f'"{port}:{port}"' in compose
    assert "--tableHost 0.0.0.0" in compose  # the host needs blob and queue, the ledger needs table


def test_local_settings_point_the_bridge_at_the_emulators_and_load(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    emulator = {
        "FO_BASE_URL": "https://localhost:8443",
        "FO_TENANT_ID": "t",
        "FO_CLIENT_ID": "c",
        "FO_CLIENT_SECRET": "emulator-secret",
        "FO_AUTHORITY_HOST": "https://localhost:8443",
        "FO_CA_BUNDLE": str(ca),
    }
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())
    values = local_settings(sample, emulator)["Values"]
    assert values["ServiceBusConnection"] == EMULATOR_CONNECTION and "UseDevelopmentEmulator=true" in EMULATOR_CONNECTION
    assert values["AzureWebJobsStorage"] == values["TABLES_CONNECTION_STRING"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    # The console shows the outcome lines although host.json keeps "Function" at Warning for Azure.
    host = json.loads((ROOT / "host.json").read_text())
    assert host["logging"]["logLevel"]["Function"] == "Warning"
    assert values["AzureFunctionsJobHost__logging__logLevel__Function"] == "Information"
    settings = load_settings(values)
    assert settings.fo_base_url == "https://localhost:8443" and settings.fo_ca_bundle == ca
    assert settings.servicebus_namespace == ""  # the identity settings are empty, so unset
    assert settings.servicebus_connection_string is not None


@pytest.mark.parametrize("flow", ["production_started", "production_ended"])
def test_the_mes_event_is_what_the_mes_sends(flow):
    queue, document = mes_event(flow, "P000001", "USMF")
    assert queue == INBOUND_QUEUES[flow]
    MES_EVENTS[flow].model_validate(document)  # the published MES contract
    assert document["production_order"] == "P000001" and document["message_id"].startswith(f"local-{flow}-P000001-")
    with pytest.raises(SystemExit, match="unknown flow"):
        mes_event("nothing", "P1", "USMF")


def test_event_grid_webhook_calls_for_each_function():
    events = [{"id": "e1", "eventType": "BusinessEvent", "data": "{}"}]
    calls = webhook_requests(events, "http://localhost:7071/")
    assert [url for url, _, _ in calls] == [
        f"http://localhost:7071/runtime/webhooks/eventgrid?functionName={name}" for name in EVENT_FUNCTIONS
    ]
    assert all(headers["aeg-event-type"] == "Notification" for _, headers, _ in calls)
    assert all(json.loads(body) == events for _, _, body in calls)
    assert set(EVENT_FUNCTIONS) == set(discover(function_app.app).event_grid)


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers["aeg-event-type"], body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def test_the_relay_fans_the_emulator_s_events_out_to_the_local_host():
    _Recorder.seen.clear()
    host = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    said: list[str] = []
    relay = relay_server(0, forward_to(f"http://127.0.0.1:{host.server_port}", say=said.append))
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        events = [{"id": "e1", "eventType": "BusinessEvent", "data": "{}"}]
        response = requests.post(f"http://127.0.0.1:{relay.server_port}/", json=events, timeout=10)
        assert response.status_code == 200
        assert [(path.split("=")[-1], kind, body) for path, kind, body in _Recorder.seen] == [
            (name, "Notification", events) for name in EVENT_FUNCTIONS
        ]
        assert len(said) == 3 and said[0].startswith("202 order_released")
    finally:
        relay.shutdown()
        host.shutdown()


def test_post_sends_a_file_of_events_to_the_chosen_functions(tmp_path):
    host = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    _Recorder.seen.clear()
    event_file = tmp_path / "released.json"
    released = {"id": "e2", "eventType": "ProductionOrderReleasedBusinessEvent", "data": "{}"}
    event_file.write_text(json.dumps(released))
    try:
        main(["post", str(event_file), "--function", "order_released", "--host", f"http://127.0.0.1:{host.server_port}"])
    finally:
        host.shutdown()
    assert [(path.split("=")[-1], kind, body) for path, kind, body in _Recorder.seen] == [
        ("order_released", "Notification", [released])
    ]
