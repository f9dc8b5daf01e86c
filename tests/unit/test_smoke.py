"""make smoke: its argument handling, the requests it builds, and how it reads the ledger."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.smoke import Target, health_request, parse, run, trace_request
from shared.inbound.messages import MES_EVENTS
from shared.topology import INBOUND_QUEUES

ROOT = Path(__file__).resolve().parents[2]
APP = "https://func-mesbridge-abc.azurewebsites.net"


def target(**changes: Any) -> Target:
    base = parse(["--url", APP, "--order", "P000042", "--key", "k3y"], environ={}, azd=lambda _: "sb-mesbridge-abc")
    return Target(**{**base.__dict__, **changes})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (APP, APP),
        (APP + "/", APP),
        (APP + "/api/", APP),
        ("http://localhost:7071", "http://localhost:7071"),
    ],
)
def test_the_url_is_normalised(url, expected):
    assert parse(["--url", url, "--order", "P1", "--key", "k"], environ={}, azd=lambda _: "ns").url == expected


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--url", "", "--order", "P1", "--key", "k"], "https:// URL"),
        (["--url", "http://func.azurewebsites.net", "--order", "P1", "--key", "k"], "https:// URL"),
        (["--url", APP + "?code=x", "--order", "P1", "--key", "k"], "without query"),
        (["--url", APP, "--key", "k"], "--order"),
        (["--url", APP, "--order", "P1"], "function key"),
        (["--url", APP, "--order", "P1", "--key", "k", "--timeout", "0"], "positive"),
        (["--url", APP, "--order", "P1", "--key", "k", "--flow", "quality_result"], "invalid choice"),
    ],
)
def test_wrong_arguments_are_refused_with_a_reason(argv, complaint, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse(argv, environ={}, azd=lambda _: "ns")
    assert stopped.value.code == 2
    assert complaint in capsys.readouterr().err


def test_key_and_namespace_come_from_the_environment_and_azd():
    got = parse(
        ["--url", APP, "--order", "P1"],
        environ={"MESBRIDGE_FUNCTION_KEY": "from-env"},
        azd=lambda n: {"SERVICEBUS_NAMESPACE": "sb-x"}[n],
    )
    assert got.key == "from-env" and got.namespace == "sb-x.servicebus.windows.net"
    explicit = parse(
        ["--url", APP, "--order", "P1", "--key", "k", "--namespace", "sb://other.servicebus.windows.net/"], environ={}
    )
    assert explicit.namespace == "other.servicebus.windows.net"
    with pytest.raises(SystemExit):
        parse(["--url", APP, "--order", "P1", "--key", "k"], environ={}, azd=lambda _: "")


def test_requests_carry_the_function_key_and_encode_the_query():
    t = target(company="US MF")
    assert health_request(t) == (f"{APP}/api/ops/health", {"x-functions-key": "k3y"})
    url, headers = trace_request(t, "local-production_started-P000042-1&x")
    assert url == f"{APP}/api/ops/message?company=US+MF&id=local-production_started-P000042-1%26x"
    assert headers == {"x-functions-key": "k3y"}


class FakeHttp:
    """The deployed app's answers, in order."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, *, headers: dict[str, str], timeout: float) -> requests.Response:
        self.asked.append((url, headers))
        status, body = self.answers.pop(0)
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        return response


HEALTHY = (200, {"ok": True, "checks": [{"name": "token", "ok": True, "detail": "a token"}]})


def entry(state: str, **more: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"state": state, **more}


def smoke(answers: list[tuple[int, Any]], **changes: Any) -> tuple[int, list[str], list[tuple[str, dict[str, Any]]], FakeHttp]:
    http = FakeHttp(answers)
    said: list[str] = []
    sent: list[tuple[str, dict[str, Any]]] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    code = run(
        target(**changes), http, send=lambda _t, q, d: sent.append((q, d)), say=said.append, sleep=sleep, clock=lambda: now[0]
    )
    return code, said, sent, http


def test_through_to_f_and_o_and_back():
    code, said, sent, http = smoke(
        [HEALTHY, (404, {"error": "no message"}), entry("Forwarding"), entry("Forwarded"), entry("Processed")]
    )
    assert code == 0 and said[-1].startswith("PASS")
    [(queue, document)] = sent
    assert queue == INBOUND_QUEUES["production_started"]
    MES_EVENTS["production_started"].model_validate(document)
    assert document["production_order"] == "P000042"
    assert all(url.endswith("id=" + document["message_id"]) for url, _ in http.asked[1:])


def test_a_parked_message_fails_with_its_reason():
    code, said, _, _ = smoke([HEALTHY, entry("Parked", reason="rejected", detail="Production order P000042 is not released")])
    assert code == 1 and "rejected" in said[-1] and "not released" in said[-1]


def test_an_unhealthy_app_sends_nothing():
    code, said, sent, _ = smoke([(503, {"ok": False, "checks": [{"name": "token", "ok": False, "detail": "AuthError: 401"}]})])
    assert code == 1 and not sent
    assert any("FAIL token: AuthError: 401" in line for line in said)
    code, said, sent, _ = smoke([(401, {})])
    assert code == 1 and not sent and "function key was refused" in said[-1]


def test_no_processed_event_in_time_names_the_likely_cause():
    code, said, _, _ = smoke([HEALTHY] + [entry("Forwarded")] * 3, timeout_s=10.0, poll_s=5.0)
    assert code == 1 and "message processor" in said[-1]


def test_make_smoke_passes_url_order_and_key():
    done = subprocess.run(
        ["make", "-n", "smoke", "URL=https://x.azurewebsites.net", "ORDER=P1", "KEY=k"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert '-m devtools.smoke --url "https://x.azurewebsites.net" --order "P1" --key "k"' in done.stdout
