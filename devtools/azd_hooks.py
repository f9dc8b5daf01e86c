"""azd hooks (azure.yaml), run by azd on the deploying machine; never deployed, standard library only.

preprovision: after `azd down`, a vault without purge protection is purged by `azd down --purge`,
    but a purge-protected one stays soft-deleted for 90 days under the same name, and creating it
    again fails. If the environment's vault (KEY_VAULT_NAME from the last provision) is soft-deleted,
    set KEY_VAULT_RECOVER=true so Bicep recovers it (createMode 'recover'); otherwise false.

postdeploy: the Event Grid subscriptions point at functions that exist only after the first
    deploy, and even then Event Grid may answer "Destination endpoint not found" until the host has
    indexed them (github.com/Azure/bicep/issues/11656). Provision them with EVENT_SUBSCRIPTIONS=true,
    retrying that answer with exponential backoff; any other failure stops at once. On failure the
    flag goes back to false, so the next `azd deploy` tries again, and the message says what to do.

Usage: python -m devtools.azd_hooks preprovision|postdeploy
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Ran:
    code: int
    output: str


Runner = Callable[[Sequence[str]], Ran]

#: What Event Grid answers while the function is not (yet) visible to it.
NOT_YET_THERE = ("destination endpoint not found", "endpoint validation", "attempt to validate the provided endpoint")


def run_command(command: Sequence[str]) -> Ran:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return Ran(127, f"{command[0]}: not installed")
    return Ran(done.returncode, (done.stdout or "") + (done.stderr or ""))


def env_value(run: Runner, name: str) -> str:
    got = run(["azd", "env", "get-value", name])
    return got.output.strip() if got.code == 0 else ""


def backoff(attempt: int, first_wait_s: float, max_wait_s: float) -> float:
    """Wait before retry `attempt` (0-based): doubles from the first wait up to the max."""
    return float(min(max_wait_s, first_wait_s * 2**attempt))


def postdeploy(
    run: Runner,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = print,
    *,
    attempts: int = 6,
    first_wait_s: float = 15.0,
    max_wait_s: float = 240.0,
) -> int:
    if env_value(run, "EVENT_SUBSCRIPTIONS") == "true":
        return 0  # created by an earlier deployment; `azd provision` keeps them
    run(["azd", "env", "set", "EVENT_SUBSCRIPTIONS", "true"])
    for attempt in range(attempts):
        result = run(["azd", "provision", "--no-prompt"])
        if result.code == 0:
            say("Event Grid subscriptions created for the three business-event functions.")
            return 0
        if not any(marker in result.output.lower() for marker in NOT_YET_THERE):
            return _give_up(run, say, "provisioning the Event Grid subscriptions failed:\n" + result.output.strip())
        if attempt + 1 < attempts:
            wait = backoff(attempt, first_wait_s, max_wait_s)
            say(
                f"Event Grid does not see the functions yet (attempt {attempt + 1} of {attempts}): "
                f"the host is still indexing the deployment; retrying in {wait:.0f} s."
            )
            sleep(wait)
    return _give_up(
        run,
        say,
        f"Event Grid still answers 'Destination endpoint not found' after {attempts} attempts. Check that the "
        "deployment succeeded and the app lists order_released, order_status_changed and message_processed "
        "(portal > Functions, or `az functionapp function list`), then run `azd deploy` again.",
    )


def _give_up(run: Runner, say: Callable[[str], None], message: str) -> int:
    run(["azd", "env", "set", "EVENT_SUBSCRIPTIONS", "false"])  # the next deploy tries again
    say("ERROR: " + message)
    return 1


def preprovision(run: Runner, say: Callable[[str], None] = print) -> int:
    vault = env_value(run, "KEY_VAULT_NAME")
    deleted = bool(vault) and run(["az", "keyvault", "show-deleted", "--name", vault, "--output", "none"]).code == 0
    run(["azd", "env", "set", "KEY_VAULT_RECOVER", "true" if deleted else "false"])
    if deleted:
        say(f"Key Vault {vault} was soft-deleted by an earlier azd down: this provision recovers it.")
    return 0


def main(argv: Sequence[str] = tuple(sys.argv[1:])) -> int:
    hooks = {"postdeploy": lambda: postdeploy(run_command), "preprovision": lambda: preprovision(run_command)}
    if len(argv) != 1 or argv[0] not in hooks:
        print("usage: python -m devtools.azd_hooks preprovision|postdeploy", file=sys.stderr)
        return 2
    return hooks[argv[0]]()


if __name__ == "__main__":
    sys.exit(main())
