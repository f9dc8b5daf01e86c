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
    assert vault["enableRbacAuthorization"] is True and vault["enableSoftDelete"] is True


def test_key_vault_survives_azd_down_and_up(tree, main):
    vault = props(tree, "vault")
    # Purge protection is irreversible (the property takes no false): on only when production asks.
    assert vault["enablePurgeProtection"] == conditional("keyVaultPurgeProtection", True, None)
    assert main["parameters"]["keyVaultPurgeProtection"]["default"] is False
    # After azd down, the soft-deleted vault keeps its name: the next azd up recovers it.
    assert vault["createMode"] == conditional("keyVaultRecover", "recover", "default")
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["keyVaultRecover"]["value"] == "${KEY_VAULT_RECOVER=false}"


def test_the_secret_expiry_is_a_parameter_not_the_deployment_time(tree):
    text = (INFRA / "resources.bicep").read_text()
    assert "utcNow(" not in text, "an expiry computed from the deployment time moves with every deployment"
    secret = props(tree, "foSecret")
    assert secret["attributes"]["exp"] == {
        "function": {"type": "date_time_to_epoch", "parameters": {"date_time": "foClientSecretExpiresOn"}}
    }
    assert tree["parameters"]["foClientSecretExpiresOn"].get("default") is None  # the user must say it


def test_app_settings_wait_for_the_key_vault_role(tree):
    assert "secretReader" in resource(tree, "settings")["dependsOn"]
    assert "keyVaultSecretsUser" in json.dumps(props(tree, "secretReader")["roleDefinitionId"])


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


SERVICE_BUS_DATA_OWNER = "090c5cfd-751d-490a-894a-3ce6f1109419"


