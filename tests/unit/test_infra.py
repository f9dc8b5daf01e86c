"""infra/ parsed (pycep) and checked: the properties the landscape promises, and no drift from
the settings model, the topology file or the functions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

import function_app
from devtools.local_host.host import discover
from shared.settings import Settings, load_settings, setting_name
from shared.topology import INBOUND_QUEUES, MES_SUBSCRIPTION, MES_TOPIC

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


@pytest.fixture(scope="module")
def main() -> Any:
    return BicepParser().parse(file_path=INFRA / "main.bicep")


@pytest.fixture(scope="module")
def tree() -> Any:
    return BicepParser().parse(file_path=INFRA / "resources.bicep")


def resource(tree: Any, name: str) -> Any:
    config = tree["resources"][name]["config"]
    return config["config"] if "loop_type" in config else config


def props(tree: Any, name: str) -> Any:
    return resource(tree, name)["properties"]


def test_every_bicep_file_parses_and_uses_no_registry_module():
    for path in INFRA.glob("*.bicep"):
        BicepParser().parse(file_path=path)
        assert "br/public:" not in path.read_text() and "br:" not in path.read_text()


def test_queues_are_the_topology_flows_with_sessions_duplicate_detection_and_dead_lettering(tree):
    flows = tree["variables"]["inboundFlows"]["value"]
    assert flows == list(INBOUND_QUEUES)  # Bicep reads each name from shared/topology.json
    assert "loadJsonContent('../shared/topology.json')" in (INFRA / "resources.bicep").read_text()
    queue = props(tree, "queues")
    assert queue["requiresSession"] is True
    assert queue["requiresDuplicateDetection"] is True
    assert queue["deadLetteringOnMessageExpiration"] is True
    assert queue["maxDeliveryCount"] == 10
    lock = int(re.fullmatch(r"PT(\d+)M", queue["lockDuration"]).group(1)) * 60  # type: ignore[union-attr]
    defaults = Settings.model_fields
    assert lock > defaults["fo_call_deadline_s"].default, "a message lock must outlast one F&O call with its retries"


def test_mes_topic_drops_duplicates_and_its_subscription_has_sessions(tree):
    assert tree["variables"]["topology"]["value"] is not None
    assert props(tree, "mesTopic")["requiresDuplicateDetection"] is True
    subscription = props(tree, "mesSubscription")
    assert subscription["requiresSession"] is True and subscription["deadLetteringOnMessageExpiration"] is True
    assert MES_TOPIC and MES_SUBSCRIPTION


def test_storage_and_service_bus_accept_entra_only(tree):
    storage = props(tree, "storage")
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert props(tree, "bus")["disableLocalAuth"] is True
    assert props(tree, "insights")["DisableLocalAuth"] is True
    vault = props(tree, "vault")
    assert vault["enableRbacAuthorization"] is True and vault["enablePurgeProtection"] is True


def test_function_app_is_flex_consumption_python_with_one_user_assigned_identity(tree):
    assert resource(tree, "plan")["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    app = resource(tree, "app")
    assert app["kind"] == "functionapp,linux"
    assert app["identity"]["type"] == "UserAssigned"
    config = app["properties"]["functionAppConfig"]
    assert config["runtime"]["name"] == "python" and config["runtime"]["version"] in ("3.11", "3.12")
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert app["properties"]["httpsOnly"] is True


def test_event_grid_subscriptions_reach_every_event_grid_function_with_retries_and_dead_letters(tree):
    declared = set(discover(function_app.app).event_grid)
    assert set(tree["variables"]["eventFunctions"]["value"]) == declared
    subscription = props(tree, "eventSubscriptionsOfFunctions")
    assert subscription["destination"]["endpointType"] == "AzureFunction"
    assert subscription["retryPolicy"] == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}
    assert subscription["deadLetterWithResourceIdentity"]["identity"]["type"] == "SystemAssigned"
    assert subscription["deadLetterWithResourceIdentity"]["deadLetterDestination"]["endpointType"] == "StorageBlob"


def test_role_assignments_are_least_privilege(tree):
    roles = tree["variables"]["roles"]["value"]
    allowed = {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
        "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
        "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
        "3913510d-42f4-4e42-8a64-420c390055eb",
        "4633458b-17de-408a-b874-0445c86b69e6",
    }
    assert set(roles.values()) <= allowed  # no Owner, Contributor or Data Owner on Service Bus
    assignments = [n for n, r in tree["resources"].items() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert len(assignments) >= 9
    for name in assignments:
        assert resource(tree, name).get("scope"), f"{name} must be scoped to a resource, not the subscription"
        assert props(tree, name)["principalType"] == "ServicePrincipal"


def test_alerts_cover_dead_letters_parked_messages_failures_and_throttling(tree):
    assert props(tree, "deadLettered")["criteria"]["allOf"][0]["metricName"] == "DeadletteredMessages"
    names = {alert["name"] for alert in tree["variables"]["logAlerts"]["value"]}
    assert names == {"parked", "failures", "throttling"}


def _placeholder(value: Any, name: str, parameters: dict[str, Any]) -> str:
    if isinstance(value, str) and value in parameters:  # a parameter reference: use the template's default
        default = parameters[value].get("default")
        return str(default) if isinstance(default, str) else _placeholder(None, name, {})
    if isinstance(value, str) and value.startswith("@Microsoft.KeyVault("):
        return "resolved-by-the-platform"  # App Service replaces the reference before the worker starts
    if isinstance(value, str):
        return value
    if name.endswith(("ServiceUri", "ENDPOINT", "FO_BASE_URL")):
        return "https://example.invalid"
    return "placeholder"


def test_the_app_settings_satisfy_the_settings_model(tree, main):
    settings = tree["variables"]["appSettings"]["value"]
    env = {name: _placeholder(value, name, main["parameters"]) for name, value in settings.items()}
    env["FO_BASE_URL"] = "https://contoso.operations.dynamics.com"
    parsed = load_settings(env)  # raises, naming the setting, if the Bicep misses a required one
    assert parsed.fo_auth_mode.value == "client_secret" and parsed.tables_endpoint
    known = {setting_name(field).lower() for field in Settings.model_fields}
    ours = [
        n for n in settings if n.startswith(("FO_", "TABLES_", "GATE_", "RETRY_", "MESSAGE_", "MAX_", "ServiceBusConnection"))
    ]
    unknown = [n for n in ours if n.lower() not in known and not n.startswith("ServiceBusConnection__credential")]
    assert not unknown, f"app settings the settings model does not read: {unknown}"
    # The secret is a Key Vault reference resolved by the platform, never a value in the app settings.
    assert str(settings["FO_CLIENT_SECRET"]).startswith("@Microsoft.KeyVault(SecretUri=")


def test_azd_files_match_the_template(main):
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = set(main["parameters"])
    assert set(parameters) <= declared
    required = {name for name, p in main["parameters"].items() if "default" not in p}
    assert required <= set(parameters), f"azd must supply {required - set(parameters)}"
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert "host: function" in azure_yaml and "language: python" in azure_yaml and "path: infra" in azure_yaml
