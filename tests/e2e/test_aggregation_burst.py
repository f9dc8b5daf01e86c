"""Per-order aggregation in a burst (issue 20): an order's messages of one flow come on one Service
Bus session, one at a time, so nothing of them waits in the ledger while the first is being sent.
When F&O's budget would hold that first one anyway, it steps aside and its copy takes the others along."""

from __future__ import annotations

import time

import pytest

from devtools import mes
from shared.ops import operations
from shared.store.ledger import State
from tests.conftest import small_plant
from tests.e2e.conftest import FAST, failures_other_than_storage_hiccups
from tests.e2e.test_aggregation import consumption, contents, send, settle

pytestmark = pytest.mark.e2e


@pytest.fixture
def emulator_config():
    from devtools.fo_emulator import EmulatorConfig

    return EmulatorConfig(plant=small_plant(orders=20))


@pytest.fixture
def stack_env():
    # F&O's budget for this instance: one call every 4 s, so that the call after the start waits for it.
    return {
        **FAST,
        "GATE_MAX_WAIT_S": "0.3",
        "GATE_GAP_TIMEOUT_S": "600",
        "FO_INSTANCE_BUDGET_RPS": "0.25",
        "FO_CALL_DEADLINE_S": "20",
    }


@pytest.fixture
def running(stack):
    with stack.host:
        yield stack


def wait_forwarded(stack, message_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = stack.ports.ledger.get("USMF", message_id)
        if entry is not None and entry.state in (State.FORWARDED, State.PROCESSED):
            return
        time.sleep(0.02)
    raise AssertionError(f"{message_id} was never forwarded")


def test_a_burst_on_one_session_while_f_and_os_budget_is_spent_goes_as_one_message(running):
    stack = running
    order = "P000007"
    send(stack, mes.event("production_started", order, {}, message_id=f"{order}-start", sequence=1))
    wait_forwarded(stack, f"{order}-start")
    # The start took the budget's slot: the consumptions come all at once on their session, in MES order.
    burst = [consumption(order, n, f"RM-000{n}", 0.5 * n) for n in range(2, 7)]
    for document in burst:
        send(stack, document)
    settle(stack)
    assert not failures_other_than_storage_hiccups(stack.host)

    picking = [c for c in contents(stack, order) if "PickingListLines" in c]
    assert len(picking) == 1, f"five consumptions in {len(picking)} F&O messages"
    assert [line["ItemNumber"] for line in picking[0]["PickingListLines"]] == [f"RM-000{n}" for n in range(2, 7)]
    ids = [d["message_id"] for d in burst]
    for message_id in ids:
        story = operations.trace(stack.ports.ledger, "USMF", message_id)
        assert story["state"] in ("Forwarded", "Processed"), story
        assert story["fo_message"]["head"] == ids[0] and story["fo_message"]["members"] == ids
    # The head's story says why it waited: F&O's budget, not an earlier message.
    head = stack.ports.ledger.get("USMF", ids[0])
    assert head is not None
    assert any("budget" in str(step.get("detail", "")) for step in head.history), head.history
    consumed = stack.emulator.app.order_ledgers[("usmf", order)].consumed
    assert sum(consumed.values()) == pytest.approx(sum(0.5 * n for n in range(2, 7)))