def test_role_assignments_are_least_privilege(tree):
    roles = tree["variables"]["roles"]["value"]
    allowed = {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
        SERVICE_BUS_DATA_OWNER,
        "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
        "3913510d-42f4-4e42-8a64-420c390055eb",
        "4633458b-17de-408a-b874-0445c86b69e6",
    }
    assert set(roles.values()) <= allowed  # no Owner or Contributor
    assignments = [n for n, r in tree["resources"].items() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert len(assignments) >= 8
    for name in assignments:
        assert resource(tree, name).get("scope"), f"{name} must be scoped to a resource, not the subscription"
        assert props(tree, name)["principalType"] == "ServicePrincipal"


def test_service_bus_data_owner_only_on_each_inbound_queue_for_the_scale_controller(tree):
    # The scale controller reads the queue's message count (Manage); Data Owner is the trigger
    # documentation's role for it, and it may reach nothing but the trigger's own queue.
    owners = [
        name
        for name, r in tree["resources"].items()
        if r["type"] == "Microsoft.Authorization/roleAssignments" and "serviceBusDataOwner" in json.dumps(resource(tree, name))
    ]
    assert owners == ["queueOwners"]
    loop = tree["resources"]["queueOwners"]["config"]["loop_type"]
    assert loop["detail"]["array_name"] == "inboundFlows"
    assert "queues" in json.dumps(resource(tree, "queueOwners")["scope"])


def metric_of(tree: Any, name: str) -> Any:
    return props(tree, name)["criteria"]["allOf"][0]


def test_alerts_cover_dead_letters_parked_messages_failures_auth_throttling_backlog_and_expiry(tree):
    assert metric_of(tree, "deadLettered")["metricName"] == "DeadletteredMessages"
    names = {alert["name"] for alert in tree["variables"]["logAlerts"]["value"]}
    assert names == {"parked", "failures", "fo-auth", "throttling"}
    auth = next(a for a in tree["variables"]["logAlerts"]["value"] if a["name"] == "fo-auth")
    assert 'customDimensions.outcome == "auth"' in auth["query"]  # what the pipeline logs on AuthError
    # Event Grid dead letters: the topic's DeadLetteredCount metric.
    assert "events" in json.dumps(props(tree, "eventsDeadLettered")["scopes"])
    assert metric_of(tree, "eventsDeadLettered")["metricName"] == "DeadLetteredCount"
    # Backlog per queue: age of what the bridge takes (split by flow), and a queue that never empties.
    age = metric_of(tree, "backlogAge")
    assert "customDimensions.queue_age_s" in age["query"] and age["dimensions"][0]["name"] == "flow"
    draining = metric_of(tree, "queueNotDraining")
    assert draining["metricName"] == "ActiveMessages" and draining["timeAggregation"] == "Minimum"
    assert draining["dimensions"][0]["name"] == "EntityName"
    # The secret's expiry: a fixed date, from 30 days before.
    expiry = metric_of(tree, "secretExpiry")["query"]
    assert "${foClientSecretExpiresOn}" in expiry and "30d" in expiry


def conditional(condition: str, true_value: Any, false_value: Any) -> Any:
    return {
        "operator": {
            "type": "conditional",
            "operands": {"condition": condition, "true_value": true_value, "false_value": false_value},
        }
    }


# --- a small evaluator of the Bicep expressions the budget arithmetic uses --------------------


_OPERATORS = {
    "add": lambda a, b: a + b,
    "substract": lambda a, b: a - b,  # pycep's spelling
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: int(a / b),  # Bicep divides integers with truncation
    "modulo": lambda a, b: a % b,
    "greater_than": lambda a, b: a > b,
    "equals": lambda a, b: a == b,
}


def evaluate(expr: Any, scope: dict[str, Any], tree: Any) -> Any:
    if isinstance(expr, bool | int | float | list) or expr is None:
        return expr
    if isinstance(expr, str):
        if expr in scope:
            return scope[expr]
        if expr in tree["variables"]:
            return evaluate(tree["variables"][expr]["value"], scope, tree)
        if "${" in expr:
            return re.sub(r"\$\{(\w+)\}", lambda m: str(evaluate(m.group(1), scope, tree)), expr)
        if expr.split(".")[0] in tree["resources"] or expr in tree["parameters"]:
            raise KeyError(expr)  # a resource property or a parameter without a value: known only at deployment
        return expr  # a string literal
    if "operator" in expr:
        op = expr["operator"]
        if op["type"] == "conditional":
            parts = op["operands"]
            branch = "true_value" if evaluate(parts["condition"], scope, tree) else "false_value"
            return evaluate(parts[branch], scope, tree)
        return _OPERATORS[op["type"]](*(evaluate(v, scope, tree) for v in op["operands"].values()))
    function = expr["function"]
    args = [evaluate(v, scope, tree) for v in function["parameters"].values()]
    if function["type"] == "min":
        return min(args)
    if function["type"] == "max":
        return max(args)
    if function["type"] == "string":
        return str(args[0])
    if function["type"] == "pad_left":
        return str(args[0]).rjust(args[1], args[2])
    raise KeyError(function["type"])


@pytest.mark.parametrize("budget", [1, 7, 20, 39, 40, 41, 100, 999, 1000, 5000])
def test_the_fo_budget_sets_the_instance_count_and_each_instance_s_share(tree, budget):
    scope = {"foBudgetPerSecond": budget, "foBudgetSharing": "static"}
    instances = evaluate("maximumInstanceCount", scope, tree)
    assert 40 <= instances <= 1000  # Flex Consumption's range
    assert props(tree, "app")["functionAppConfig"]["scaleAndConcurrency"]["maximumInstanceCount"] == "maximumInstanceCount"
    settings = tree["variables"]["appSettings"]["value"]
    share = float(evaluate(settings["FO_INSTANCE_BUDGET_RPS"], scope, tree))
    concurrency = int(evaluate(settings["FO_MAX_CONCURRENCY"], scope, tree))
    # Every instance at its share never exceeds the budget, and rounding loses under 0.1 %.
    assert share * instances <= budget
    assert share * instances >= budget - instances * 0.001
    assert 1 <= concurrency <= 16 and concurrency >= min(16, share)
    env = {**BASE_ENV, "FO_INSTANCE_BUDGET_RPS": f"{share:.3f}", "FO_MAX_CONCURRENCY": str(concurrency)}
    assert load_settings(env).fo_instance_budget_rps == pytest.approx(share)


def test_the_default_budget_is_f_and_o_s_documented_user_limit(main, tree):
    # 6,000 requests per user per 5 minutes (docs/reference/fo-contracts.md §5, service protection): 20 per second.
    assert main["parameters"]["foBudgetPerSecond"]["default"] == 6000 // 300
    scope = {"foBudgetPerSecond": 20, "foBudgetSharing": "static"}
    assert evaluate("maximumInstanceCount", scope, tree) == 40
    assert evaluate(tree["variables"]["appSettings"]["value"]["FO_INSTANCE_BUDGET_RPS"], scope, tree) == "0.500"


@pytest.mark.parametrize("budget", [1, 20, 5000])
def test_adaptive_sharing_is_the_default_and_caps_each_instance_at_the_whole_budget(main, tree, budget):
    # A lone busy instance may use the whole budget; many learn their shares from 429s (the pacer).
    assert main["parameters"]["foBudgetSharing"]["default"] == "adaptive"
    assert tree["parameters"]["foBudgetSharing"]["default"] == "adaptive"
    scope = {"foBudgetPerSecond": budget, "foBudgetSharing": "adaptive"}
    settings = tree["variables"]["appSettings"]["value"]
    values = {
        name: evaluate(settings[name], scope, tree) for name in ("FO_BUDGET_RPS", "FO_INSTANCE_BUDGET_RPS", "FO_MAX_CONCURRENCY")
    }
    assert values == {"FO_BUDGET_RPS": str(budget), "FO_INSTANCE_BUDGET_RPS": "", "FO_MAX_CONCURRENCY": "16"}
    loaded = load_settings({**BASE_ENV, **values})
    assert loaded.fo_budget_rps == budget and loaded.fo_instance_budget_rps is None


@pytest.mark.parametrize(("ready", "expected"), [(0, []), (1, list(INBOUND_QUEUES)), (2, list(INBOUND_QUEUES))])
def test_always_ready_instances_are_per_inbound_function_and_off_by_default(tree, main, ready, expected):
    assert main["parameters"]["alwaysReadyInbound"]["default"] == 0
    assert evaluate("alwaysReadyFunctions", {"alwaysReadyInbound": ready}, tree) == expected
    entry = props(tree, "app")["functionAppConfig"]["scaleAndConcurrency"]["alwaysReady"]
    assert entry["loop_type"]["detail"]["array_name"] == "alwaysReadyFunctions"
    assert entry["config"] == {"name": "function:${fn}", "instanceCount": "alwaysReadyInbound"}
    # 'function:<name>' must name the Service Bus functions the app declares.
    assert evaluate("inboundFunctions", {}, tree) == [q.name for q in discover(function_app.app).queues]


BASE_ENV = {
    "FO_BASE_URL": "https://contoso.operations.dynamics.com",
    "FO_TENANT_ID": "tenant",
    "FO_CLIENT_ID": "client",
    "FO_CLIENT_SECRET": "resolved-by-the-platform",
    "TABLES_ENDPOINT": "https://a.table.core.windows.net",
}


def _placeholder(value: Any, name: str, parameters: dict[str, Any], tree: Any = None) -> str:
    if tree is not None and (not isinstance(value, str) or value in tree["variables"]):
        defaults = {p: v.get("default") for p, v in tree["parameters"].items() if "default" in v}
        try:
            return str(evaluate(value, defaults, tree))
        except KeyError:
            pass
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
    env = {name: _placeholder(value, name, main["parameters"], tree) for name, value in settings.items()}
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


def test_sampling_is_configured_where_open_telemetry_mode_applies_it(tree, main):
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    # samplingSettings belong to the classic Application Insights SDK: in OpenTelemetry mode they do nothing.
    assert "applicationInsights" not in host["logging"]
    settings = tree["variables"]["appSettings"]["value"]
    assert settings["OTEL_TRACES_SAMPLER"] == "microsoft.fixed_percentage"  # azure-monitor-opentelemetry's sampler
    assert settings["OTEL_TRACES_SAMPLER_ARG"] == "traceSamplingRatio"
    assert 0 < float(main["parameters"]["traceSamplingRatio"]["default"]) <= 1
    # One dependency span per HTTP call (the requests instrumentation's), not azure-core's copies of it.
    assert settings["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] == "azure_sdk"
    # The bridge's outcome lines are exported by the worker itself (not filtered by host.json), so the
    # host's own per-invocation lines can stay off without losing any of them.
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    assert host["logging"]["logLevel"]["Function"] == "Warning"


def test_an_unset_secret_expiry_stops_the_deployment_before_anything_is_created(main):
    # azd passes "" for an unset FO_CLIENT_SECRET_EXPIRES_ON; dateTimeToEpoch("") would fail mid-deployment.
    decorators = {d["type"]: d.get("argument") for d in main["parameters"]["foClientSecretExpiresOn"]["decorators"]}
    assert decorators["min_length"] >= len("2027-11-01")
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["foClientSecretExpiresOn"]["value"] == "${FO_CLIENT_SECRET_EXPIRES_ON}"


def test_the_console_signs_in_with_entra_and_only_key_holding_paths_skip_it(tree):
    from functions.operations_actions import ACTIONS

    sign_in = props(tree, "consoleSignIn")
    validation = sign_in["globalValidation"]
    assert validation["requireAuthentication"] is True and validation["unauthenticatedClientAction"] == "RedirectToLoginPage"
    # Left out of the sign-in, each by name: the operations API (function keys) and Event Grid's webhook (its system key).
    assert tree["variables"]["operationsRoutes"]["value"] == list(ACTIONS)
    excluded = validation["excludedPaths"]["function"]["parameters"]
    assert excluded == {"arg_1": ["/runtime/webhooks/eventgrid"], "arg_2": "operationsPaths"}
    text = (INFRA / "resources.bicep").read_text()
    assert "var operationsPaths = [for route in operationsRoutes: '/api/ops/${route}']" in text
    assert "/api/console" not in text.split("resource consoleSignIn")[1].split("resource workbook")[0]
    assert sign_in["identityProviders"]["azureActiveDirectory"]["registration"]["clientId"] == "consoleClientId"


def _logged_dimensions() -> set[str]:
    """The customDimensions an outcome line carries (what shared/ops/telemetry.py logs)."""
    import logging

    from shared.ops.telemetry import log_outcome

    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    class Result:
        outcome, company, message_id, reason, detail = "forwarded", "USMF", "m-1", "", ""
        order, correlation_id, fo_ms = "P1", "c-1", 12.0

    log = logging.getLogger("test.dimensions")
    capture = Capture()
    log.addHandler(capture)
    log.setLevel(logging.INFO)
    try:
        # As the inbound pipeline logs each delivery: with its time in Table Storage.
        log_outcome(log, "material_consumed", Result(), duration_ms=1.0, delivery_count=1, storage_ms=0.5)
    finally:
        log.removeHandler(capture)
    standard = set(vars(logging.makeLogRecord({})))
    return set(vars(records[-1])) - standard


def test_the_workbook_shows_the_overview_from_application_insights_and_every_alert_links_it(tree):
    workbook = resource(tree, "workbook")
    assert workbook["kind"] == "shared" and props(tree, "workbook")["category"] == "workbook"
    data = json.loads((INFRA / "workbook.json").read_text())
    assert data["version"] == "Notebook/1.0"
    items = {item["name"]: item["content"] for item in data["items"]}
    for name in ("events-per-flow", "fo-latency", "time-split", "throttled", "parked-by-reason", "in-doubt", "dead-letters"):
        assert name in items, name
    assert "percentile(ms, 95)" in items["fo-latency"]["query"]
    assert items["dead-letters"]["metrics"][0]["metric"].endswith("DeadletteredMessages")
    # Every dimension a query reads is one the bridge logs (no drift from shared/ops/telemetry.py).
    logged = _logged_dimensions()
    for item in data["items"]:
        for used in re.findall(r"customDimensions\.(\w+)", item["content"].get("query", "")):
            assert used in logged, f"{item['name']} reads customDimensions.{used}, which no outcome line carries"
    text = (INFRA / "resources.bicep").read_text()
    assert "loadTextContent('workbook.json')" in text
    for name, entry in tree["resources"].items():
        if entry["type"] == "Microsoft.Insights/metricAlerts":
            assert all(a["webHookProperties"]["workbook"] == "workbookUrl" for a in props(tree, name)["actions"]), name
        if entry["type"] == "Microsoft.Insights/scheduledQueryRules":
            assert props(tree, name)["actions"]["customProperties"]["workbook"] == "workbookUrl", name
