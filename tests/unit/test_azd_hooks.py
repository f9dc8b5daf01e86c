"""The azd hooks: Event Grid subscriptions retried with backoff, the vault recovered after azd down."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.azd_hooks import Ran, backoff, postdeploy, preprovision

ROOT = Path(__file__).resolve().parents[2]
NOT_FOUND = 'ERROR: {"code":"Endpoint validation","message":"Destination endpoint not found."}'


class FakeAzd:
    """azd and az as the hooks see them: an environment, and scripted provision answers."""

    def __init__(self, provisions: Sequence[Ran] = (), env: dict[str, str] | None = None, deleted: bool = False) -> None:
        self.env = dict(env or {})
        self.provisions = list(provisions)
        self.deleted = deleted
        self.calls: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> Ran:
        self.calls.append(list(command))
        match list(command):
            case ["azd", "env", "get-value", name]:
                return Ran(0, self.env[name] + "\n") if name in self.env else Ran(1, f"ERROR: key '{name}' not found")
            case ["azd", "env", "set", name, value]:
                self.env[name] = value
                return Ran(0, "")
            case ["azd", "provision", "--no-prompt"]:
                return self.provisions.pop(0)
            case ["az", "keyvault", "show-deleted", "--name", _, "--output", "none"]:
                return Ran(0, "") if self.deleted else Ran(3, "(DeletedVaultNotFound)")
        raise AssertionError(command)


def test_event_grid_not_seeing_the_functions_yet_is_retried_with_backoff():
    azd = FakeAzd([Ran(1, NOT_FOUND), Ran(1, NOT_FOUND), Ran(0, "SUCCESS")])
    waits: list[float] = []
    said: list[str] = []
    assert postdeploy(azd, waits.append, said.append, first_wait_s=15, max_wait_s=240) == 0
    assert waits == [15.0, 30.0]
    assert azd.env["EVENT_SUBSCRIPTIONS"] == "true"
    assert "attempt 1 of 6" in said[0] and "retrying in 15 s" in said[0]


def test_retries_give_up_with_a_clear_message_and_the_next_deploy_tries_again():
    azd = FakeAzd([Ran(1, NOT_FOUND)] * 4)
    waits: list[float] = []
    said: list[str] = []
    assert postdeploy(azd, waits.append, said.append, attempts=4, first_wait_s=15, max_wait_s=40) == 1
    assert waits == [15.0, 30.0, 40.0]  # capped at the max; no wait after the last attempt
    assert azd.env["EVENT_SUBSCRIPTIONS"] == "false"
    assert said[-1].startswith("ERROR: Event Grid still answers 'Destination endpoint not found' after 4 attempts")
    assert "azd deploy" in said[-1]


def test_any_other_failure_is_not_retried():
    azd = FakeAzd([Ran(1, "ERROR: AuthorizationFailed: the client does not have authorization")])
    waits: list[float] = []
    said: list[str] = []
    assert postdeploy(azd, waits.append, said.append) == 1
    assert waits == [] and "AuthorizationFailed" in said[-1]
    assert azd.env["EVENT_SUBSCRIPTIONS"] == "false"


def test_subscriptions_made_by_an_earlier_deploy_are_left_alone():
    azd = FakeAzd(env={"EVENT_SUBSCRIPTIONS": "true"})
    assert postdeploy(azd, lambda _: None, lambda _: None) == 0
    assert not any(call[:2] == ["azd", "provision"] for call in azd.calls)


def test_backoff_doubles_up_to_the_max():
    assert [backoff(n, 15, 240) for n in range(6)] == [15, 30, 60, 120, 240, 240]


def test_a_soft_deleted_vault_is_recovered_and_a_fresh_environment_creates_one():
    gone = FakeAzd(env={"KEY_VAULT_NAME": "kv-mesb-abc"}, deleted=True)
    said: list[str] = []
    assert preprovision(gone, said.append) == 0
    assert gone.env["KEY_VAULT_RECOVER"] == "true" and "kv-mesb-abc" in said[0]
    there = FakeAzd(env={"KEY_VAULT_NAME": "kv-mesb-abc"}, deleted=False)
    assert preprovision(there, lambda _: None) == 0 and there.env["KEY_VAULT_RECOVER"] == "false"
    fresh = FakeAzd()
    assert preprovision(fresh, lambda _: None) == 0 and fresh.env["KEY_VAULT_RECOVER"] == "false"
    assert not any(call[0] == "az" for call in fresh.calls)


def test_azure_yaml_runs_the_hooks_and_the_module_runs_real_commands(tmp_path):
    azure_yaml = (ROOT / "azure.yaml").read_text()
    hooks = azure_yaml[azure_yaml.index("\nhooks:") :]
    for name in ("preprovision", "postdeploy"):
        section = hooks[hooks.index(f"  {name}:") :]
        assert f"run: python3 -m devtools.azd_hooks {name}\n" in section.split("windows:")[0]
        assert f"run: python -m devtools.azd_hooks {name}\n" in section.split("windows:")[1]
    # A stand-in azd on PATH: the module calls the real executable and reads its answers.
    log = tmp_path / "calls"
    azd = tmp_path / "azd"
    azd.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = env ] && [ "$2" = get-value ] && exit 1\nexit 0\n')
    azd.chmod(azd.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "devtools.azd_hooks", "postdeploy"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "env get-value EVENT_SUBSCRIPTIONS",
        "env set EVENT_SUBSCRIPTIONS true",
        "provision --no-prompt",
    ]
    usage = subprocess.run([sys.executable, "-m", "devtools.azd_hooks"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
